"""Resuming a run: which options may change, and the data that must not have.

`python train.py --resume DIR [--key=value ...]` continues the run in DIR with the config saved in its
config.json. Options that change neither the model, the data nor the state a checkpoint holds may be given
again (RESUMABLE): the learning rate, the steps of phases that have not finished, the log / evaluation /
checkpoint cadence, evaluation sizes, and where and how the run computes (device, dtype, kernels, threads).
Any other option is refused with a one-line error listing these. The options given are saved into
config.json (under "resumes", with the step they took effect at), so a later resume keeps them.

Data: every user data file is fingerprinted (SHA-256 and size) when the run starts, in config.json's
"data_files". A resume refuses a file that is gone or whose contents changed, naming it; with
`--accept_changed_data` a changed file is only warned about and the run continues on its new contents.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys

from train.config import ConfigError, RunConfig, apply_overrides, from_dict
from train.readers import DataError

RUN_KEYS = ("optim.lr", "optim.grad_clip", "optim.max_bad_steps", "log_every", "eval_rows", "ckpt_every",
            "keep_checkpoints", "task.eval_problems", "task.pass_k", "task.max_new_tokens", "task.evaluate", "wandb",
            "device", "dtype", "model.kernels", "threads", "dist_backend")
PHASE_KEYS = ("steps", "lr_scale", "eval_every")  # as --<phase>.<key>; steps only of phases not yet finished
RESUMABLE = ", ".join([f"--{k}" for k in RUN_KEYS] + [f"--<phase>.{k}" for k in PHASE_KEYS])


def resumed_config(saved: dict, overrides: dict[str, str], step: int) -> RunConfig:
    """The saved config with `overrides` applied, each checked against RESUMABLE and the run's progress
    (`step`: steps done at the checkpoint)."""
    cfg = from_dict(saved["config"])
    if not overrides:
        return cfg
    new = apply_overrides(cfg, overrides)  # unknown keys and bad values first, as for a new run
    names = {p.name for p in cfg.phases}
    for key in overrides:
        head, _, rest = key.partition(".")
        if key not in RUN_KEYS and not (head in names and rest in PHASE_KEYS):
            raise ConfigError(f"--{key} cannot change on --resume (the checkpoint's model, data or state depend on "
                              f"it); options that may: {RESUMABLE}")
    start = 0
    for old, p in zip(cfg.phases, new.phases):
        end = start + old.steps
        if p.steps != old.steps and end <= step:
            raise ConfigError(f"--{p.name}.steps: phase {p.name} finished at step {end}; only the steps of phases "
                              f"not yet finished may change")
        if p.steps != old.steps and start + p.steps <= step:
            raise ConfigError(f"--{p.name}.steps={p.steps}: phase {p.name} has already run {step - start} steps; "
                              f"give more than that")
        start = end
    return new


def record_resume(saved: dict, cfg: RunConfig, overrides: dict[str, str], step: int) -> dict:
    """config.json after a resume with `overrides`: the new config, and the options in its history."""
    history = saved.get("resumes", []) + [{"step": step, "options": dict(overrides)}]
    return saved | {"config": dataclasses.asdict(cfg), "resumes": history}


def read_saved(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing; it records the run's config, and without it the run cannot "
                          f"resume") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} cannot be read ({e}); it records the run's config") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise ConfigError(f"{path} does not hold a run's config")
    return saved


# ------------------------------------------------------------------------------------------------ data
def absolute_data(cfg: RunConfig) -> RunConfig:
    """The config with every user data path made absolute, so the run resumes from any working directory."""
    phases = [p if p.data == "embedded" else dataclasses.replace(p, data=os.path.abspath(p.data)) for p in cfg.phases]
    return dataclasses.replace(cfg, phases=phases)


def fingerprint(path: str) -> dict:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    return {"sha256": digest.hexdigest(), "bytes": os.path.getsize(path)}


def fingerprints(cfg: RunConfig) -> dict[str, dict]:
    """{path: fingerprint} of every user data file of the run."""
    return {p.data: fingerprint(p.data) for p in cfg.phases if p.data != "embedded"}


def check_data(cfg: RunConfig, recorded: dict | None, accept_changed: bool) -> dict | None:
    """DataError naming the first data file that is gone or changed since the run started; with
    `accept_changed` a changed file is a warning, and the fingerprints to record from now on are returned
    (None when nothing changed). A run saved before fingerprints were kept (`recorded` None) is not checked."""
    if recorded is None:
        return None
    updated = dict(recorded)
    for p in cfg.phases:
        if p.data == "embedded" or p.data not in recorded:
            continue
        if not os.path.isfile(p.data):
            raise DataError(f"{p.data} (data of phase {p.name}) is gone since the run started; put it back to "
                            f"resume")
        then, now = recorded[p.data], fingerprint(p.data)
        if now == then:
            continue
        change = (f"{p.data} (data of phase {p.name}) changed since the run started ({then['bytes']} → "
                  f"{now['bytes']} bytes, sha256 {then['sha256'][:12]} → {now['sha256'][:12]})")
        if not accept_changed:
            raise DataError(f"{change}; restore it, or add --accept_changed_data to continue on the new contents")
        print(f"warning: {change}; continuing on the new contents (--accept_changed_data)", file=sys.stderr)
        updated[p.data] = now
    return updated if updated != recorded else None
