"""Helpers shared by the test files."""
import json
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import train.loop


def assert_close(actual, expected, atol, rtol, name):
    """|actual − expected| <= atol + rtol·|expected| everywhere (NaN fails), compared in fp32 on the CPU; the
    message says how many elements differ, the first one and its values, and the largest difference."""
    actual, expected = actual.detach().float().cpu(), expected.detach().float().cpu()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual - expected).abs()
    bad = ~(diff <= atol + rtol * expected.abs())  # NaN counts as bad
    if bad.any():
        where = bad.nonzero()[0].tolist() if bad.dim() else []
        worst = diff.nan_to_num(float("inf")).max().item()
        raise AssertionError(f"{name}: {bad.sum().item()} of {bad.numel()} elements differ (first at {where}: "
                             f"{actual[tuple(where)].item():.6g} vs {expected[tuple(where)].item():.6g}); "
                             f"max |diff| {worst:.3g} > atol {atol} + rtol {rtol}·|expected|")


class LargestAllocation(TorchDispatchMode):
    """Records the largest tensor (in bytes) any torch op produces, and which op and shape it was: every
    allocation goes through one. The interpreter's own copies of kernel arguments (their storage viewed as
    bytes) are counted too."""

    def __init__(self):
        super().__init__()
        self.largest, self.where = 0, "nothing"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() * t.element_size() > self.largest:
                self.largest = t.numel() * t.element_size()
                self.where = f"{func} -> {t.dtype} {tuple(t.shape)}"
        return out


def interrupt_at(monkeypatch, step: int) -> None:
    """Ctrl-C (a KeyboardInterrupt, as a second Ctrl-C gives) before step `step` + 1 of the next run."""
    original = train.loop.Trainer.train_step

    def train_step(self, phase):
        if self.step == step:
            raise KeyboardInterrupt
        return original(self, phase)

    monkeypatch.setattr(train.loop.Trainer, "train_step", train_step)


# -------------------------------------------------------------------------------- whole runs
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# smoke, with a pretraining phase long enough for a signal to land inside it and minimal evaluation; GRPO
# reuses each rollout batch twice (mu=2) and keeps a reference (beta > 0), so its state is all in a checkpoint.
# One thread, in this process and in subprocesses alike: a thread count can change how matmuls sum, and runs
# in and out of this process are compared exactly.
RUN = {"task.eval_problems": "2", "task.pass_k": "0", "eval_rows": "2", "log_every": "1", "pretrain.steps": "10",
       "grpo.mu": "2", "grpo.beta": "0.1", "threads": "1"}
PRETRAIN_END = 10  # smoke's phases: pretrain (set above), then 4 steps of sft and 4 of grpo
PHASE_ENDS = (PRETRAIN_END, PRETRAIN_END + 4, PRETRAIN_END + 8)
QUICK = {"task.eval_problems": "2", "task.pass_k": "0", "eval_rows": "2", "log_every": "1"}
TIMING = {"ms", "tok_s", "mfu", "rollout_s", "rollout_tok_s", "seconds"}


def cli(*args: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "train.py"), *args]


def options(overrides: dict) -> list[str]:
    return [f"--{k}={v}" for k, v in overrides.items()]


def assert_same_run(a: str, b: str) -> None:
    """Every logged metric and the summary of run folders a and b agree exactly, timings aside."""
    def records(d):
        with open(os.path.join(d, "metrics.jsonl")) as f:
            return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]

    def phases(d):
        with open(os.path.join(d, "summary.json")) as f:
            return [{k: v for k, v in p.items() if k not in TIMING} for p in json.load(f)["phases"]]

    ra, rb = records(a), records(b)
    assert [(r["kind"], r["step"]) for r in ra] == [(r["kind"], r["step"]) for r in rb]
    for x, y in zip(ra, rb):
        assert x == y, (x["step"], {k: (x.get(k), y.get(k)) for k in set(x) | set(y) if x.get(k) != y.get(k)})
    assert phases(a) == phases(b)


class Payload:
    """Pickles as a call to os.system: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)
