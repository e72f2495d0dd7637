"""Schedules of the SFT-RL blends: the demonstration-prefix fraction of Prefix-RFT (`grpo.prefix`) and the
weight of a mixed phase's aux objective (`<phase>.aux_schedule`, train/mix.py).

A schedule is a value of the phase's progress t = step / steps ∈ [0, 1), the phase's own step (so a resumed
run finds the same value at the same step):

    const:V         V
    linear:A:B      A + (B − A)·t
    cosine:A:B      B + (A − B)·(1 + cos(π·t)) / 2      (A at the start, B at the end, flat at both ends)

Every number must be finite and lie in the schedule's range ([0, 1] for a prefix fraction, ≥ 0 for a
weight); anything else is a ConfigError naming the option.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from train.settings import ConfigError

SHAPES = {"const": 1, "linear": 2, "cosine": 2}  # shape -> how many numbers it takes


def progress(step: int, steps: int) -> float:
    """t of the module docstring: the phase's step over its length, in [0, 1)."""
    return step / max(steps, 1)


def parse_schedule(spec: str, option: str, low: float = 0.0, high: float = 1.0) -> Callable[[float], float]:
    """`spec` (module docstring) -> f(t); ConfigError naming `option` when malformed or outside [low, high]."""
    shape, *nums = spec.split(":")
    forms = "const:V, linear:A:B or cosine:A:B"
    if shape not in SHAPES or len(nums) != SHAPES[shape]:
        raise ConfigError(f"{option}={spec!r} must be {forms}")
    try:
        values = [float(x) for x in nums]
    except ValueError:
        raise ConfigError(f"{option}={spec!r} must be {forms} with numbers") from None
    if not all(math.isfinite(v) and low <= v <= high for v in values):
        raise ConfigError(f"{option}={spec!r}: every value must lie in [{low:g}, {high:g}]")
    if shape == "const":
        return lambda t: values[0]
    a, b = values
    if shape == "linear":
        return lambda t: a + (b - a) * t
    return lambda t: b + (a - b) * (1 + math.cos(math.pi * t)) / 2
