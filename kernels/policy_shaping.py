"""GRPO with off-policy demonstration rows: LUFFY's policy shaping (Yan et al. 2025, "Learning to Reason under
Off-Policy Guidance").

A rollout group may hold demonstrations next to the policy's samples (train/rollout.py, `grpo.demos`).
No old policy produced them, so there is no importance ratio to clip; LUFFY replaces the ratio of their
tokens by the shaping function f(p) = p / (p + γ) of the token's current probability p = exp(logp). With
`demo` (N,) bool marking those tokens and the symbols of kernels/grpo.py:

    on-policy token t:      loss_t = −min(ratio·A, clip(ratio, 1 − eps_low, 1 + eps_high)·A) + beta·kl_t
    demonstration token t:  loss_t = −f(p_t)·A,     f(p) = p / (p + γ)
    loss = Σ_t w_t · loss_t

    ∂loss/∂logp_t = −w_t · A · γ·p_t / (p_t + γ)²        (demonstration tokens; p_t = exp(logp_t))

the gradient flowing through p_t (LUFFY keeps it; f'(p)·p = γp/(p+γ)² is large for p ≪ 1: the shaping
raises the weight of the rare tokens of a demonstration that the policy would not have sampled). A
demonstration token has no KL term (k3 estimates the KL from samples of the policy, which it is not) and
never counts as clipped. With no demonstration token the loss is exactly kernels/grpo.py's.

Kernels: the loss is computed in two stages on every backend, as GSPO's sequence level is (kernels/grpo.py):
the log-probs (and entropies) through `linear_token_logprobs`, on "triton" the same fused kernel that scores
rollouts (so an on-policy token's first-pass ratio is still exactly 1), then this O(N) formula in PyTorch,
differentiable through logp; the log-prob head's backward recomputes each chunk's logits (8·N·d·V FLOPs).
"""
import torch

from kernels.grpo import grpo_loss_reference
from kernels.logprobs import linear_token_logprobs


def _demo_args(demo, gamma, like):
    if not isinstance(demo, torch.Tensor) or demo.dtype != torch.bool or demo.shape != like.shape:
        raise ValueError(f"demo must be a bool tensor of shape {tuple(like.shape)}, got "
                         f"{getattr(demo, 'dtype', type(demo).__name__)} of shape {tuple(getattr(demo, 'shape', ()))}")
    if demo.device != like.device:
        raise ValueError(f"demo must be on {like.device}, got {demo.device}")
    if not (isinstance(gamma, (int, float)) and gamma > 0 and gamma < float("inf")):
        raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")


def shaped_grpo_loss_reference(logp, old_logp, ref_logp, advantages, weights, demo, *, gamma, eps_low, eps_high,
                               beta, importance="token", seq_ids=None):
    """The loss of the module docstring from per-token log-probs (N,), differentiable in logp; importance
    "sequence" (GSPO) applies to the on-policy tokens. Returns (loss, GRPOStats) with entropy_sum None."""
    _demo_args(demo, gamma, logp)
    w = weights.float()
    on_w = torch.where(demo, torch.zeros_like(w), w)
    loss, stats = grpo_loss_reference(logp, old_logp, ref_logp, advantages, on_w, eps_low=eps_low,
                                      eps_high=eps_high, beta=beta, importance=importance, seq_ids=seq_ids)
    demo_w = torch.where(demo, w, torch.zeros_like(w))
    active = demo_w != 0  # inactive tokens get logp 0, A 0: nothing non-finite reaches the sum
    p = torch.exp(torch.where(active, logp.float(), torch.zeros_like(w)))
    adv = torch.where(active, advantages.float(), torch.zeros_like(w))
    loss = loss + (demo_w * (-(p / (p + gamma)) * adv)).sum()
    stats.tokens = stats.tokens + (demo_w > 0).sum().float()
    return loss, stats


def linear_shaped_grpo_loss(hidden, weight, target, old_logp, ref_logp, advantages, weights, demo, *, gamma,
                            temperature=1.0, eps_low=0.2, eps_high=0.2, beta=0.0, return_entropy=False,
                            importance="token", seq_ids=None, chunk_size=None, backend="auto"):
    """`linear_grpo_loss` (kernels/grpo.py) with the demonstration tokens `demo` (N,) shaped by
    f(p) = p / (p + gamma): the fused log-prob head, then the module docstring's formula."""
    _demo_args(demo, gamma, target)
    out = linear_token_logprobs(hidden, weight, target, temperature=temperature, return_entropy=return_entropy,
                                chunk_size=chunk_size, backend=backend)
    logp, ent = out if return_entropy else (out, None)
    loss, stats = shaped_grpo_loss_reference(logp, old_logp, ref_logp, advantages, weights, demo, gamma=gamma,
                                             eps_low=eps_low, eps_high=eps_high, beta=beta, importance=importance,
                                             seq_ids=seq_ids)
    if return_entropy:
        stats.entropy_sum = (ent.detach() * (weights > 0)).sum()
    return loss, stats
