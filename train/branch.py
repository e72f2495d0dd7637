"""Branching: a NEW run that starts from a checkpoint of another run (`--init_from`).

    python train.py --init_from=runs/A/ckpt-000550-sft.pt --phases=grpo:grpo        a checkpoint file
    python train.py --init_from=runs/A --init_phase=sft --phases=grpo:grpo          a run folder + phase

What a branch inherits from the checkpoint:
    weights        always (the model config must match the checkpoint's: a one-line error names the field)
    tokenizer      always: it is taken from the checkpoint, not trained again (`tokenizer`, `vocab_size` unused)
    optimiser      only with `--init_optimizer=true`: the parent's AdamW moments and step counts
    RNG states     when the branch has the parent's seed (then it continues the parent's random streams;
                   another seed starts its own)
What it does not: the step counter, the data positions, the statistics and results of the parent's phases.
A branch is a new run whose phases start at their own beginning, and nothing a phase draws depends on the
global step: a phase's data position, its LR schedule and its GRPO sampling seeds (run seed, phase name,
prompt index, sample index) are all counted from the phase's start. So a branch from a parent's SFT
phase-end checkpoint that runs the parent's GRPO phase (`--phases=grpo:grpo`, same settings, the same seed
and `--init_optimizer=true`) trains exactly the parent's GRPO steps (tests/test_branch.py checks it); with a
phase of another name, or another seed, it draws other data.

The parent is recorded in config.json under "parent": the checkpoint's path, step and phase, the parent
run's folder, seed and a hash of its config (when its config.json is beside the checkpoint). A resume of a
branched run uses its own checkpoints and never reads the parent again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass

from train import checkpoint
from train.checkpoint import CheckpointError
from train.config import RunConfig
from train.tokenizer import Tokenizer


@dataclass
class Parent:
    path: str  # the checkpoint file
    state: dict  # what it holds (train/checkpoint.py)
    record: dict  # what config.json says of it ("parent")
    seed: int | None  # the parent run's seed, when its config.json is beside the checkpoint

    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer.loads(self.state["tokenizer"])


def checkpoint_path(cfg: RunConfig) -> str:
    """The checkpoint file `init_from` (and `init_phase`) name; CheckpointError when there is none."""
    path, phase = cfg.init_from, cfg.init_phase
    if not os.path.exists(path):
        raise CheckpointError(f"--init_from={path}: no such file or folder")
    if os.path.isfile(path):
        if phase:
            raise CheckpointError(f"--init_phase={phase} picks a checkpoint in a run folder, but --init_from={path} "
                                  f"is a file; drop --init_phase")
        return path
    ends = {checkpoint.phase_end(p): p for p in checkpoint.find(path) if checkpoint.phase_end(p)}
    listed = ", ".join(reversed(list(ends))) or "none"
    if not phase:
        raise CheckpointError(f"--init_from={path} is a run folder: name the phase to start from with "
                              f"--init_phase=NAME (phase-end checkpoints there: {listed}), or give a checkpoint file")
    if phase not in ends:
        raise CheckpointError(f"--init_from={path} has no phase-end checkpoint of phase {phase!r} "
                              f"(phase-end checkpoints there: {listed})")
    return ends[phase]


def load(cfg: RunConfig) -> Parent:
    """The checkpoint a branch starts from, checked against the branch's model config (all before training)."""
    path = os.path.abspath(checkpoint_path(cfg))
    state = checkpoint.read(path)
    if not isinstance(state.get("tokenizer"), str) or not isinstance(state.get("identity"), dict):
        raise CheckpointError(f"--init_from={path} does not record its tokenizer and model (written by an older "
                              f"version)")
    ours = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k not in ("kernels", "vocab_size")}
    for key, value in ours.items():  # the vocabulary comes with the checkpoint's tokenizer
        if state["identity"]["model"].get(key) != value:
            raise CheckpointError(f"--init_from={path} is for a different model: model.{key} is "
                                  f"{state['identity']['model'].get(key)} in the checkpoint but {value} here")
    saved = _run_config(os.path.dirname(path))
    phase = checkpoint.phase_end(path) or (_phase_at(saved, state["step"]) if saved else None)
    record = {"path": path, "step": state["step"], "phase": phase, "run": os.path.dirname(path),
              "init_optimizer": cfg.init_optimizer}
    seed = None
    if saved is not None:
        seed = saved.get("seed")
        canonical = json.dumps(saved, sort_keys=True).encode()
        record |= {"preset": saved.get("preset"), "seed": seed, "config_sha256": hashlib.sha256(canonical).hexdigest()[:16]}
    return Parent(path, state, record, seed)


def inherit(trainer, parent: Parent, cfg: RunConfig) -> None:
    """Give a new run's trainer what a branch inherits (module docstring)."""
    checkpoint.check_identity(parent.state, trainer.identity(), parent.path)
    checkpoint.load_model_state(trainer.model, parent.state["model"], parent.path)
    if cfg.init_optimizer:
        trainer.opt.load_state_dict(parent.state["optimizer"])
    if parent.seed == cfg.seed and "rng" in parent.state:
        checkpoint.set_rng_state(parent.state["rng"])


def _run_config(folder: str) -> dict | None:
    """The config in the parent's config.json, if the checkpoint sits in its run folder."""
    try:
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f).get("config")
    except (OSError, ValueError, AttributeError):
        return None
    return config if isinstance(config, dict) else None


def _phase_at(config: dict, step: int) -> str | None:
    """The phase that trained step `step` (1-based) of a run with `config`."""
    end = 0
    for p in config.get("phases", []):
        end += p.get("steps", 0)
        if step <= end:
            return p.get("name")
    return None
