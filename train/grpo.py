"""The `grpo` kind: group-relative policy optimisation on prompts with a reward.

Its source samples and scores rollouts (train/rollout.py); its objective is the clipped policy gradient
with an optional k3 KL to the phase-start policy, aggregated by the rollout batch's token weights:

    loss = Σ_t w_t · (−min(ratio·A, clip(ratio, 1 − eps_low, 1 + eps_high)·A) + beta·k3),   ratio = p/p_old

The weights `w` (from `loss_type`) sum over the whole rollout batch, so the loss does not depend on how a
step is split into micro-batches or ranks. A user's prompts are held out as a task-accuracy set.
`<phase>.examples=N` samples from the first N prompts only, repeated as epochs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from model.gpt import GPT
from train.evaluate import task_accuracy
from train.heads import policy_objective
from train.kind import Context, ObjectiveKind, PhaseConfig
from train.blend import parse_schedule
from train.guided import check_demos, guided
from train.readers import Prompt, budget, fit_context, read_prompts, split_held_out
from train.rollout import RolloutBatch, RolloutSource, check_group_layout, check_groups
from train.settings import ConfigError, check, choice, nonnegative, positive
from train.tasks import REWARDS, get_reward


@dataclass
class GRPOOptions:
    group_size: int = 8  # completions sampled per prompt (G); batch_size and micro_batch_size count completions
    temperature: float = 1.0  # sampling temperature of rollouts (log-probs use the same)
    top_k: int = 0  # sample among the k most likely tokens (0: all)
    max_new_tokens: int = 48  # completion length limit
    reward: str = "arithmetic"  # reward function by name: arithmetic, exact, numeric, or one you register
    loss_type: str = choice("dapo", ("grpo", "bnpo", "dapo", "dr_grpo"), "how token losses are aggregated")
    eps_low: float = 0.2  # ratio clipped below at 1 - eps_low
    eps_high: float = 0.28  # ratio clipped above at 1 + eps_high
    beta: float = 0.0  # k3 KL coefficient to the phase-start reference (0: no reference kept)
    mu: int = 1  # optimiser steps per rollout batch
    scale_std: bool = True  # divide advantages by the group std (false: Dr. GRPO)
    std_floor: float = 0.0  # floor on the group std before dividing
    reward_min: float = 0.0  # rewards below this are clamped up to it (and counted: reward_out_of_range)
    reward_max: float = 1.0  # rewards above this are clamped down to it (built-in rewards are 0 or 1)
    # Variants (README, "Variants"); the defaults are plain GRPO
    importance: str = choice("token", ("token", "sequence"), "ratio per token (GRPO) or per sequence (GSPO)")
    dynamic_sampling: bool = False  # DAPO: replace zero-variance groups by groups of new prompts
    max_extra_draws: int = 0  # extra groups a step may draw when dynamic_sampling is on (> 0 then)
    overlong_filter: bool = False  # DAPO: truncated completions (no <|end|> by max_new_tokens) weigh 0
    overlong_buffer: int = 0  # DAPO soft overlong penalty: L_cache, the last tokens before max_new_tokens (0: off)
    overlong_penalty: float = 1.0  # the penalty's factor: reward += factor · R_length(|y|)
    # Blending SFT and RL (README, "Blending SFT and RL"; train/guided.py); the defaults are plain GRPO
    demos: int = 0  # LUFFY: k of each group's G completions are the prompt's demonstration (0: none; k < G)
    shaping_gamma: float = 0.1  # LUFFY: demonstration tokens weigh f(p) = p / (p + shaping_gamma), not the ratio
    prefix: str = ""  # Prefix-RFT: share of the demonstration given as prefix, e.g. cosine:0.8:0 or const:0.5
    prefix_rows: int = 0  # Prefix-RFT: completions of each group that start from the demonstration prefix


def _check(p: PhaseConfig) -> None:
    o, at = p.options["grpo"], f"{p.name}."
    positive(o, at, "group_size", "max_new_tokens", "mu")
    nonnegative(o, at, "temperature", "top_k", "eps_low", "eps_high", "beta", "std_floor", "max_extra_draws",
                "overlong_buffer", "overlong_penalty")
    check(o, at, "max_extra_draws", o.max_extra_draws > 0 or not o.dynamic_sampling,
          f"> 0 with {at}dynamic_sampling=true (the extra groups a step may draw)")
    check(o, at, "overlong_buffer", o.overlong_buffer < o.max_new_tokens,
          f"< {at}max_new_tokens={o.max_new_tokens} (the penalty starts at max_new_tokens - overlong_buffer)")
    check(o, at, "eps_low", o.eps_low < 1, "in [0, 1)")
    nonnegative(o, at, "demos", "prefix_rows")
    positive(o, at, "shaping_gamma")
    check(o, at, "demos", o.demos < o.group_size, f"< {at}group_size={o.group_size} (a group needs samples)")
    if o.prefix:
        parse_schedule(o.prefix, f"{at}prefix")
    check(o, at, "prefix_rows", o.prefix_rows > 0 or not o.prefix, f"> 0 with {at}prefix set (the rows it starts)")
    check(o, at, "prefix_rows", o.prefix_rows == 0 or o.prefix, f"0 without {at}prefix (a schedule, e.g. const:0.5)")
    check(o, at, "prefix_rows", o.demos + o.prefix_rows <= o.group_size,
          f"<= {at}group_size - {at}demos = {o.group_size - o.demos}")
    check(o, at, "reward_max", math.isfinite(o.reward_min) and math.isfinite(o.reward_max)
          and o.reward_min < o.reward_max, f"finite and > {at}reward_min={o.reward_min}")
    check(o, at, "temperature", o.temperature > 0, "> 0 (rollout log-probs divide by it)")
    check(o, at, "reward", o.reward in REWARDS,
          f"a registered reward: {', '.join(sorted(REWARDS))} (a module given with --import=MODULE "
          f"can add one with train.tasks.register_reward)")
    check_groups(p, o.group_size, "completions")


def _check_layout(p: PhaseConfig, world_size: int) -> None:
    check_group_layout(p, p.options["grpo"].group_size, world_size, "completions")


def user_prompts(p: PhaseConfig, ctx: Context) -> tuple[list, list]:
    """A user's prompts, split into (train, held-out), without those that leave no room for a completion."""
    room = ctx.seq_len - p.options["grpo"].max_new_tokens
    prompts = fit_context(read_prompts(p.data), lambda item: len(ctx.tok.render_prompt(item[0])), room, p.data)
    return split_held_out(prompts, p.data)


