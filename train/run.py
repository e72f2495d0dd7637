"""Setting up a run: folder, provenance, tokenizer, model, phases; then the loop; or the same from a checkpoint.

Under torchrun every rank runs this: rank 0 names the run folder and writes the files in it (config,
tokenizer, token shards) before the other ranks read them; any world size can resume any checkpoint.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import random
import subprocess
import time

import numpy as np
import torch

from model.gpt import GPT
from train import checkpoint, distributed
from train.config import ConfigError, RunConfig, from_dict, to_dict
from train.distributed import Dist
from train.loop import Interrupted, NumericalError, Trainer
from train.phases import Context, build_phases, task_eval, tokenizer_corpus
from train.report import RunLog, gpu_peak_flops
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


def peak_flops(device: torch.device) -> tuple[float, str]:
    """Peak FLOP/s for MFU: the datasheet bf16 figure for known GPUs, else a measured fp32 matmul."""
    if device.type == "cuda" and (flops := gpu_peak_flops(torch.cuda.get_device_name(device))):
        return flops, "datasheet bf16"
    a = torch.randn(1024, 1024, device=device)
    best = float("inf")
    for _ in range(6):  # best of several: the machine's capability, not its momentary load
        t0 = time.perf_counter()
        a @ a
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * 1024**3 / best, "measured 1024² fp32 matmul, best of 6"


def build_tokenizer(cfg: RunConfig, task: ArithmeticTask) -> Tokenizer:
    if cfg.tokenizer == "bpe":
        return Tokenizer.train(tokenizer_corpus(cfg, task), cfg.vocab_size)
    if cfg.tokenizer == "gpt2":
        return Tokenizer.gpt2()
    try:
        return Tokenizer.load(cfg.tokenizer)
    except FileNotFoundError as e:
        raise ConfigError(f"--tokenizer={cfg.tokenizer!r}: {e}; use bpe, gpt2 or a tokenizer.json path") from None


def run(cfg: RunConfig | None = None, resume: str | None = None) -> dict:
    """Train `cfg` in a new run folder, or continue the run in folder `resume` exactly where it stopped."""
    state = None
    if resume is not None:
        state = checkpoint.load(resume)  # first: a folder without a checkpoint is an error, not a new run
        with open(os.path.join(resume, "config.json")) as f:
            cfg = from_dict(json.load(f)["config"])
    dist = distributed.init(cfg.device, cfg.backend)
    together = False  # whether every rank leaves at the same point (see distributed.destroy)
    try:
        distributed.check_batch_sizes(cfg, dist.world_size)
        if resume is not None:
            out_dir = resume
        else:  # rank 0's clock names the folder
            out_dir = cfg.out or distributed.broadcast(
                os.path.join("runs", f"{cfg.preset}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"))
            if checkpoint.find(out_dir):
                raise ConfigError(f"{out_dir} already holds a run; continue it with --resume {out_dir} or pick --out")
            os.makedirs(out_dir, exist_ok=True)
        summary = _train(cfg, state, out_dir, dist)
        together = True
        return summary
    except (Interrupted, NumericalError):  # every rank stops after the same step, with one checkpoint
        together = True
        raise
    finally:
        distributed.destroy(together)


def _train(cfg: RunConfig, state: dict | None, out_dir: str, dist: Dist) -> dict:
    device = dist.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    task = ArithmeticTask(cfg.task.digits, cfg.task.ops, cfg.seed, cfg.task.direct)
    tok_path = os.path.join(out_dir, "tokenizer.json")
    with distributed.main_first(dist):  # rank 0 trains the tokenizer; the others read what it saved
        if state:
            tok = Tokenizer.loads(state["tokenizer"])
        else:
            tok = build_tokenizer(cfg, task) if dist.is_main else Tokenizer.load(tok_path)
        if dist.is_main:
            tok.save(tok_path)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=-(-tok.n_vocab // 64) * 64))

    model = GPT(cfg.model).to(device)
    ctx = Context(cfg, tok, task, out_dir, dist)
    with distributed.main_first(dist):  # user text is tokenized into a shard file once, by rank 0
        phases = build_phases(ctx)
    evaluators = {name: fn for p in phases for name, fn in p.evals.items()} | {"task": task_eval(ctx)}
    flops, flops_source = peak_flops(device)
    prov = provenance(device) | {"peak_flops": flops, "peak_flops_source": flops_source,
                                 "params": model.num_params(), "tokenizer_vocab": tok.n_vocab,
                                 "world_size": dist.world_size}
    if state is None and dist.is_main:
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump({"config": to_dict(cfg), "provenance": prov}, f, indent=2)

    trainer = Trainer(cfg, model, phases, evaluators, out_dir, {"tokenizer": tok.dumps()}, flops, dist)
    if state is not None:
        trainer.load_state_dict(state, state["loaded_from"])
    if dist.is_main:
        print(f"tritium | {'resuming ' + out_dir + ' at step ' + str(trainer.step) if state else 'run ' + out_dir}")
        print(" | ".join(f"{k} {v}" for k, v in prov.items()))
        print(f"preset {cfg.preset} | seed {cfg.seed} | model {model.num_params() / 1e6:.2f}M params "
              f"({cfg.model.n_layer}L d{cfg.model.n_embd} {cfg.model.n_head}h/{cfg.model.n_kv_head}kv) | "
              f"phases " + " → ".join(f"{p.name}({p.objective}, {p.steps})" for p in cfg.phases))
    log = RunLog(out_dir, trainer.total, to_dict(cfg), cfg.wandb, resume_step=trainer.step, main=dist.is_main)
    summary = trainer.run(log)
    log.finish(summary)
    return summary
