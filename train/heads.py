"""Hidden states → LM head: the one sequence every loss of the training side runs.

forward → select the supervised positions → `lm_head.weight` → a fused head kernel (kernels/), which never
holds full-vocabulary logits for the whole batch. The objectives, the GRPO rollouts and the held-out
evaluation all call these, so a rollout's scoring and the training pass compute log-probs the same way.
"""
from __future__ import annotations

import torch

from kernels import linear_cross_entropy, linear_token_logprobs
from model.gpt import GPT
from train.data import IGNORE, Batch


def loss_backend(model: GPT) -> str:
    """The kernel switch for losses: the model's, with the attention-only "sdpa" meaning "auto"."""
    return "auto" if model.cfg.kernels == "sdpa" else model.cfg.kernels


def token_loss_sum(model: GPT, batch: Batch) -> torch.Tensor:
    """Σ over supervised positions of −log p(target), through the fused head + cross-entropy."""
    hidden = model(batch.idx, doc_ids=batch.doc_ids)  # (B, T, C)
    return linear_cross_entropy(
        hidden.flatten(0, 1), model.lm_head.weight, batch.targets.flatten(),
        ignore_index=IGNORE, reduction="sum", backend=loss_backend(model),
    )


def completion_logprobs(model: GPT, batch: Batch, temperature: float) -> torch.Tensor:
    """log p(completion token) at every supervised position of `batch`, 0 elsewhere: (B, T) fp32."""
    hidden = model(batch.idx, doc_ids=batch.doc_ids)
    sel = batch.targets != IGNORE
    out = torch.zeros(batch.targets.shape, dtype=torch.float32, device=hidden.device)
    out[sel] = linear_token_logprobs(hidden[sel], model.lm_head.weight, batch.targets[sel],
                                     temperature=temperature, backend=loss_backend(model))
    return out
