"""Checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds the model, the optimiser, the step (which fixes the phase), every data source's position,
every objective's state (e.g. a GRPO reference snapshot), the RNG states and the tokenizer. It is written to
`ckpt.pt.tmp`, flushed to disk, then renamed over `ckpt.pt`: a crash mid-write leaves the previous
checkpoint intact.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

CKPT = "ckpt.pt"


class CheckpointError(ValueError):
    """No checkpoint, or one that does not fit this model (printed as one line by the CLI)."""


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run_dir: str, state: dict) -> str:
    path = os.path.join(run_dir, CKPT)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load(run_dir: str) -> dict:
    path = os.path.join(run_dir, CKPT)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint in {run_dir} (expected {path}); nothing to resume")
    return torch.load(path, map_location="cpu", weights_only=False)


def load_model_state(model: torch.nn.Module, state: dict, source: str) -> None:
    """Load weights, explaining a mismatch instead of printing torch's key dump."""
    state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}  # written by a torch.compile'd model
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected else
                  f"{wrong[0]} is {tuple(state[wrong[0]].shape)} there but {tuple(own[wrong[0]].shape)} here")
        raise CheckpointError(f"checkpoint {source} was written for a different model ({detail})")
    model.load_state_dict(state)
