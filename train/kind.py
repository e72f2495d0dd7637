"""What an objective kind is, and what it is given: a phase's config and the run's building context.

A phase (`PhaseConfig`) names its objective kind and, in `aux`, extra kinds optimised alongside. A kind
(`ObjectiveKind`) is one entry of the table in train/objectives.py; it says how the kind reads a user's data
file, builds the phase's training source and held-out sets, builds its objective, checks its options and
the batch layout it needs. The loop sees only what these build: a `Source` and an `Objective`.

Each kind's knobs are its own dataclass (`ObjectiveKind.options`). A phase holds one section of them per kind
it trains (`PhaseConfig.options`, keyed by kind name): `--help` and config.json show a phase only those, and
`--<phase>.<knob>=...` sets one (`--<phase>.<kind>.<knob>` when two of a phase's kinds share a knob name).
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from train.data import Batch
from train.distributed import SINGLE, Dist
from train.mix import check_aux_schedule
from train.settings import ConfigError, check, choice, nonnegative, positive
from train.tasks import ArithmeticTask
from train.tokenizer import Tokenizer
from train.variants import check_variant, phase_option


@dataclass
class PhaseConfig:
    name: str = "pretrain"  # unique; overrides address the phase by it (--<name>.<field>=...)
    objective: str = field(default="pretrain", metadata={"help": "what the phase optimises", "kinds": True})
    data: str = "embedded"  # "embedded" (generated tasks) or a file: .txt/.jsonl text (pretrain), .jsonl (sft, grpo)
    task: str = field(default="", metadata={"help": (
        "this phase's variant of the embedded task (empty: the task section): key=value,... of ops (a subset of "
        "+-*), digits (N or MIN-MAX, exactly), direct (a share), carries (N, MIN-MAX or MIN-), e.g. "
        "ops=*,digits=1-2,direct=0,carries=0-1")})
    examples: int = 0  # distinct documents, conversations or prompts the phase sees, repeated as epochs (0: no limit)
    steps: int = 100  # optimiser steps in this phase
    batch_size: int = 16  # rows per optimiser step (GRPO: completions)
    micro_batch_size: int = 16  # rows per forward/backward (batch_size / micro_batch_size accumulation steps)
    lr_scale: float = 1.0  # peak LR of this phase = optim.lr × lr_scale
    warmup_steps: int = 10  # linear warm-up from 0
    decay: str = choice("cosine", ("cosine", "linear", "constant"), "LR decay after warm-up")
    min_lr_ratio: float = 0.1  # LR at the end of the phase, as a fraction of its peak
    eval_every: int = 0  # evaluate every N steps inside the phase (0: only at its end)
    reset_optimizer: bool = False  # start the phase with fresh AdamW moments
    aux: str = ""  # extra objectives optimised alongside, with weights, e.g. "sft=0.5" (each on its embedded data)
    aux_schedule: str = ""  # the aux weight over the phase: linear:A:B, cosine:A:B or srft:W0 (train/mix.py)
    options: dict[str, Any] = field(default_factory=dict)  # kind name -> that kind's knobs, for each kind it trains

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", self.name):
            raise ConfigError(f"phase name {self.name!r} must be letters, digits, _ or - (it is used in "
                              f"--<name>.<field> options and checkpoint file names)")
        at = f"{self.name}."
        positive(self, at, "steps", "batch_size", "micro_batch_size")
        nonnegative(self, at, "warmup_steps", "eval_every", "lr_scale", "min_lr_ratio", "examples")
        check(self, at, "min_lr_ratio", self.min_lr_ratio <= 1, "in [0, 1]")
        self.aux_weights  # noqa: B018  (checks the aux entries' form)
        if self.aux_schedule:
            check_aux_schedule(self.aux_schedule, self.aux_weights, f"{at}aux_schedule")
        check_variant(self.task, phase_option(self.name, self.task))  # the syntax; train/config.py the rest
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(f"{at}batch_size={self.batch_size} must be a multiple of "
                              f"{at}micro_batch_size={self.micro_batch_size}")

    @property
    def aux_weights(self) -> list[tuple[str, float]]:
        """`aux="sft=0.5,pretrain=0.1"` -> [("sft", 0.5), ("pretrain", 0.1)]; ConfigError for a malformed entry
        (train/objectives.py checks that each names a kind)."""
        return [_aux_entry(part) for part in filter(None, (x.strip() for x in self.aux.split(",")))]

    @property
    def kinds(self) -> list[str]:
        """The kinds this phase trains: its objective, then its aux objectives."""
        return [self.objective] + [name for name, _ in self.aux_weights]


def _aux_entry(part: str) -> tuple[str, float]:
    name, _, w = part.partition("=")
    try:
        weight = float(w)
    except ValueError:
        weight = -1.0
    if not name or not weight > 0:
        raise ConfigError(f"aux entry {part!r} must be objective=weight with a weight > 0, e.g. sft=0.5")
    return name, weight


@dataclass
class Context:
    """What building a phase's sources and objective needs from the run."""

    tok: Tokenizer
    task: ArithmeticTask  # the embedded task: generated documents, conversations and prompts
    seq_len: int  # model.seq_len
    vocab_size: int  # model.vocab_size (the tokenizer's vocabulary rounded up)
    seed: int  # the run's seed
    eval_rows: int  # rows of each held-out loss set
    pass_k: int  # samples per held-out prompt for pass@k
    out_dir: str  # the run folder (token shards are written under it)
    kernels: str = "auto"  # model.kernels, the kernel switch: every loss head passes it on as `backend`
    dist: Dist = SINGLE  # training sources hand each rank its share of a step; held-out sets are whole

    @functools.cached_property
    def token_bytes(self) -> torch.Tensor:
        """(vocab_size,) UTF-8 bytes each token stands for (0 for special tokens and padding ids): the
        denominator of bits-per-byte."""
        return torch.tensor(self.tok.token_bytes() + [0] * (self.vocab_size - self.tok.n_vocab))


