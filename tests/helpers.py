"""Helpers shared by the test files."""
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
