"""The one training loop.

A run is a list of phases laid end to end on one step counter. Every step the loop looks up the phase that
owns the step, draws that phase's batch (a list of micro-batches), calls the phase's objective on each
micro-batch and adds up the gradients, clips, sets the phase's learning rate, steps AdamW, logs, and when
due evaluates and checkpoints. It never asks which kind of phase it is running: pretraining, SFT and RL
differ only in the source and objective they carry.

Gradient accumulation divides exactly once, inside the objective, by a count that covers the whole step
(see train/objectives.py), so the loop only sums.
"""
from __future__ import annotations

import contextlib
import math
import time

import torch

from model.gpt import GPT
from train import checkpoint
from train.config import PhaseConfig, RunConfig
from train.phases import Phase
from train.report import RunLog


def lr_factor(p: PhaseConfig, i: int) -> float:
    """Multiplier of the phase's peak LR at its step i: linear warm-up, then decay to min_lr_ratio."""
    if i < p.warmup_steps:
        return (i + 1) / p.warmup_steps
    if p.decay == "constant":
        return 1.0
    frac = (i - p.warmup_steps) / max(1, p.steps - p.warmup_steps)
    shape = 0.5 * (1 + math.cos(math.pi * frac)) if p.decay == "cosine" else 1 - frac
    return p.min_lr_ratio + (1 - p.min_lr_ratio) * shape


def make_optimizer(model: GPT, cfg: RunConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on the embedding table)."""
    o = cfg.optim
    matrices = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("wte")]
    others = [p for n, p in model.named_parameters() if p.dim() < 2 or n.startswith("wte")]
    groups = [{"params": matrices, "weight_decay": o.weight_decay}, {"params": others, "weight_decay": 0.0}]
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused)


class Trainer:
    def __init__(self, cfg: RunConfig, model: GPT, phases: list[Phase], evaluators: dict, out_dir: str,
                 extra_state: dict, peak_flops: float | None):
        self.cfg, self.model, self.phases, self.out_dir = cfg, model, phases, out_dir
        self.evaluators = evaluators  # name -> fn(model) -> metrics, run after every phase
        self.extra_state = extra_state  # saved verbatim in every checkpoint (tokenizer, provenance)
        self.peak_flops = peak_flops
        self.device = next(model.parameters()).device
        self.opt = make_optimizer(model, cfg)
        self.step = 0
        self.total = phases[-1].end
        self.phase_results: list[dict] = []  # one per finished phase, for summary.json
        self.stats: dict[str, dict] = {}  # per phase so far: steps, tokens, seconds, last loss
        self.flops_per_token = model.flops_per_token()
        bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and self.device.type == "cuda")
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
        )

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "sources": {p.cfg.name: p.source.state_dict() for p in self.phases},
            "objectives": {p.cfg.name: _state(p.objective) for p in self.phases},
            "phase_results": self.phase_results,
            "stats": self.stats,
            "rng": checkpoint.rng_state(),
            **self.extra_state,
        }

    def load_state_dict(self, state: dict, source: str) -> None:
        checkpoint.load_model_state(self.model, state["model"], source)
        self.opt.load_state_dict(state["optimizer"])
        self.step, self.phase_results, self.stats = state["step"], state["phase_results"], state["stats"]
        for p in self.phases:
            p.source.load_state_dict(state["sources"][p.cfg.name])
            if hasattr(p.objective, "load_state_dict"):
                p.objective.load_state_dict(state["objectives"][p.cfg.name])
        checkpoint.set_rng_state(state["rng"])

    def save(self) -> None:
        checkpoint.save(self.out_dir, self.state_dict())

    # ------------------------------------------------------------------------------------------ the loop
    def phase_at(self, step: int) -> Phase:
        return next(p for p in self.phases if p.start <= step < p.end)

    def train_step(self, phase: Phase) -> dict:
        """One optimiser step of `phase`: draw, forward/backward every micro-batch, clip, step."""
        p, i = phase.cfg, self.step - phase.start
        if i == 0 and p.reset_optimizer:
            self.opt.state.clear()
        lr = self.cfg.optim.lr * p.lr_scale * lr_factor(p, i)
        for g in self.opt.param_groups:
            g["lr"] = lr
        t0 = time.perf_counter()
        self.model.train()
        with self.autocast():  # RL sources sample from the model
            micro_batches = phase.source.next_step(p.batch_size, p.micro_batch_size, self.model)
        metrics: dict[str, float] = {}
        tokens = 0
        for b in micro_batches:
            b = b.to(self.device)
            with self.autocast():
                loss, m = phase.objective(self.model, b)
            loss.backward()
            tokens += b.idx.numel()
            for k, v in m.items():
                metrics[k] = metrics.get(k, 0.0) + float(v)
        if self.cfg.optim.grad_clip > 0:
            metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        self.step += 1
        tok_s = tokens / dt
        mfu = self.flops_per_token * tok_s / self.peak_flops if self.peak_flops else None
        return {"kind": "train", "phase": p.name, "step": self.step, "lr": lr, "ms": 1000 * dt,
                "tokens": tokens, "tok_s": tok_s, "mfu": mfu, **metrics}

    def evaluate(self, names: list[str], phase: str, log: RunLog) -> dict:
        self.model.eval()
        out = {}
        with self.autocast():
            for name in names:
                for k, v in self.evaluators[name](self.model).items():
                    out[f"{name}/{k}"] = v
        log.write({"kind": "eval", "phase": phase, "step": self.step, **out})
        log.eval_line(self.step, phase, out)
        return out

    def run(self, log: RunLog) -> dict:
        started = time.time()
        while self.step < self.total:
            phase = self.phase_at(self.step)
            record = self.train_step(phase)
            s = self.stats.setdefault(phase.cfg.name, {"steps": 0, "tokens": 0, "seconds": 0.0})
            s["steps"] += 1
            s["tokens"] += record["tokens"]
            s["seconds"] += record["ms"] / 1000
            s["final_loss"] = record["loss"]
            i = self.step - phase.start
            if self.step % self.cfg.log_every == 0 or self.step == phase.end:
                log.write(record)
                log.train_line(record)
            log.progress(self.step, phase.cfg.name)
            if self.step == phase.end:  # every held-out set, so the table shows what each phase gained and lost
                result = self.evaluate(list(self.evaluators), phase.cfg.name, log)
                self.phase_results.append(_phase_result(phase, s, result))
                self.save()
            else:
                if phase.cfg.eval_every and i % phase.cfg.eval_every == 0:
                    self.evaluate([n for n in (phase.cfg.name, "task") if n in self.evaluators], phase.cfg.name, log)
                if self.cfg.ckpt_every and self.step % self.cfg.ckpt_every == 0:
                    self.save()
        return {"out": self.out_dir, "seconds": time.time() - started, "phases": self.phase_results}


def _state(objective) -> dict:
    return objective.state_dict() if hasattr(objective, "state_dict") else {}


def _phase_result(phase: Phase, s: dict, evals: dict) -> dict:
    return {
        "name": phase.cfg.name, "objective": phase.cfg.objective, "steps": phase.cfg.steps,
        "tokens": s["tokens"], "seconds": s["seconds"], "tok_s": s["tokens"] / max(s["seconds"], 1e-9),
        "final_loss": s["final_loss"], "eval": evals,
    }
