"""From phase configs to runnable phases: each gets its data source, its objective and its held-out sets.

Which source and objective go with a phase is its kind's business (train/objectives.py); this module only
asks the table, so the loop only sees `Phase` and never which kind it runs. A phase with a task variant
(`--<phase>.task`, train/variants.py) builds its sources from a context whose `task` is that variant, so
every kind (and an aux objective of the phase) draws the variant's problems without knowing of it.

Held-out task sets: `task` (the run's task) and the named sets of `--eval.sets`, each problems of the eval
split scored through the sampler (train/evaluate.py task_accuracy), evaluated after every phase.
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
from train.mix import AuxWeight, MixedObjective, MixedSource
from train.tasks import ArithmeticTask, get_reward
from train.tokenizer import Tokenizer
from train.variants import phase_option, set_option, variant_task


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
    run_ctx = ctx
    for p in cfg.phases:
        ctx = phase_context(run_ctx, p)
        main = objectives.get(p.objective)
        source, evals = main.sources(p, ctx)
        objective = main.objective(p, ctx)
        if p.aux:  # extra objectives on their embedded data; their held-out sets belong to their own phases
            parts = [(name, w, dataclasses.replace(p, objective=name, data="embedded", aux="", aux_schedule=""))
                     for name, w in p.aux_weights]
            weight = AuxWeight(p.aux_schedule, p.steps, f"{p.name}.aux_schedule") if p.aux_schedule else None
            source = MixedSource([(p.objective, source)] + [(name, objectives.get(name).sources(q, ctx)[0])
                                                             for name, _, q in parts], weight)
            objective = MixedObjective([(p.objective, 1.0, objective)] +
                                       [(name, w, objectives.get(name).objective(q, ctx)) for name, w, q in parts],
                                       weight)
        phases.append(Phase(p, start, source, objective, evals))
        start += p.steps
    return phases


def phase_context(ctx: Context, p: PhaseConfig) -> Context:
    """The run's context, with phase `p`'s variant of the task when it has one."""
    if not p.task:
        return ctx
    return dataclasses.replace(ctx, task=variant_task(ctx.task, p.task, phase_option(p.name, p.task)))


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
    """The held-out task sets: {"task": the run's task} when the run evaluates it (`task.evaluate`, whose
    `auto` means when some phase trains on the embedded task: its own data, or an `aux` objective, which
    always uses it), and each named set of `eval.sets`, which are evaluated whenever given."""
    t = cfg.task
    trains_on_task = any(p.data == "embedded" or p.aux for p in cfg.phases)
    out = {}
    if t.evaluate == "always" or (t.evaluate == "auto" and trains_on_task):
        out["task"] = task_eval(cfg, ctx, ctx.task)
    for name, spec in cfg.eval.named_sets:
        where = set_option(name, spec)
        out[name] = task_eval(cfg, ctx, variant_task(ctx.task, spec, where, splits=("eval",)), where)
    return out


def task_eval(cfg: RunConfig, ctx: Context, task: ArithmeticTask, where: str = "") -> Callable[[GPT], dict]:
    """Accuracy on `task.eval_problems` held-out problems of `task`, greedy and pass@k, through the KV-cache
    sampler. ConfigError when its problems are too rare to draw or its longest prompt leaves no room for
    task.max_new_tokens; `where` names a named set's option in it (empty: the run's task set)."""
    t = cfg.task
    try:
        problems = [task.prompt("eval", i) for i in range(t.eval_problems)]
    except ValueError as e:  # a variant whose problems are too rare to draw in tasks.MAX_DRAWS
        raise ConfigError(f"{where or 'the task section'}: {e}") from None
    longest = max(len(ctx.tok.render_prompt(m)) for m, _ in problems)
    if longest + t.max_new_tokens > ctx.seq_len:
        what = f"{where}: its prompts" if where else "held-out prompts"
        raise ConfigError(f"task.max_new_tokens={t.max_new_tokens} does not fit: {what} take up to {longest} "
                          f"tokens of model.seq_len={ctx.seq_len}; lower it or raise model.seq_len")
    reward = get_reward("arithmetic")
    return lambda model: task_accuracy(
        model, ctx.tok, problems, reward, max_new_tokens=t.max_new_tokens, pass_k=t.pass_k, seed=cfg.seed
    )


def tokenizer_corpus(cfg: RunConfig, task: ArithmeticTask) -> list[str]:
    """Text the BPE is trained on: the task's own text, that of the phases' variants of it, and every user
    data file of the run."""
    texts = task.corpus(3000)
    variants = {p.task: None for p in cfg.phases if p.task}  # each variant once, in phase order
    for spec in variants:
        texts += variant_task(task, spec, "task variant").corpus(1000)
    for p in cfg.phases:
        if p.data != "embedded":
            kind = objectives.get(p.objective)
            texts += [text for item in kind.read(p.data) for text in kind.texts(item)]
    return texts