def _sources(p: PhaseConfig, ctx: Context):
    o, tok, task, T = p.options["grpo"], ctx.tok, ctx.task, ctx.seq_len
    reward = get_reward(o.reward)
    if p.data == "embedded":  # held out: the run's task evaluation already asks these problems
        longest = max(len(tok.render_prompt(m)) for m in task.widest_prompts())
        if longest + o.max_new_tokens > T:  # checked now, not when the phase begins after the others
            raise ConfigError(f"{p.name}.max_new_tokens={o.max_new_tokens} does not fit: the task's prompts take up "
                              f"to {longest} tokens of model.seq_len={T}; lower it or raise model.seq_len")
        prompt = (lambda i: Prompt(*task.prompt("train", i), task.problem("train", i).worked)) if guided(o) \
            else (lambda i: task.prompt("train", i))
        return RolloutSource(p, tok, prompt, reward, count=p.examples or None,
                             seed=ctx.seed, dist=ctx.dist, backend=ctx.kernels), {}
    train, held = user_prompts(p, ctx)
    train = budget(train, p.examples, f"{p.name}.examples", p.data)
    if guided(o):
        check_demos(train, f"{p.name}.demos={o.demos}" if o.demos else f"{p.name}.prefix={o.prefix}", p.data)
    return RolloutSource(p, tok, train.__getitem__, reward, count=len(train), seed=ctx.seed, dist=ctx.dist,
                         backend=ctx.kernels), {
        p.name: lambda model: task_accuracy(model, tok, held, reward, max_new_tokens=o.max_new_tokens,
                                            pass_k=ctx.pass_k, seed=ctx.seed)
    }


class GRPOObjective:
    """Clipped policy gradient with optional k3 KL, aggregated by the rollout batch's token weights. A kind
    that trains the same loss with fewer knobs subclasses it: `kind` names its options section, `kl` whether
    the KL metric is reported, and `extra` the loss options beyond temperature and clip range."""

    kind, kl = "grpo", True

    def __init__(self, p: PhaseConfig, backend: str = "auto"):
        self.o, self.backend = p.options[self.kind], backend

    def extra(self) -> dict:
        o = self.o
        return {"beta": o.beta, "importance": o.importance, "gamma": o.shaping_gamma}

    def __call__(self, model: GPT, b: RolloutBatch):
        o = self.o
        return policy_objective(model, b, kl=self.kl, temperature=o.temperature, eps_low=o.eps_low,
                                eps_high=o.eps_high, backend=self.backend, **self.extra())


GRPO = ObjectiveKind(
    name="grpo", options=GRPOOptions, read=read_prompts,
    texts=lambda item: [m["content"] for m in item[0]] + [item[1]] + [d for d in [getattr(item, "demo", None)] if d],
    sources=_sources, objective=lambda p, ctx: GRPOObjective(p, ctx.kernels), check=_check, check_layout=_check_layout,
    frozen_copies=lambda p: int(p.options["grpo"].beta > 0),
)
