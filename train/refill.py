"""DAPO's rollout shaping (Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale"):
the soft overlong penalty and dynamic sampling, for the GRPO rollout source (train/rollout.py).

Soft overlong penalty (`grpo.overlong_buffer` = L_cache > 0, `grpo.overlong_penalty` = factor), with
L_max = max_new_tokens and |y| the completion's sampled tokens (its <|end|> included when it came):

    R_length(y) = 0                                   if |y| ≤ L_max − L_cache
                = ((L_max − L_cache) − |y|) / L_cache if L_max − L_cache < |y| ≤ L_max
                = −1                                  if |y| > L_max
    reward      = clamp(task reward, reward_min, reward_max) + factor · R_length(y)

before the group advantages. The sampler stops at L_max, so the last branch cannot happen here; a truncated
completion (L_max tokens without <|end|>) gets the full −factor from the middle branch.

Dynamic sampling (`grpo.dynamic_sampling`, `grpo.max_extra_draws` = N > 0): a group whose shaped rewards are
all equal has advantages 0 everywhere and gives no policy gradient. Such groups are dropped and replaced, in
rounds, by groups of new prompts until the step has its P groups again, drawing at most N extra groups per
step. Each round draws exactly the groups still missing (or what is left of N), the next prompts of the
phase's global prompt order (the source's cursor moves past them), and rank r samples the round's prompts
r, r + W, r + 2W, ... (W ranks). After each round every rank gathers every rank's groups, so every rank
holds the same list in the same global order. The step trains on the kept groups in draw order; when N is
spent before the batch is full, the last dropped groups fill it (their advantage is 0: they change no
policy gradient, only the normalisers and the KL term, and every shape of the step stays the same as
without dynamic sampling). Rank r then takes the r-th contiguous share. None of this depends on the world
size: sampling seeds belong to (prompt, completion), and the choice is made from the global list.
Logged per step: `dropped_groups` (zero-variance groups met, fillers included) and `extra_draws`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from train import distributed


def length_penalty(length: int, max_new_tokens: int, buffer: int, factor: float) -> float:
    """factor · R_length of a completion of `length` tokens (module docstring); 0 when buffer is 0 (off)."""
    if buffer == 0:
        return 0.0
    start = max_new_tokens - buffer  # L_max − L_cache
    if length <= start:
        return 0.0
    if length <= max_new_tokens:
        return factor * (start - length) / buffer
    return -factor


@dataclass
class Group:
    """The G completions of one prompt, with everything scoring gave them (slices of a `Sampled`)."""

    index: int  # the prompt's global index (its place in the phase's prompt order)
    answers: list
    prompts: list
    completions: list
    raw: list
    rewards: torch.Tensor
    penalty: torch.Tensor
    truncated: torch.Tensor
    demo: torch.Tensor | None = None  # demonstration rows (train/guided.py), None in plain GRPO
    given: list | None = None

    @property
    def zero_var(self) -> bool:
        shaped = self.rewards + self.penalty
        return bool((shaped == shaped[0]).all())  # as kernels.group_advantages decides it


class Refill:
    """One step's dynamic sampling. `draw(indices)` samples and scores this rank's prompts `indices` (a
    `Sampled`, group-major); `source` is the rollout source (its cursor, options and process group)."""

    def __init__(self, source, draw, groups: int):
        self.src, self.draw, self.P = source, draw, groups
        self.dropped = self.extra = 0

    def run(self, first: range):
        """This rank's `Sampled` share of the step's P groups, `first` being its share of the step's prompts."""
        budget, rank, world = self.src.o.max_extra_draws, self.src.dist.rank, self.src.dist.world_size
        kept, dropped, indices = [], [], first
        while True:
            for g in self._round(indices):
                (dropped if g.zero_var else kept).append(g)
            missing = self.P - len(kept)
            if missing == 0 or self.extra == budget:
                break
            n = min(missing, budget - self.extra)
            start, self.src.cursor, self.extra = self.src.cursor, self.src.cursor + n, self.extra + n
            indices = range(start + rank, start + n, world)
        self.dropped = len(dropped)
        short = self.P - len(kept)
        chosen = kept + dropped[len(dropped) - short:] if short else kept
        share = self.P // world
        return _merge(self._kind, chosen[rank * share: (rank + 1) * share])

    def metrics(self) -> dict[str, float]:
        return {"dropped_groups": float(self.dropped), "extra_draws": float(self.extra)}

    def _round(self, indices: range) -> list[Group]:
        """Sample this rank's prompts of a round; every rank's groups of it, in global prompt order."""
        s, G = self.draw(indices), self.src.o.group_size
        self._kind = type(s)  # train.rollout.Sampled (which imports this module)
        mine = [Group(i, *(None if f is None else f[k * G:(k + 1) * G]
                           for f in (s.answers, s.prompts, s.completions, s.raw, s.rewards, s.penalty, s.truncated,
                                     s.demo, s.given)))
                for k, i in enumerate(indices)]
        # with several processes: every rank's groups to rank 0, then the whole list back to every rank
        everyone = distributed.broadcast(distributed.gather(mine))
        return sorted((g for part in everyone for g in part), key=lambda g: g.index)


def _merge(kind, groups: list[Group]):
    """One `kind` (a Sampled) of the groups' completions, group-major."""
    s = kind([a for g in groups for a in g.answers], [p for g in groups for p in g.prompts],
                [c for g in groups for c in g.completions], [r for g in groups for r in g.raw])
    s.rewards = torch.cat([g.rewards for g in groups])
    s.penalty = torch.cat([g.penalty for g in groups])
    s.truncated = torch.cat([g.truncated for g in groups])
    if groups and groups[0].demo is not None:
        s.demo, s.given = torch.cat([g.demo for g in groups]), [n for g in groups for n in g.given]
    return s
