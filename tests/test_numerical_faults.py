"""Numerical faults: a NaN/inf loss or gradient skips the update and is reported by name; too many in a row
stop the run with a checkpoint and a one-line error."""
import json
import os

import numpy as np
import torch

import train.supervised
from tests.helpers import QUICK, options
from train import checkpoint
from train.cli import main
from train.config import apply_overrides, load_preset
from train.run import run


class NaNGrad(torch.autograd.Function):
    """0 forward, NaN gradient backward: a bad gradient with a finite loss."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.new_zeros(())

    @staticmethod
    def backward(ctx, grad):
        return torch.full(ctx.shape, float("nan"), device=grad.device)


def poison(monkeypatch, bad_loss, bad_grad=()):
    """Wrap the next-token objective: its n-th call (2 micro-batches per base-smoke step) returns a NaN loss
    (n in bad_loss) or a NaN gradient for blocks.1.mlp.down.weight (n in bad_grad)."""
    objective, calls = train.supervised.NextTokenLoss.__call__, iter(range(10**6))

    def poisoned(self, model, batch):
        loss, metrics = objective(self, model, batch)
        n = next(calls)
        if n in bad_loss:
            loss = loss * float("nan")
        if n in bad_grad:
            loss = loss + NaNGrad.apply(model.blocks[1].mlp.down.weight)
        return loss, {**metrics, "loss": loss.detach()}

    monkeypatch.setattr(train.supervised.NextTokenLoss, "__call__", poisoned)


def test_a_nan_loss_or_gradient_skips_the_step_and_is_reported(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    poison(monkeypatch, bad_loss={4}, bad_grad={11})  # steps 3 (pretrain) and 6 (pretrain2)
    summary = run(apply_overrides(load_preset("base-smoke"), QUICK | {"out": out}))
    printed = capsys.readouterr().out
    assert "warning: phase pretrain: the loss is nan at step 3; update skipped (1 in a row" in printed
    assert ("warning: phase pretrain2: the gradient of blocks.1.mlp.down.weight is not finite at step 6; "
            "update skipped (1 in a row") in printed
    with open(os.path.join(out, "metrics.jsonl")) as f:
        steps = [r for r in map(json.loads, f) if r["kind"] == "train"]
    assert [r["skipped"] for r in steps] == [0, 0, 1, 0, 0, 1, 0, 0]
    # had either update been applied, its NaNs would be in the weights and in every later loss
    assert all(np.isfinite(r["loss"]) for r in steps if r["step"] != 3)
    assert [p["skipped"] for p in summary["phases"]] == [1, 1]


def test_consecutive_faults_stop_the_run_with_a_checkpoint(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    poison(monkeypatch, bad_loss=range(2, 10**6))  # every step from step 2 on
    assert main(["--preset=base-smoke", f"--out={out}", "--optim.max_bad_steps=2", *options(QUICK)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: phase pretrain: 2 steps in a row had a non-finite loss or gradient (last: the loss is "
                   "nan at step 3); saved a checkpoint at step 3 and stopped; check the data, or continue with a lower "
                   f"--optim.lr or a higher --optim.max_bad_steps: python train.py --resume {out} --optim.lr=...")
    state = checkpoint.load(out)
    assert state["step"] == 3 and state["bad_steps"] == 2
