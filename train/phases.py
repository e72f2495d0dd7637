"""From phase configs to runnable phases: each gets its data source, its objective and its held-out sets.

This is the one place that knows which objective goes with which data; the loop only sees `Phase`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from model.gpt import GPT
from train.config import PhaseConfig, RunConfig
from train.data import EmbeddedDocs, TokenStream, read_documents
from train.evaluate import eval_loss, task_accuracy
from train.objectives import OBJECTIVES
from train.tasks import ArithmeticTask, get_reward
from train.tokenizer import Tokenizer

EVAL_ROWS = 32  # validation rows per pretraining held-out set


@dataclass
class Context:
    """What building phases needs from the run."""

    cfg: RunConfig
    tok: Tokenizer
    task: ArithmeticTask
    out_dir: str

    @property
    def seq_len(self) -> int:
        return self.cfg.model.seq_len


@dataclass
class Phase:
    cfg: PhaseConfig
    start: int  # global step at which the phase begins
    source: object  # .next_step(rows, micro_rows, model) -> list[Batch]; .state_dict(); .load_state_dict()
    objective: Callable  # (model, batch) -> (loss, metrics)
    evals: dict[str, Callable[[GPT], dict]] = field(default_factory=dict)  # this phase's held-out sets

    @property
    def end(self) -> int:
        return self.start + self.cfg.steps


def make_source(p: PhaseConfig, ctx: Context, split: str):
    if p.data == "embedded":
        return EmbeddedDocs(ctx.task, ctx.tok, p.mix, ctx.cfg.seed, split, ctx.seq_len)
    return TokenStream(p.data, ctx.tok, ctx.seq_len, os.path.join(ctx.out_dir, "data"))


def build_phases(ctx: Context) -> list[Phase]:
    phases, start = [], 0
    for p in ctx.cfg.phases:
        source = make_source(p, ctx, "train")
        held_out = (make_source(p, ctx, "eval") if p.data == "embedded" else source).eval_batches(
            EVAL_ROWS, p.micro_batch_size
        )
        token_bytes = torch.tensor(ctx.tok.token_bytes() + [0] * (ctx.cfg.model.vocab_size - ctx.tok.n_vocab))
        evals = {p.name: lambda model, b=held_out: eval_loss(model, b, token_bytes)}
        phases.append(Phase(p, start, source, OBJECTIVES[p.objective](), evals))
        start += p.steps
    return phases


def task_eval(ctx: Context) -> Callable[[GPT], dict]:
    """Task accuracy on held-out problems, greedy and pass@k, through the KV-cache sampler."""
    t = ctx.cfg.task
    problems = [ctx.task.prompt("eval", i) for i in range(t.eval_problems)]
    reward = get_reward("arithmetic")
    return lambda model: task_accuracy(
        model, ctx.tok, problems, reward, max_new_tokens=t.max_new_tokens, pass_k=t.pass_k, seed=ctx.cfg.seed
    )


def tokenizer_corpus(ctx_cfg: RunConfig, task: ArithmeticTask) -> list[str]:
    """Text the BPE is trained on: the task's own text plus every user data file of the run."""
    texts = task.corpus(3000)
    for p in ctx_cfg.phases:
        if p.data != "embedded":
            texts += read_documents(p.data)
    return texts
