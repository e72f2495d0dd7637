"""Hidden states → LM head: the one sequence behind every loss and log-prob of the training side.

    forward (B, T, C) → the positions that have a target → `lm_head.weight` → a fused head kernel

The fused kernels (kernels/) never hold full-vocabulary logits for the whole batch. Objectives, GRPO
rollouts and held-out evaluation all go through these three functions, so a rollout scores log-probs
exactly as the training pass recomputes them (the GRPO ratio is 1 on the first pass).

`backend` is the run's `model.kernels` switch, handed down from the config by whoever built the caller
(train/kind.py: `Context.kernels`); the kernels read "sdpa" as "auto" (kernels/_dispatch.py). `model` may be
the data-parallel wrapper (train/distributed.py), whose call runs DDP's forward and whose `lm_head` is the
bare module's.
"""
from __future__ import annotations

import torch

from kernels import linear_cross_entropy, linear_grpo_loss, linear_token_logprobs
from kernels.grpo import GRPOStats
from kernels.policy_shaping import linear_shaped_grpo_loss
from train.data import IGNORE, Batch


def next_token_losses(model, batch: Batch, backend: str, reduction: str = "sum") -> torch.Tensor:
    """−log p(target) of every position, 0 where the target is IGNORE: (B·T,) fp32 with reduction="none",
    else their sum. Every position goes through the head; ignore_index masks the unsupervised ones."""
    hidden = model(batch.idx, doc_ids=batch.doc_ids)  # (B, T, C)
    return linear_cross_entropy(hidden.flatten(0, 1), model.lm_head.weight, batch.targets.flatten(),
                                ignore_index=IGNORE, reduction=reduction, backend=backend)


def completion_logprobs(model, batch: Batch, temperature: float, backend: str) -> torch.Tensor:
    """log softmax(logits / temperature)[target] at every position with a target, 0 elsewhere: (B, T) fp32."""
    hidden = model(batch.idx, doc_ids=batch.doc_ids)
    sel = batch.targets != IGNORE  # (B, T): the completion tokens
    out = torch.zeros(batch.targets.shape, dtype=torch.float32, device=hidden.device)
    out[sel] = linear_token_logprobs(hidden[sel], model.lm_head.weight, batch.targets[sel],
                                     temperature=temperature, backend=backend)
    return out


def policy_objective(model, batch, *, kl: bool, **options) -> tuple[torch.Tensor, dict]:
    """`policy_loss(model, batch, **options)` and the step metrics of a policy-gradient objective, on the device
    in fp64 (the loop reads a step's metrics back at once): each a share of the whole step's supervised tokens,
    so the micro-batches' shares add up to step means; the KL's when `kl`."""
    loss, st = policy_loss(model, batch, **options)
    n = max(batch.normaliser, 1.0)
    metrics = {"loss": loss.detach()}
    if kl:
        metrics["kl"] = 0.0 if st.kl_sum is None else st.kl_sum.double() / n
    metrics |= {"clip": (st.low_clipped + st.high_clipped).double() / n, "entropy": st.entropy_sum.double() / n}
    return loss, metrics


def policy_loss(model, batch, *, temperature: float, eps_low: float, eps_high: float, beta: float,
                backend: str, importance: str = "token", gamma: float = 0.1) -> tuple[torch.Tensor, GRPOStats]:
    """The clipped GRPO loss (with k3 KL when beta > 0) over the completion tokens of a rollout micro-batch,
    weighted by its token weights, and the kernel's statistics (KL, clipped and entropy sums). importance
    "sequence" (GSPO) gives each row's completion one ratio (kernels/grpo.py). A batch with demonstration
    rows (`batch.demo`) shapes their tokens by p / (p + gamma) instead (kernels/policy_shaping.py)."""
    hidden = model(batch.idx, doc_ids=batch.doc_ids)
    sel = batch.targets != IGNORE
    seq_ids = None
    if importance == "sequence":  # the row of each selected token, renumbered 0.. over rows that have one
        first = sel & (sel.cumsum(dim=1) == 1)  # (B, T): each row's first completion token
        seq_ids = first[sel].cumsum(0) - 1

    def at(t: torch.Tensor | None):
        return None if t is None else t[sel]

    args = (hidden[sel], model.lm_head.weight, batch.targets[sel], at(batch.old_logp), at(batch.ref_logp),
            at(batch.advantages), at(batch.weights))
    options = dict(temperature=temperature, eps_low=eps_low, eps_high=eps_high, beta=beta, return_entropy=True,
                   importance=importance, seq_ids=seq_ids, backend=backend)
    demo = getattr(batch, "demo", None)
    if demo is not None:
        return linear_shaped_grpo_loss(*args, demo[:, None].expand_as(sel)[sel], gamma=gamma, **options)
    return linear_grpo_loss(*args, **options)
