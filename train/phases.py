"""From phase configs to runnable phases: each gets its data source, its objective and its held-out sets.

Which source and objective go with a phase is its kind's business (train/objectives.py); this module only
asks the table, so the loop only sees `Phase` and never which kind it runs.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from model.gpt import GPT
from train import objectives
from train.config import ConfigError, PhaseConfig, RunConfig
from train.distributed import SINGLE, Dist
from train.evaluate import task_accuracy
from train.kind import Context, Objective, Source
from train.mix import MixedObjective, MixedSource
from train.tasks import ArithmeticTask, get_reward
from train.tokenizer import Tokenizer


@dataclass
class Phase:
    cfg: PhaseConfig
    start: int  # global step at which the phase begins
    source: Source
    objective: Objective
    evals: dict[str, Callable[[GPT], dict]] = field(default_factory=dict)  # this phase's held-out sets

    @property
    def end(self) -> int:
        return self.start + self.cfg.steps


def context(cfg: RunConfig, tok: Tokenizer, task: ArithmeticTask, out_dir: str, dist: Dist = SINGLE) -> Context:
    return Context(tok=tok, task=task, seq_len=cfg.model.seq_len, vocab_size=cfg.model.vocab_size, seed=cfg.seed,
                   eval_rows=cfg.eval_rows, pass_k=cfg.task.pass_k, out_dir=out_dir, kernels=cfg.model.kernels,
                   dist=dist)


def build_phases(cfg: RunConfig, ctx: Context) -> list[Phase]:
    phases, start = [], 0
    for p in cfg.phases:
        main = objectives.get(p.objective)
        source, evals = main.sources(p, ctx)
        objective = main.objective(p, ctx)
        if p.aux:  # extra objectives on their embedded data; their held-out sets belong to their own phases
            parts = [(name, w, dataclasses.replace(p, objective=name, data="embedded", aux=""))
                     for name, w in p.aux_weights]
            source = MixedSource([(p.objective, source)] + [(name, objectives.get(name).sources(q, ctx)[0])
                                                             for name, _, q in parts])
            objective = MixedObjective([(p.objective, 1.0, objective)] +
                                       [(name, w, objectives.get(name).objective(q, ctx)) for name, w, q in parts])
        phases.append(Phase(p, start, source, objective, evals))
        start += p.steps
    return phases


def check_batch_layout(cfg: RunConfig, world_size: int) -> None:
    """batch_size counts the rows of a step over all ranks, micro_batch_size one rank's forward; each kind
    checks what else it needs (GRPO: whole groups per rank). Checked once the world size is known."""
    for p in cfg.phases:
        if p.batch_size % (world_size * p.micro_batch_size):
            raise ConfigError(
                f"{p.name}.batch_size={p.batch_size} (rows per step over all ranks) must be divisible by "
                f"world_size × {p.name}.micro_batch_size = {world_size}×{p.micro_batch_size}; change one of them")
        for kind in objectives.kinds(p):
            kind.check_layout(p, world_size)


def task_evals(cfg: RunConfig, ctx: Context) -> dict[str, Callable[[GPT], dict]]:
    """{"task": task accuracy} when the run evaluates it, else {}: `task.evaluate`, whose `auto` means when
    some phase trains on the embedded task (its own data, or an `aux` objective, which always uses it)."""
    t = cfg.task
    trains_on_task = any(p.data == "embedded" or p.aux for p in cfg.phases)
    if t.evaluate == "never" or (t.evaluate == "auto" and not trains_on_task):
        return {}
    return {"task": task_eval(cfg, ctx)}


def task_eval(cfg: RunConfig, ctx: Context) -> Callable[[GPT], dict]:
    """Task accuracy on held-out problems, greedy and pass@k, through the KV-cache sampler."""
    t = cfg.task
    problems = [ctx.task.prompt("eval", i) for i in range(t.eval_problems)]
    longest = max(len(ctx.tok.render_prompt(m)) for m, _ in problems)
    if longest + t.max_new_tokens > ctx.seq_len:
        raise ConfigError(f"task.max_new_tokens={t.max_new_tokens} does not fit: held-out prompts take up to {longest} "
                          f"tokens of model.seq_len={ctx.seq_len}; lower it or raise model.seq_len")
    reward = get_reward("arithmetic")
    return lambda model: task_accuracy(
        model, ctx.tok, problems, reward, max_new_tokens=t.max_new_tokens, pass_k=t.pass_k, seed=cfg.seed
    )


def tokenizer_corpus(cfg: RunConfig, task: ArithmeticTask) -> list[str]:
    """Text the BPE is trained on: the task's own text plus every user data file of the run."""
    texts = task.corpus(3000)
    for p in cfg.phases:
        if p.data != "embedded":
            kind = objectives.get(p.objective)
            texts += [text for item in kind.read(p.data) for text in kind.texts(item)]
    return texts
