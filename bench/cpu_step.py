"""The two sides of the CPU train-step benchmark, and the interleaved timer that compares them.

    tritium_step(overrides)   one optimiser step of the default run's pretraining phase, built as train/run.py
                              builds it (the default preset, its tokenizer, its data source, the loop's
                              `Trainer.train_step`): the data draw, forward, backward, norm, clip and AdamW
    PlainStep (plain_gpt.py)  the same shape written the plain-PyTorch way
    interleaved(steps, ...)   times them in alternating rounds of one process

Absolute CPU times depend on the machine and on whatever else runs on it; a ratio of two steps timed in the
same rounds does not, as long as the load changes slowly next to one round (a second or so). So each round
runs every step once, in an order that reverses every round (neither always follows the other), and the
comparison is the median over rounds of the per-round ratio: a burst of load that slows one round slows both
of its steps and drops out of that round's ratio.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from model.gpt import GPT
from train.config import RunConfig, apply_overrides, load_preset
from train.loop import Trainer
from train.phases import build_phases, context
from train.run import build_tokenizer
from train.tasks import ArithmeticTask


def default_run(overrides: dict[str, str]) -> tuple[RunConfig, Trainer]:
    """The default preset with `overrides`, set up as `train.run` sets up a run (no run folder, no logging):
    its tokenizer, a model with the vocabulary rounded up to 64, every phase's source and objective."""
    cfg = apply_overrides(load_preset("default"), overrides)
    task = ArithmeticTask(cfg.task.digits, cfg.task.ops, cfg.seed, cfg.task.direct)
    tok = build_tokenizer(cfg, task)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=-(-tok.n_vocab // 64) * 64))
    phases = build_phases(cfg, context(cfg, tok, task, out_dir=""))
    return cfg, Trainer(cfg, GPT(cfg.model), phases, evaluators={}, out_dir="", extra_state={}, peak_flops=None)


def tritium_step(overrides: dict[str, str]) -> tuple[RunConfig, Callable[[], dict]]:
    """(config, step): `step()` is one optimiser step of the pretraining phase, data draw included."""
    cfg, trainer = default_run(overrides)
    phase = trainer.phases[0]
    return cfg, lambda: trainer.train_step(phase)


def interleaved(steps: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each step in each of `rounds` rounds (after `warmup` untimed ones); the order of the steps
    reverses every round."""
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            steps[n]()
            if r >= warmup:
                times[n].append(time.perf_counter() - t0)
    return times

