"""The optimiser of a run and the learning-rate schedule of its phases.

AdamW with decoupled weight decay on the matrices only (never on the embedding table, norms have no
weights); fused on CUDA. Each phase has its own schedule over its own steps: a linear warm-up from 0 to its
peak (optim.lr × lr_scale), then a cosine, linear or constant decay to min_lr_ratio of the peak.
"""
from __future__ import annotations

import math

import torch

from model.gpt import GPT
from train.config import PhaseConfig, RunConfig


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
