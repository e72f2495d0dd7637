"""Checkpoints: everything needed to continue a run exactly, written atomically, rotated, loaded safely.

A checkpoint holds the model, the optimiser, the step (which fixes the phase), every data source's state
(its position; a GRPO source's reference snapshot, rollout buffer and its metrics), the RNG states, the tokenizer,
and the run's identity (model config and tokenizer fingerprint) so it is never loaded into a different model.

Files in the run folder:
    ckpt-000120.pt            after step 120; only the newest `keep` of these are kept
    ckpt-000400-pretrain.pt   at the end of phase "pretrain" (step 400); always kept
Each is written to `<name>.tmp`, flushed to disk, then renamed: a crash mid-write leaves every earlier
checkpoint intact, and a write that fails (a full disk) removes its partial file. Resuming takes the newest
checkpoint that loads; one that is truncated or corrupt is named in a warning and the previous one is used.

Only plain data is stored (tensors, numbers, strings, lists, dicts; RNG states converted to those), so
loading uses `torch.load(weights_only=True)`, which never runs code from the file: a checkpoint holding any
other pickled object is refused.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import pickle
import random
import re
import sys

import numpy as np
import torch

_NAME = re.compile(r"ckpt-(\d+)(?:-(.+))?\.pt")  # ckpt-<step>[-<phase>].pt


class CheckpointError(ValueError):
    """No checkpoint, or one that does not fit this model (printed as one line by the CLI)."""


def rng_state() -> dict:
    """Every RNG state as plain data: Python's as a list of ints, NumPy's key as an int64 tensor."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------ identity
def identity(model_cfg, tokenizer: str) -> dict:
    """What a checkpoint must agree on with the run loading it: the model config (the attention
    implementation aside, which any checkpoint may switch) and a fingerprint of the serialised tokenizer."""
    model = {k: v for k, v in dataclasses.asdict(model_cfg).items() if k != "kernels"}
    return {"model": model, "tokenizer": hashlib.sha256(tokenizer.encode()).hexdigest()[:16]}


def check_identity(state: dict, own: dict, source: str) -> None:
    """CheckpointError naming the first thing that differs between the checkpoint and this run."""
    theirs = state.get("identity")
    if not isinstance(theirs, dict):
        raise CheckpointError(f"checkpoint {source} does not record its model and tokenizer (written by an older "
                              f"version); start a new run")
    for key, ours in own["model"].items():
        if theirs["model"].get(key) != ours:
            raise CheckpointError(f"checkpoint {source} is for a different model: {key} is "
                                  f"{theirs['model'].get(key)} in the checkpoint but {ours} here")
    if theirs["tokenizer"] != own["tokenizer"]:
        raise CheckpointError(f"checkpoint {source} was trained with a different tokenizer (fingerprint "
                              f"{theirs['tokenizer']} in the checkpoint, {own['tokenizer']} here)")


