"""The one training loop.

A run is a list of phases laid end to end on one step counter. Every step the loop looks up the phase that
owns the step, draws that phase's batch (a list of micro-batches), calls the phase's objective on each
micro-batch and adds up the gradients, clips, sets the phase's learning rate, steps AdamW, logs, and when
due evaluates and checkpoints. It never asks which kind of phase it is running: pretraining, SFT and RL
differ only in the source and objective they carry.

Gradient accumulation divides exactly once, inside the objective, by a count that covers the whole step
(see train/objectives.py), so the loop only sums.

Metrics: the objective's metrics are shares of the step's values, summed over micro-batches on the device
(in fp64); the source reports its own (a GRPO rollout's reward, lengths, ...) and they are logged beside.
The step reads its metrics, token count and gradient norm back to the host in one transfer; the few other
host syncs of a step are marked `host sync` here and in train/rollout.py.

Under torchrun (train/distributed.py) every rank runs this same loop on its share of each step's rows. The
objectives' counts cover the global step, so each rank's loss is its share of the global loss: gradients
are summed over ranks (once, on the last micro-batch; the others run under `no_sync`) and so are the
objective's metrics, which are shares too (one all-reduce). Clipping then sees the same gradients, hence the
same norm, on every rank. Rank 0 alone logs, evaluates (the others wait) and writes checkpoints.

Faults (train/faults.py): before each optimiser step the loop checks the step's loss and gradient norm. If
either is NaN or inf it skips the update (the batch is not retried: step counter, LR schedule and data
position move on), prints which tensor went bad, and counts the step (`skipped` in the log line, the phase
stats of train/phase_stats.py and summary.json); after `optim.max_bad_steps` such steps in a row it saves a
checkpoint and stops with NumericalError.

Interruption (train/signals.py): while `run` trains, a SIGINT or SIGTERM only takes note. The loop looks
after each whole step, saves a checkpoint, and raises Interrupted.
"""
from __future__ import annotations

import contextlib
import time

import torch

from model.gpt import GPT
from train import checkpoint, distributed, rundir
from train.config import RunConfig
from train.distributed import SINGLE, Dist
from train.faults import step_fault
from train.optim import lr_factor, make_optimizer
from train.phase_stats import count_step, phase_result
from train.phases import Phase
from train.report import RunLog
from train.signals import Interrupted, StopOnSignal


class NumericalError(RuntimeError):
    """Too many steps in a row with a NaN/inf loss or gradient (printed as one line by the CLI)."""


