"""Objectives: `objective(model, batch) -> (loss, metrics)`, one per kind of phase.

Normalisation contract: an objective divides by a count that covers the whole optimiser step (carried in
the batch), never by anything local to the micro-batch. The loop only adds the micro-batch gradients, so
the step's gradient is the same however the step is split. Metrics follow the same rule: each value is the
micro-batch's share of the step value, so the loop sums them over micro-batches.
"""
from __future__ import annotations

import torch

from kernels import linear_cross_entropy
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


class NextTokenLoss:
    """Next-token cross-entropy, summed over supervised tokens and divided by the step's supervised count.

    Used for pretraining (every token supervised) and SFT (assistant tokens only: the data source masks
    the rest), so an SFT loss is normalised by the supervised tokens of the whole accumulated step.
    """

    def __call__(self, model: GPT, batch: Batch):
        loss = token_loss_sum(model, batch) / batch.normaliser
        return loss, {"loss": loss.detach()}


def make_objective(p):
    from train.rl import GRPOObjective

    return GRPOObjective(p) if p.objective == "grpo" else NextTokenLoss()
