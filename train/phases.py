"""From phase configs to runnable phases: each gets its data source, its objective and its held-out sets.

This is the one place that knows which objective goes with which data; the loop only sees `Phase`.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from model.gpt import GPT
from train.config import ConfigError, PhaseConfig, RunConfig, parse_aux
from train.data import (TokenStream, conversations, embedded_pretraining, fit_context, parse_conversation,
                        parse_prompt, read_documents, read_jsonl, split_held_out)
from train.distributed import SINGLE, Dist
from train.evaluate import eval_loss, task_accuracy
from train.mix import MixedObjective, MixedSource
from train.objectives import make_objective
from train.rl import RolloutSource
from train.tasks import ArithmeticTask, get_reward
from train.tokenizer import Tokenizer

@dataclass
class Context:
    """What building phases needs from the run."""

    cfg: RunConfig
    tok: Tokenizer
    task: ArithmeticTask
    out_dir: str
    dist: Dist = SINGLE  # training sources hand each rank its share of a step; held-out sets are whole

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


def _user_items(p: PhaseConfig, ctx: Context | None = None) -> tuple[list, list]:
    """A user's SFT conversations or RL prompts, split into (train, held-out). With `ctx`, items whose
    prompt leaves no room in the context are dropped first (data.fit_context)."""
    parse = parse_conversation if p.objective == "sft" else parse_prompt
    items = read_jsonl(p.data, parse)
    if ctx is not None:
        def prompt_len(item) -> int:
            if p.objective == "grpo":
                return len(ctx.tok.render_prompt(item[0]))
            first = next(i for i, m in enumerate(item) if m["role"] == "assistant")  # the turns before it
            return len(ctx.tok.render_prompt(item[:first]))

        room = ctx.seq_len - (p.max_new_tokens if p.objective == "grpo" else 0)
        items = fit_context(items, prompt_len, room, p.data)
    return split_held_out(items, p.data)


def make_sources(p: PhaseConfig, ctx: Context):
    """(training source, held-out evaluators {name: fn(model) -> metrics}) for phase `p`."""
    tok, task, T, seed, dist = ctx.tok, ctx.task, ctx.seq_len, ctx.cfg.seed, ctx.dist
    token_bytes = torch.tensor(tok.token_bytes() + [0] * (ctx.cfg.model.vocab_size - tok.n_vocab))

    def loss_eval(source):
        held_out = source.eval_batches(ctx.cfg.eval_rows, p.micro_batch_size)
        return {p.name: lambda model: eval_loss(model, held_out, token_bytes)}

    if p.objective == "pretrain":
        if p.data == "embedded":
            train = embedded_pretraining(task, tok, p.mix, seed, "train", T, dist)
            return train, loss_eval(embedded_pretraining(task, tok, p.mix, seed, "eval", T))
        train = TokenStream(p.data, tok, T, os.path.join(ctx.out_dir, "data"), dist)
        return train, loss_eval(train)
    if p.objective == "sft":
        if p.data == "embedded":
            return (conversations(lambda i: task.conversation("train", i), tok, T, dist=dist),
                    loss_eval(conversations(lambda i: task.conversation("eval", i), tok, T)))
        train, held = _user_items(p, ctx)
        return (conversations(train.__getitem__, tok, T, len(train), dist),
                loss_eval(conversations(held.__getitem__, tok, T, len(held))))
    reward = get_reward(p.reward)
    if p.data == "embedded":  # held out: the run's task evaluation already asks these problems
        longest = max(len(tok.render_prompt(m)) for m in task.widest_prompts())
        if longest + p.max_new_tokens > T:  # checked now, not when the phase begins after the others
            raise ConfigError(f"{p.name}.max_new_tokens={p.max_new_tokens} does not fit: the task's prompts take up "
                              f"to {longest} tokens of model.seq_len={T}; lower it or raise model.seq_len")
        return RolloutSource(p, tok, lambda i: task.prompt("train", i), reward, None, seed, dist), {}
    train, held = _user_items(p, ctx)
    t = ctx.cfg.task
    return RolloutSource(p, tok, train.__getitem__, reward, len(train), seed, dist), {
        p.name: lambda model: task_accuracy(model, tok, held, reward, max_new_tokens=p.max_new_tokens,
                                            pass_k=t.pass_k, seed=seed)
    }


def build_phases(ctx: Context) -> list[Phase]:
    phases, start = [], 0
    for p in ctx.cfg.phases:
        source, evals = make_sources(p, ctx)
        objective = make_objective(p)
        aux = parse_aux(p.aux)
        if aux:  # extra objectives on their embedded data; their held-out sets belong to their own phases
            subs = [dataclasses.replace(p, objective=name, data="embedded", aux="") for name, _ in aux]
            source = MixedSource([source] + [make_sources(q, ctx)[0] for q in subs])
            objective = MixedObjective([(p.objective, 1.0, objective)] +
                                       [(name, w, make_objective(q)) for (name, w), q in zip(aux, subs)])
        phases.append(Phase(p, start, source, objective, evals))
        start += p.steps
    return phases


def task_evals(ctx: Context) -> dict[str, Callable[[GPT], dict]]:
    """{"task": task accuracy} when the run evaluates it, else {}: `task.evaluate`, whose `auto` means when
    some phase trains on the embedded task (its own data, or an `aux` objective, which always uses it)."""
    t = ctx.cfg.task
    trains_on_task = any(p.data == "embedded" or p.aux for p in ctx.cfg.phases)
    if t.evaluate == "never" or (t.evaluate == "auto" and not trains_on_task):
        return {}
    return {"task": task_eval(ctx)}


def task_eval(ctx: Context) -> Callable[[GPT], dict]:
    """Task accuracy on held-out problems, greedy and pass@k, through the KV-cache sampler."""
    t = ctx.cfg.task
    problems = [ctx.task.prompt("eval", i) for i in range(t.eval_problems)]
    longest = max(len(ctx.tok.render_prompt(m)) for m, _ in problems)
    if longest + t.max_new_tokens > ctx.seq_len:
        raise ConfigError(f"task.max_new_tokens={t.max_new_tokens} does not fit: held-out prompts take up to {longest} "
                          f"tokens of model.seq_len={ctx.seq_len}; lower it or raise model.seq_len")
    reward = get_reward("arithmetic")
    return lambda model: task_accuracy(
        model, ctx.tok, problems, reward, max_new_tokens=t.max_new_tokens, pass_k=t.pass_k, seed=ctx.cfg.seed
    )


def tokenizer_corpus(ctx_cfg: RunConfig, task: ArithmeticTask) -> list[str]:
    """Text the BPE is trained on: the task's own text plus every user data file of the run."""
    texts = task.corpus(3000)
    for p in ctx_cfg.phases:
        if p.data == "embedded":
            continue
        if p.objective == "pretrain":
            texts += read_documents(p.data)
        else:
            for item in sum(_user_items(p), []):
                msgs = item if p.objective == "sft" else item[0] + [{"content": item[1]}]
                texts += [m["content"] for m in msgs]
    return texts