class Source(Protocol):
    """A phase's training data, as the loop uses it. Positions are plain data, so a checkpoint resumes it."""

    def next_step(self, rows: int, micro_rows: int, model) -> list[Batch]:
        """One optimiser step: this rank's micro-batches of `micro_rows` rows out of the step's `rows` (over
        every rank). Each carries the step's normaliser (train/objectives.py). `model` is the bare model,
        for sources that sample from it."""

    def state_dict(self) -> dict:
        """The position (and whatever else a resume needs), as tensors and plain data."""

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`'s result."""

    def metrics(self) -> dict[str, float]:
        """What the source measured for the step it last gave (e.g. a GRPO rollout's mean reward): global
        values, the same on every rank, which the loop logs beside the objective's metrics."""


class Objective(Protocol):
    def __call__(self, model, batch: Batch) -> tuple[torch.Tensor, dict]:
        """(loss, metrics) of one micro-batch: the loss is its share of the step's loss (divided by a count
        over the whole step), each metric its share of the step's value (a tensor left on the device, or a
        number), so the loop adds them up over micro-batches and ranks; every rank reports the same names."""


Evaluators = dict[str, Callable[[Any], dict]]  # held-out set name -> fn(model) -> {metric: value}


def _no_check(p: PhaseConfig) -> None:
    pass


def _any_layout(p: PhaseConfig, world_size: int) -> None:
    pass


def _no_copies(p: PhaseConfig) -> int:
    return 0


@dataclass(frozen=True)
class ObjectiveKind:
    """One kind of objective: everything the rest of the code asks of it, so nothing else names it."""

    name: str  # as phases name it (--<phase>.objective=<name>, and in aux)
    options: type | None  # dataclass of the kind's knobs, one section per phase that trains it; None: no knobs
    read: Callable[[str], list]  # a user data file -> its items; DataError naming the file and line when malformed
    texts: Callable[[Any], list[str]]  # an item's text, which a BPE tokenizer is trained on
    sources: Callable[[PhaseConfig, Context], tuple[Source, Evaluators]]  # training source, held-out sets
    objective: Callable[[PhaseConfig, Context], Objective]
    check: Callable[[PhaseConfig], None] = _no_check  # the phase's options; ConfigError naming the option
    check_layout: Callable[[PhaseConfig, int], None] = _any_layout  # the batch layout at a world size
    frozen_copies: Callable[[PhaseConfig], int] = _no_copies  # whole-model copies it keeps (memory estimate)