class Trainer:
    def __init__(self, cfg: RunConfig, model: GPT, phases: list[Phase], evaluators: dict, out_dir: str,
                 extra_state: dict, peak_flops: float | None, dist: Dist = SINGLE):
        self.cfg, self.model, self.phases, self.out_dir, self.dist = cfg, model, phases, out_dir, dist
        # the objectives call `self.ddp` (DDP's forward, so the backward sums gradients over ranks);
        # everything else gets the bare `self.model`
        self.ddp = distributed.DataParallel(model, dist)
        self.evaluators = evaluators  # name -> fn(model) -> metrics, run after every phase
        self.extra_state = extra_state  # saved verbatim in every checkpoint (tokenizer, provenance)
        self.peak_flops = peak_flops  # of one device
        self.device = next(model.parameters()).device
        self.opt = make_optimizer(model, cfg)
        self.step = 0
        self.total = phases[-1].end
        self.phase_results: list[dict] = []  # one per finished phase, for summary.json
        self.stats: dict[str, dict] = {}  # per phase so far: steps, tokens, seconds, last loss, skipped steps
        self.bad_steps = 0  # steps skipped in a row for a non-finite loss or gradient
        self.last_fault = ""  # what went bad in the last skipped step
        self.stop = StopOnSignal()  # notes a SIGINT/SIGTERM received while training
        self.saved_at = -1  # the step of the last checkpoint this process wrote
        self.elapsed_before = 0.0  # seconds of training before this process, up to the checkpoint it resumed
        self.started = time.time()
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
            "phase_results": self.phase_results,
            "stats": self.stats,
            "rng": checkpoint.rng_state(),
            "bad_steps": self.bad_steps,
            "elapsed": self.elapsed(),
            "identity": self.identity(),
            **self.extra_state,
        }

    def identity(self) -> dict:
        return checkpoint.identity(self.model.cfg, self.extra_state.get("tokenizer", ""))

    def load_state_dict(self, state: dict, source: str) -> None:
        checkpoint.check_identity(state, self.identity(), source)
        checkpoint.load_model_state(self.model, state["model"], source)
        self.opt.load_state_dict(state["optimizer"])
        self.step, self.phase_results, self.stats = state["step"], state["phase_results"], state["stats"]
        for p in self.phases:
            p.source.load_state_dict(state["sources"][p.cfg.name])
        checkpoint.set_rng_state(state["rng"])
        self.bad_steps = state["bad_steps"]
        self.elapsed_before = state.get("elapsed", 0.0)

    def elapsed(self) -> float:
        """Seconds of training of the whole run so far, across resumes (work redone after a resume counts once)."""
        return self.elapsed_before + time.time() - self.started

    def save(self, phase_end: str | None = None) -> None:
        """A checkpoint of the current step; `phase_end` (the phase's name) marks one that is never rotated out."""
        state = self.state_dict()  # on every rank: a GRPO rollout buffer is gathered from all of them
        if self.dist.is_main:
            checkpoint.save(self.out_dir, state, self.cfg.keep_checkpoints, phase_end)
        distributed.barrier()
        self.saved_at = self.step

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
        metrics, tokens, norm, grads = self._backward(phase, micro_batches)
        total_loss, grad_norm = metrics.pop("total_loss"), metrics.pop("grad_norm")
        metrics |= phase.source.metrics() | {"grad_norm": grad_norm}
        skipped = self._update(p, step_fault(total_loss, grad_norm, grads), norm)  # checked before any update
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # host sync: the step's time includes its queued kernels
        dt = time.perf_counter() - t0
        self.step += 1
        tok_s = tokens / dt  # over all ranks
        devices = self.dist.world_size
        mfu = self.flops_per_token * tok_s / (self.peak_flops * devices) if self.peak_flops else None
        return {"kind": "train", "phase": p.name, "step": self.step, "lr": lr, "ms": 1000 * dt,
                "tokens": tokens, "tok_s": tok_s, "mfu": mfu, "skipped": int(skipped), **metrics}

    def _update(self, p, fault: str | None, norm: torch.Tensor) -> bool:
        """Clip and step AdamW, unless something in the step was not finite (`fault`): then no update, but
        the step still counts, so the LR schedule and the data position move on. Whether it was skipped."""
        if fault is None:
            if self.cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grads_with_norm_(self.model.parameters(), self.cfg.optim.grad_clip, norm)
            self.opt.step()
            self.bad_steps = 0
        else:
            self.bad_steps += 1
            self.last_fault = f"{fault} at step {self.step + 1}"
            if self.dist.is_main:
                print(f"warning: phase {p.name}: {self.last_fault}; update skipped ({self.bad_steps} in a row; "
                      f"the run stops at {self.cfg.optim.max_bad_steps})", flush=True)
        self.opt.zero_grad(set_to_none=True)
        return fault is not None

    def _backward(self, phase: Phase, micro_batches: list) -> tuple[dict[str, float], int, torch.Tensor, list]:
        """Forward/backward of every micro-batch, gradients summed (over ranks on the last one). Returns the
        objective's metrics summed over micro-batches and ranks, with "total_loss" (the weighted loss the
        update used) and "grad_norm"; the step's tokens over all ranks; the gradient norm as a tensor (for
        the clip); and the (name, gradient) pairs."""
        sums: dict[str, torch.Tensor | float] = {}
        tokens = 0
        for n, b in enumerate(micro_batches):
            b = b.to(self.device)
            last = n == len(micro_batches) - 1
            with contextlib.nullcontext() if last else self.ddp.no_sync():  # the last backward sums over ranks
                with self.autocast():
                    loss, m = phase.objective(self.ddp, b)
                loss.backward()
            tokens += b.idx.numel()
            for k, v in {"total_loss": loss.detach(), **m}.items():  # fp64 sums, on the device
                sums[k] = sums.get(k, 0.0) + (v.detach().double() if isinstance(v, torch.Tensor) else float(v))
        names = list(sums)
        # every rank's shares: global values, in one all-reduce (every rank's objective reports the same names)
        totals = distributed.all_reduce(torch.stack(
            [torch.as_tensor(sums[k], dtype=torch.float64, device=self.device) for k in names]
            + [torch.tensor(float(tokens), dtype=torch.float64, device=self.device)]))
        # the norm and the clip as two calls (not clip_grad_norm_, which would spread a NaN over every
        # gradient and hide the parameter that went bad); the norm is taken even without clipping
        grads = [(name, q.grad) for name, q in self.model.named_parameters() if q.grad is not None]
        norm = torch.nn.utils.get_total_norm([g for _, g in grads])
        values = torch.cat([totals, norm.double().reshape(1)]).tolist()  # host sync: the step's one transfer
        return dict(zip(names, values)) | {"grad_norm": values[-1]}, int(values[-2]), norm, grads

    def evaluate(self, names: list[str], phase: str, log: RunLog) -> dict:
        """Every named held-out set, on rank 0 only (the other ranks wait); {} on the other ranks."""
        out = {}
        if self.dist.is_main:
            self.model.eval()
            with self.autocast():
                for name in names:
                    for k, v in self.evaluators[name](self.model).items():
                        out[f"{name}/{k}"] = v
            log.write({"kind": "eval", "phase": phase, "step": self.step, **out})
            log.eval_line(self.step, phase, out)
        distributed.barrier()
        return out

    def run(self, log: RunLog) -> dict:
        self.started = time.time()
        with self.stop:
            while self.step < self.total:
                phase = self.phase_at(self.step)
                self._run_step(phase, log)
                if self.bad_steps >= self.cfg.optim.max_bad_steps:
                    self._save_once()
                    raise NumericalError(
                        f"phase {phase.cfg.name}: {self.bad_steps} steps in a row had a non-finite loss or gradient "
                        f"(last: {self.last_fault}); saved a checkpoint at step {self.step} and stopped; check the "
                        f"data, or continue with a lower --optim.lr or a higher --optim.max_bad_steps: "
                        f"{rundir.resume_command(self.out_dir)} --optim.lr=...")
                if self.stop.asked():
                    self._save_once()
                    raise Interrupted(f"interrupted at step {self.step} (phase {phase.cfg.name}); continue with: "
                                      f"{rundir.resume_command(self.out_dir)}", self.stop.signum)
        return {"out": self.out_dir, "seconds": self.elapsed(), "phases": self.phase_results}

    def _run_step(self, phase: Phase, log: RunLog) -> None:
        """One step and its bookkeeping: stats, log line, and when due evaluation and a checkpoint."""
        record = self.train_step(phase)
        s = count_step(self.stats, phase.cfg.name, record)
        i = self.step - phase.start
        if self.step % self.cfg.log_every == 0 or self.step == phase.end:
            log.write(record)
            log.train_line(record)
        log.progress(self.step, phase.cfg.name)
        if self.step == phase.end:  # every held-out set, so the table shows what each phase gained and lost
            result = self.evaluate(list(self.evaluators), phase.cfg.name, log)
            self.phase_results.append(phase_result(phase, s, result))
            self.save(phase_end=phase.cfg.name)
        else:
            if phase.cfg.eval_every and i % phase.cfg.eval_every == 0:
                self.evaluate([n for n in (phase.cfg.name, "task") if n in self.evaluators], phase.cfg.name, log)
            if self.cfg.ckpt_every and self.step % self.cfg.ckpt_every == 0:
                self.save()

    def _save_once(self) -> None:
        if self.saved_at != self.step:
            self.save()

