"""Phases that optimise several objectives at once: loss = Σ_i w_i · loss_i, each on its own data.

A phase names its main objective and, in `aux`, extra ones with weights (`--grpo.aux=sft=0.5` keeps the SFT
loss alongside RL; `--sft.aux=pretrain=0.1` keeps some next-token loss on plain text). Every component
draws a full step of its own data (the phase's batch sizes) and normalises by its own step-wide count, so
each weight means what it says; the loop sees one source and one objective as usual.

`<phase>.aux_schedule` moves the weight of a phase's one aux objective over the phase (`AuxWeight`), which
is then logged every step as `aux_weight/<kind>`:

    linear:A:B, cosine:A:B    the schedules of train/blend.py, of the phase's progress t = step / steps
    srft:W0                   w = W0 · exp(−H): a simplified form of SRFT's entropy-aware SFT weight (Fu et al.
                              2025, "SRFT: A Single-Stage Method with Supervised and Reinforcement Fine-Tuning
                              for Reasoning"), H the main objective's mean token entropy (nats, its `entropy`
                              metric, a constant: no gradient) over the previous step, W0 on the first step.
                              A confident policy (low H) keeps the SFT term near W0; an uncertain one, whose
                              RL updates do the exploring, gets less of it.

Its state (the step, and the last step's entropy over every rank) is in the source's checkpoint, so a resumed
phase weighs each step as the uninterrupted one did.
"""
from __future__ import annotations

import math

import torch

from train import distributed
from train.blend import parse_schedule, progress
from train.settings import ConfigError

ADAPTIVE = ("srft",)  # the adaptive rules of aux_schedule, by the paper they come from


def check_aux_schedule(spec: str, aux: list, option: str) -> None:
    """ConfigError for a malformed `aux_schedule` (module docstring) or one without exactly one aux entry."""
    if len(aux) != 1:
        raise ConfigError(f"{option}={spec!r} needs exactly one aux objective (e.g. aux=sft=0.5), got {len(aux)}")
    rule, _, rest = spec.partition(":")
    if rule in ADAPTIVE:
        ok = rest.count(":") == 0 and _number(rest) is not None and _number(rest) >= 0
        if not ok:
            raise ConfigError(f"{option}={spec!r} must be {rule}:W0 with a finite W0 >= 0")
    elif rule in ("linear", "cosine"):
        parse_schedule(spec, option, 0.0, math.inf)
    else:
        raise ConfigError(f"{option}={spec!r}: unknown rule {rule!r}; use linear:A:B, cosine:A:B or an adaptive "
                          f"rule: {', '.join(r + ':W0' for r in ADAPTIVE)}")


def _number(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


class AuxWeight:
    """The weight of a phase's aux objective at each of its steps (module docstring)."""

    def __init__(self, spec: str, steps: int, option: str):
        self.spec, self.steps, self.option = spec, steps, option
        rule, _, rest = spec.partition(":")
        self.adaptive = rule in ADAPTIVE
        self.schedule = None if self.adaptive else parse_schedule(spec, option, 0.0, math.inf)
        self.w0 = float(rest) if self.adaptive else 0.0
        self.step = 0  # steps begun in the phase
        self.entropy: float | None = None  # the previous step's mean entropy over every rank
        self.pending = torch.zeros((), dtype=torch.float64)  # this rank's share of the current step's entropy
        self.weight = 0.0

    def begin_step(self) -> float:
        """The weight of the step about to run (collective under torchrun: every rank calls it)."""
        if self.adaptive:
            if self.step > 0:
                self.entropy = float(distributed.all_reduce(self.pending.cpu()))
            self.weight = self.w0 if self.entropy is None else self.w0 * math.exp(-self.entropy)
        else:
            self.weight = self.schedule(progress(self.step, self.steps))
        self.pending = torch.zeros((), dtype=torch.float64)
        self.step += 1
        return self.weight

    def observe(self, metrics: dict) -> None:
        """Add a main-objective micro-batch's share of the step's entropy."""
        if self.adaptive:
            if "entropy" not in metrics:
                raise ConfigError(f"{self.option}={self.spec!r} needs a main objective that reports its token "
                                  f"entropy (grpo does)")
            self.pending = self.pending + torch.as_tensor(metrics["entropy"]).detach().double().cpu()

    def state_dict(self) -> dict:
        """Collective under torchrun: the step's entropy shares are summed over the ranks."""
        total = float(distributed.all_reduce(self.pending.cpu())) if self.adaptive else 0.0
        return {"step": self.step, "entropy": self.entropy, "pending": total}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.entropy = state["step"], state["entropy"]
        mine = state["pending"] if distributed.rank() == 0 else 0.0  # rank 0 holds the global sum, the others nothing
        self.pending = torch.tensor(mine, dtype=torch.float64)


class MixedSource:
    """Draws one step from every component's source; each micro-batch remembers which component it is."""

    def __init__(self, parts: list[tuple[str, object]], weight: AuxWeight | None = None):
        self.names = [name for name, _ in parts]  # (kind name, source), the phase's main source first
        self.sources = [source for _, source in parts]
        self.weight = weight  # the aux objective's weight over the phase, with aux_schedule

    def next_step(self, rows: int, micro_rows: int, model=None) -> list:
        if self.weight is not None:
            self.weight.begin_step()
        out = []
        for i, source in enumerate(self.sources):
            for b in source.next_step(rows, micro_rows, model):
                b.component = i
                out.append(b)
        return out

    def metrics(self) -> dict[str, float]:
        """Every component's source metrics; an aux component's prefixed with its kind, as its loss is."""
        out = {("" if i == 0 else f"{name}_") + k: v
               for i, (name, source) in enumerate(zip(self.names, self.sources)) for k, v in source.metrics().items()}
        return out | ({} if self.weight is None else {f"aux_weight/{self.names[1]}": self.weight.weight})

    def state_dict(self) -> dict:
        weight = {} if self.weight is None else {"aux_weight": self.weight.state_dict()}
        return {"sources": [s.state_dict() for s in self.sources]} | weight

    def load_state_dict(self, state: dict) -> None:
        for s, st in zip(self.sources, state["sources"]):
            s.load_state_dict(st)
        if self.weight is not None:
            self.weight.load_state_dict(state["aux_weight"])


class MixedObjective:
    """Routes each micro-batch to its component's objective and weighs its loss; aux metrics get a prefix."""

    def __init__(self, parts: list[tuple[str, float, object]], weight: AuxWeight | None = None):
        self.parts = parts  # (name, weight, objective), the phase's main objective first with weight 1
        self.weight = weight  # with aux_schedule: the aux weight of the current step (the source's)

    def __call__(self, model, batch):
        name, weight, objective = self.parts[batch.component]
        loss, metrics = objective(model, batch)
        if self.weight is not None:
            if batch.component == 0:
                self.weight.observe(metrics)
            else:
                weight = self.weight.weight
        prefix = "" if batch.component == 0 else f"{name}_"
        return weight * loss, {prefix + k: v for k, v in metrics.items()}