# ------------------------------------------------------------------------------------------------ files
def find(run_dir: str) -> list[str]:
    """Checkpoint paths in `run_dir`, newest (highest step) first; at equal steps the phase-end one first."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(run_dir), "ckpt-*.pt")):
        m = _NAME.fullmatch(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), m.group(2) is not None, path))
    return [path for *_, path in sorted(found, reverse=True)]


def phase_end_path(run_dir: str, step: int, phase: str) -> str:
    """Where the checkpoint at the end of phase `phase` (its last step `step`) is written."""
    return os.path.join(run_dir, f"ckpt-{step:06d}-{phase}.pt")


def save(run_dir: str, state: dict, keep: int = 2, phase_end: str | None = None) -> str:
    """Write `state` (its "step" names the file) atomically, then rotate.

    `phase_end` (the phase's name) marks a checkpoint kept for good; of the others the newest `keep` stay.
    Checkpoints past this step can only be ones that failed to load when the run resumed from an earlier
    one, so they are removed too, as are temporary files left by a crash mid-write.
    """
    step = state["step"]
    path = phase_end_path(run_dir, step, phase_end) if phase_end else os.path.join(run_dir, f"ckpt-{step:06d}.pt")
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # a full disk, or a second Ctrl-C: the partial file must not hold the space
        if os.path.exists(tmp):
            os.remove(tmp)
        err = os_error(e)
        if err is not None and err.filename is None:  # name the file (torch.save may wrap the OSError too)
            raise OSError(err.errno, err.strerror, path) from e
        raise
    rotating = []
    for p in find(run_dir):
        s, tagged = _step_of(p)
        if s > step:
            os.remove(p)
        elif not tagged:
            rotating.append(p)
    for p in rotating[keep:]:
        os.remove(p)
    for p in glob.glob(os.path.join(glob.escape(run_dir), "ckpt-*.pt.tmp")):
        os.remove(p)
    return path


def load(run_dir: str) -> dict:
    """The newest checkpoint in `run_dir` that loads, with the path it came from under "loaded_from".

    A truncated or corrupt file gets a one-line warning on stderr and the previous checkpoint is tried; a
    file holding pickled objects other than plain data is refused outright (CheckpointError).
    """
    paths = find(run_dir)
    if not paths:
        raise CheckpointError(f"no checkpoint in {run_dir} (expected ckpt-<step>.pt files); nothing to resume")
    for i, path in enumerate(paths):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or not isinstance(state.get("step"), int):
                raise ValueError("not a tritium checkpoint")
        except Exception as e:  # noqa: BLE001  (damaged bytes make torch.load raise almost anything)
            unsafe = isinstance(e, pickle.UnpicklingError) and re.search(r"GLOBAL ([\w.]+)", str(e))
            if unsafe:  # the file asks for a callable or class that weights_only refuses to import
                raise CheckpointError(f"checkpoint {path} holds pickled objects other than tensors and plain data "
                                      f"({unsafe.group(1)}); refusing to load it (it could run code)") from None
            _warn_unreadable(path, e, paths[i + 1 :])
            continue
        state["loaded_from"] = path
        return state
    raise CheckpointError(f"no readable checkpoint in {run_dir}: all {len(paths)} are truncated or corrupt")


def read(path: str) -> dict:
    """The one checkpoint file `path`; CheckpointError when it is not one (unreadable, not a tritium
    checkpoint, or holding pickled objects other than plain data)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (a file that is not a checkpoint makes torch.load raise almost anything)
        unsafe = isinstance(e, pickle.UnpicklingError) and re.search(r"GLOBAL ([\w.]+)", str(e))
        what = (f"holds pickled objects other than tensors and plain data ({unsafe.group(1)})" if unsafe else
                f"cannot be read as a checkpoint ({_reason(e)})")
        raise CheckpointError(f"{path} {what}") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or "model" not in state:
        raise CheckpointError(f"{path} is not a tritium checkpoint (no model and step in it)")
    return state


def phase_end(path: str) -> str | None:
    """The phase whose end checkpoint `path` is (from its name, ckpt-<step>-<phase>.pt), else None."""
    m = _NAME.fullmatch(os.path.basename(path))
    return m.group(2) if m else None


def _step_of(path: str) -> tuple[int, bool]:
    m = _NAME.fullmatch(os.path.basename(path))
    return int(m.group(1)), m.group(2) is not None


def os_error(e: BaseException | None) -> OSError | None:
    """The OSError (with an errno) behind `e`, following its chain of causes, or None."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _reason(e: Exception, limit: int = 160) -> str:
    """The first sentence of an exception's message, cut at a word and marked when longer than `limit`."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    text = text.split(". ")[0].rstrip(".")
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def _warn_unreadable(path: str, e: Exception, older: list[str]) -> None:
    reason = _reason(e)
    then = f"falling back to {older[0]}" if older else "no older checkpoint to fall back to"
    print(f"warning: checkpoint {path} is unreadable, truncated or corrupt ({reason}); {then}", file=sys.stderr)


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
