"""Setting up a run: folder, provenance, tokenizer, model, phases; then the loop; or the same from a checkpoint.

The folder is claimed first (train/rundir.py: its lock, and no other run's files in it), then a resume is
checked (train/resume.py: the options it may change, the data files it started with), then the start-up
checks run (train/startup.py) before anything trains. A write that fails for want of space or permission is
turned into one line naming the folder.

Under torchrun every rank runs this: rank 0 names and locks the run folder and writes the files in it
(config, tokenizer, token shards) before the other ranks read them; any world size can resume any checkpoint.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import time

import numpy as np
import torch

from model.gpt import GPT
from train import branch, checkpoint, distributed, drift, rundir, startup
from train import resume as resume_
from train.config import ConfigError, RunConfig, to_dict
from train.distributed import Dist
from train.loop import Interrupted, NumericalError, Trainer
from train.phases import build_phases, check_batch_layout, context, task_evals, tokenizer_corpus
from train.hardware import peak_flops
from train.report import RunLog
from train.tasks import ArithmeticTask
from train.tokenizer import Tokenizer


def provenance(device: torch.device) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"commit": commit or "unknown", "device": name, "torch": torch.__version__, "triton": triton_version,
            "python": platform.python_version(), "date": datetime.datetime.now().isoformat(timespec="seconds")}


def build_tokenizer(cfg: RunConfig, task: ArithmeticTask) -> Tokenizer:
    if cfg.tokenizer == "bpe":
        return Tokenizer.train(tokenizer_corpus(cfg, task), cfg.vocab_size)
    if cfg.tokenizer == "gpt2":
        return Tokenizer.gpt2()
    try:
        return Tokenizer.load(cfg.tokenizer)
    except FileNotFoundError as e:
        raise ConfigError(f"--tokenizer={cfg.tokenizer!r}: {e}; use bpe, gpt2 or a tokenizer.json path") from None


def run(cfg: RunConfig | None = None, resume: str | None = None, *, overrides: dict[str, str] | None = None,
        imports: tuple[str, ...] = (), accept_changed_data: bool = False) -> dict:
    """Train `cfg` in a new run folder, or continue the run in folder `resume` exactly where it stopped.

    `overrides` (with `resume`): options to change on resume (train/resume.py says which may);
    `imports`: modules the caller imported to register rewards, recorded so messages name them;
    `accept_changed_data`: continue a resume whose data files changed, with a warning.
    """
    main = int(os.environ.get("RANK", "0")) == 0  # rank 0 owns the folder; known before the process group
    lock, out_dir, parent = None, resume, None
    try:
        if resume is not None:
            lock = rundir.claim_existing(resume) if main else None  # first: a running run keeps its folder
            state = checkpoint.load(resume)  # a folder without a checkpoint is an error, not a new run
            saved = resume_.read_saved(resume)
            cfg = _resumed_config(resume, saved, overrides or {}, imports, state["step"])
            changed = resume_.check_data(cfg, saved.get("data_files"), accept_changed_data)
            if overrides or changed:  # written once training is set up, so a refused resume changes nothing
                record = resume_.record_resume(saved, cfg, overrides or {}, state["step"])
                record = record | ({"data_files": changed} if changed else {})
            else:
                record = None
        else:
            state, cfg = None, resume_.absolute_data(cfg)
            record = {"imports": list(imports)}
            if cfg.init_from:  # checked before a folder is made: a refused branch leaves nothing behind
                parent = branch.load(cfg)
                cfg = dataclasses.replace(cfg, init_from=parent.path, init_phase="")
                record["parent"] = parent.record
            if main:
                default = os.path.join("runs", f"{cfg.preset}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
                out_dir, lock = rundir.claim_new(cfg.out, None if cfg.out else default)
        return _distributed(cfg, state, out_dir, record, parent)
    except rundir.Stopped:
        raise
    except KeyboardInterrupt:  # Ctrl-C during start-up, or a second Ctrl-C while training
        raise rundir.Stopped(rundir.stopped_message(out_dir)) from None
    finally:
        if lock is not None:
            lock.release()


def _resumed_config(folder: str, saved: dict, overrides: dict, imports: tuple, step: int) -> RunConfig:
    try:
        return resume_.resumed_config(saved, overrides, step)
    except ConfigError:
        missing = [m for m in saved.get("imports", []) if m not in imports]
        if missing:  # most likely a reward the run's own module registers
            raise ConfigError(f"this run was started with --import={','.join(missing)}, which registers what its "
                              f"config names; resume it with: {rundir.resume_command(folder)}") from None
        raise


def _distributed(cfg: RunConfig, state: dict | None, out_dir: str | None, record: dict | None,
                 parent: branch.Parent | None) -> dict:
    dist = distributed.init(cfg.device, cfg.dist_backend)
    together = False  # whether every rank leaves at the same point (see distributed.destroy)
    try:
        check_batch_layout(cfg, dist.world_size)
        out_dir = distributed.broadcast(out_dir)  # rank 0 named (and locked) it
        try:
            summary = _train(cfg, state, out_dir, dist, record, parent)
        except (OSError, RuntimeError) as e:  # a write that failed for want of space or permission
            error = rundir.write_error(e, out_dir)
            if error is None:
                raise
            raise error from None
        together = True
        return summary
    except (Interrupted, NumericalError):  # every rank stops after the same step, with one checkpoint
        together = True
        raise
    finally:
        distributed.destroy(together)


def _train(cfg: RunConfig, state: dict | None, out_dir: str, dist: Dist, record: dict | None,
           parent: branch.Parent | None) -> dict:
    """Train in `out_dir`: from the checkpoint `state` (a resume), from `parent`'s weights (a branch,
    train/branch.py), or from scratch."""
    device = dist.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    startup.check_dtype(cfg, device)
    notes = startup.warnings(cfg, device) if dist.is_main else []
    for line in notes:
        print(line, file=sys.stderr)
    task = ArithmeticTask(cfg.task.digits, cfg.task.ops, cfg.seed, cfg.task.direct)
    tok_path = os.path.join(out_dir, "tokenizer.json")
    with distributed.main_first(dist):  # rank 0 trains the tokenizer; the others read what it saved
        if state or parent:
            tok = Tokenizer.loads(state["tokenizer"]) if state else parent.tokenizer
        else:
            tok = build_tokenizer(cfg, task) if dist.is_main else Tokenizer.load(tok_path)
        if dist.is_main and not (state and os.path.exists(tok_path)):  # a resume rewrites nothing it has
            tok.save(tok_path)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=-(-tok.n_vocab // 64) * 64))
    startup.check_memory(cfg, device)

    model = GPT(cfg.model).to(device)
    ctx = context(cfg, tok, task, out_dir, dist)
    with distributed.main_first(dist):  # user text is tokenized into a shard file once, by rank 0
        phases = build_phases(cfg, ctx)
    evaluators = {name: fn for p in phases for name, fn in p.evals.items()} | task_evals(cfg, ctx)
    # drift from every earlier phase-end model, after each phase: it asks the trainer (made below) its step
    evaluators["drift"] = drift.Drift(cfg, ctx, lambda: trainer.step, cfg.init_from)
    flops, flops_source = peak_flops(device)
    prov = provenance(device) | {"peak_flops": flops, "peak_flops_source": flops_source,
                                 "params": model.num_params(), "tokenizer_vocab": tok.n_vocab,
                                 "world_size": dist.world_size}
    if record is not None and dist.is_main:
        if state is None:
            record = record | {"provenance": prov, "data_files": resume_.fingerprints(cfg)}
        record = {"config": to_dict(cfg)} | {k: v for k, v in record.items() if k != "config"}
        rundir.write_atomic(os.path.join(out_dir, "config.json"), json.dumps(record, indent=2))

    trainer = Trainer(cfg, model, phases, evaluators, out_dir, {"tokenizer": tok.dumps()}, flops, dist)
    if state is not None:
        trainer.load_state_dict(state, state["loaded_from"])
    elif parent is not None:
        branch.inherit(trainer, parent, cfg)
    if dist.is_main:
        print(f"tritium | {'resuming ' + out_dir + ' at step ' + str(trainer.step) if state else 'run ' + out_dir}")
        print(" | ".join(f"{k} {v}" for k, v in prov.items()))
        print(f"preset {cfg.preset} | seed {cfg.seed} | model {model.num_params() / 1e6:.2f}M params "
              f"({cfg.model.n_layer}L d{cfg.model.n_embd} {cfg.model.n_head}h/{cfg.model.n_kv_head}kv) | "
              f"phases " + " → ".join(f"{p.name}({p.objective}, {p.steps})" for p in cfg.phases))
        if parent is not None:
            print(f"branched from {parent.path} (step {parent.record['step']}, phase {parent.record['phase']})")
        if (note := startup.vocab_note(cfg, tok.n_vocab)) and not (state or parent):
            print(note)
    log = RunLog(out_dir, trainer.total, to_dict(cfg), cfg.wandb, resume_step=trainer.step, main=dist.is_main)
    summary = trainer.run(log)
    log.finish(summary)
    return summary
