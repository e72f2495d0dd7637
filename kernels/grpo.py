"""GRPO: group-relative advantages, token weights, and the clipped policy loss (fused with the LM head).

Advantages. Rewards r (P·G,) are laid out group-major: completions of prompt p are rows p·G .. p·G+G−1.
Per group: mean μ_p = Σ_g r / G; unbiased (Bessel) std σ_p = sqrt(Σ_g (r − μ)² / (G − 1)), defined as 0
when G = 1; and

    A = (r − μ) / (max(σ, std_floor) + eps)      scale_std=True   (GRPO)
    A =  r − μ                                    scale_std=False  (Dr. GRPO)

A group whose rewards are all equal (zero_var, always true for G = 1) gets exactly A = 0: no NaN and no
rounding residue of r − μ blown up by a tiny σ. Otherwise |A| < sqrt(G − 1), so nothing is huge either.
Triton: one program per group.

Token weights. Every aggregation is written as loss = Σ_t w_t · loss_t, so the loss of a batch is the sum
of the losses of its micro-batches when each uses the whole-batch totals. With m (B, L) the completion mask
of this micro-batch, S = num_sequences and T = num_tokens over the whole optimisation batch (every
micro-batch and rank), len_i = Σ_t m_it, and max_len the configured maximum completion length:

    grpo:         w_it = m_it / (len_i · S)       (rows with len_i = 0 weigh 0)
    bnpo, dapo:   w_it = m_it / T
    dr_grpo:      w_it = m_it / (S · max_len)

Policy loss, per token t (rows flattened, N = B·L, or only the completion rows), with z = logits / temperature:

    logp    = z_t − logsumexp(z)          (fp32, kernels.logprobs; the same path that scores rollouts)
    ratio   = exp(logp − old_logp)        (old_logp None: on-policy, old_logp = logp detached, ratio 1)
    surr    = min(ratio·A, clamp(ratio, 1 − eps_low, 1 + eps_high)·A)
    kl      = exp(ref − logp) − (ref − logp) − 1          (k3, ≥ 0; only when ref_logp is given)
    loss_t  = −surr + beta·kl
    loss    = Σ_t w_t · loss_t

    ∂loss/∂logp_t = w_t · (−A·ratio·[unclipped] + beta·(1 − exp(ref − logp)))

where the branch is clipped (gradient 0) exactly when A < 0 and ratio < 1 − eps_low, or A > 0 and
ratio > 1 + eps_high (strict inequalities). At ratio exactly on a bound both branches are equal and the
gradient is the full −A·ratio: this is also what autograd gives through torch.min and torch.clamp (ties
split the gradient in half, clamp passes it at its bounds, and the halves add up). Then through the
log-softmax into the logits (kernels.logprobs backward, with g = ∂loss/∂logp) and, in `linear_grpo_loss`,
into hidden and the head weight. old_logp, ref_logp, advantages and weights are constants (no gradient).
Tokens with weight 0 contribute nothing, whatever their inputs hold (no inf·0). A negative target is ignored
(logp 0); a target ≥ V is a ValueError, as are bad shapes, dtypes and devices (`kernels._checks`).

Memory and work. `grpo_loss` keeps the logits, the lse (N,) and ∂loss/∂logp (N,) for backward.
`linear_grpo_loss` never forms the (N, V) logits: per chunk of rows it computes logits = hidden_c @ Wᵀ,
the log-probs, the per-token loss and its gradient, overwrites the chunk's logits with ∂loss/∂logits, and
pushes them through the head right away, so backward only scales the stored ∂hidden, ∂W by the upstream
scalar: three matmuls (6·N·d·V FLOPs) in all, peak memory flat in N.

Stats (detached fp32 scalars, summed over tokens with w > 0, so that micro-batches and ranks add them up):
tokens (count), kl_sum (Σ kl; None without ref_logp), low_clipped / high_clipped (counts of tokens whose
clipped branch is active as defined above), entropy_sum (Σ entropy of the temperature-scaled
distribution; None unless return_entropy).
"""
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels._checks import LOSS_TYPES, group_advantages_args, grpo_loss_args, linear_grpo_loss_args, \
    token_weights_args
from kernels._dispatch import use_triton
from kernels._head import addmm_fp32_, default_chunk_size
from kernels.logprobs import autocast_inputs, token_logprobs_bwd, token_logprobs_fwd, token_logprobs_reference


@dataclass
class GroupAdvantages:
    advantages: Tensor               # (P·G,) fp32
    token_advantages: Tensor | None  # (P·G, L) fp32: advantages where completion_mask, 0 elsewhere
    mean: Tensor                     # (P,) fp32 group mean reward
    std: Tensor                      # (P,) fp32 unbiased group std (0 for G == 1), before the floor
    zero_var: Tensor                 # (P,) bool: every reward in the group equal


@dataclass
class GRPOStats:
    tokens: Tensor               # number of tokens with weight > 0
    kl_sum: Tensor | None        # Σ kl over those tokens (None without ref_logp)
    low_clipped: Tensor          # tokens with A < 0 and ratio < 1 − eps_low
    high_clipped: Tensor         # tokens with A > 0 and ratio > 1 + eps_high
    entropy_sum: Tensor | None   # Σ entropy over those tokens (None unless asked)


# ----------------------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------------------
def group_advantages_reference(rewards, group_size, *, scale_std=True, std_floor=0.0, eps=1e-4):
    """fp32 PyTorch advantages. Returns (advantages (P·G,), mean (P,), std (P,), zero_var (P,))."""
    r = rewards.float().view(-1, group_size)                              # (P, G)
    mean = r.mean(dim=1)                                                  # (P,)
    std = r.std(dim=1) if group_size > 1 else torch.zeros_like(mean)      # (P,)  Bessel-corrected
    zero_var = (r == r[:, :1]).all(dim=1)                                 # (P,)
    adv = r - mean[:, None]
    if scale_std:
        adv = adv / (std.clamp_min(std_floor) + eps)[:, None]
    adv = torch.where(zero_var[:, None], torch.zeros_like(adv), adv)
    return adv.reshape(-1), mean, std, zero_var


def grpo_loss_reference(logp, old_logp, ref_logp, advantages, weights, *, eps_low, eps_high, beta):
    """fp32 PyTorch GRPO loss Σ_t w_t·loss_t from per-token log-probs; differentiable in logp.
    Returns (loss, GRPOStats) with entropy_sum None."""
    if ref_logp is None and beta != 0:
        raise ValueError(f"beta={beta} needs ref_logp")
    logp = logp.float()
    w = weights.float()
    active = w != 0
    # inactive tokens get inputs that make every term finite (ratio 1, kl 0), so no inf·0 reaches the sum
    old = logp.detach() if old_logp is None else torch.where(active, old_logp.float(), logp.detach())
    adv = torch.where(active, advantages.float(), torch.zeros_like(w))
    ratio = torch.exp(logp - old)
    surr = torch.min(ratio * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)
    loss_t = -surr
    kl_sum = None
    counted = w > 0
    if ref_logp is not None:
        delta = torch.where(active, ref_logp.float(), logp.detach()) - logp
        kl = torch.exp(delta) - delta - 1
        if beta != 0:
            loss_t = loss_t + beta * kl
        kl_sum = (kl.detach() * counted).sum()
    loss = (w * loss_t).sum()
    stats = GRPOStats(
        tokens=counted.sum().float(),
        kl_sum=kl_sum,
        low_clipped=(counted & (ratio.detach() < 1 - eps_low) & (adv < 0)).sum().float(),
        high_clipped=(counted & (ratio.detach() > 1 + eps_high) & (adv > 0)).sum().float(),
        entropy_sum=None,
    )
    return loss, stats


# ----------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------
@triton.jit
def _group_advantages_kernel(
    # pointers
    rewards_ptr, adv_ptr, mean_ptr, std_ptr, zero_var_ptr,
    # sizes and scalars
    G, inv_bessel, std_floor, eps,  # inv_bessel = 1 / (G − 1), or 0 for G = 1 (σ := 0)
    # meta-parameters
    BLOCK_G: tl.constexpr, SCALE_STD: tl.constexpr,
):
    p = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_G)
    mask = offs < G
    r = tl.load(rewards_ptr + p * G + offs, mask=mask, other=0.0).to(tl.float32)
    # 1. mean, then the Bessel-corrected variance from centred values (two passes over registers)
    mean = tl.sum(r, axis=0) / G
    d = tl.where(mask, r - mean, 0.0)
    std = tl.sqrt(tl.sum(d * d, axis=0) * inv_bessel)
    # 2. all rewards equal ⇔ max == min; such groups get exactly 0, not rounding residue / (σ + eps)
    zero_var = tl.max(tl.where(mask, r, -float("inf")), axis=0) == tl.min(tl.where(mask, r, float("inf")), axis=0)
    if SCALE_STD:
        d = d / (tl.maximum(std, std_floor) + eps)
    d = tl.where(zero_var, 0.0, d)
    tl.store(adv_ptr + p * G + offs, d, mask=mask)
    tl.store(mean_ptr + p, mean)
    tl.store(std_ptr + p, std)
    tl.store(zero_var_ptr + p, zero_var.to(tl.int8))


@triton.jit
def _grpo_fwd_kernel(
    # pointers
    logp_ptr, old_ptr, ref_ptr, adv_ptr, w_ptr, ent_ptr, dlogp_ptr, partial_ptr,
    # sizes and scalars
    N, lo, hi, beta,  # lo = 1 − eps_low, hi = 1 + eps_high, each rounded once to fp32 as torch.clamp does
    # meta-parameters
    BLOCK: tl.constexpr, HAS_REF: tl.constexpr, HAS_ENTROPY: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    active = w != 0
    logp = tl.load(logp_ptr + offs, mask=mask, other=0.0)
    # inactive tokens: ratio 1, kl 0, A 0, so nothing non-finite reaches the sums
    old = tl.where(active, tl.load(old_ptr + offs, mask=mask, other=0.0).to(tl.float32), logp)
    adv = tl.where(active, tl.load(adv_ptr + offs, mask=mask, other=0.0).to(tl.float32), 0.0)
    # 1. ratio and the clipped surrogate
    ratio = tl.exp(logp - old)
    surr = tl.minimum(ratio * adv, tl.minimum(tl.maximum(ratio, lo), hi) * adv)
    # 2. the clipped branch is the strict min (gradient 0) only past a bound in the advantage's direction
    low = (ratio < lo) & (adv < 0)
    high = (ratio > hi) & (adv > 0)
    loss_t = -surr
    dloss_t = tl.where(low | high, 0.0, -adv * ratio)
    counted = mask & (w > 0)
    # 3. k3 KL to the reference and its gradient β(1 − exp(ref − logp))
    kl_sum = 0.0
    if HAS_REF:
        ref = tl.where(active, tl.load(ref_ptr + offs, mask=mask, other=0.0).to(tl.float32), logp)
        e = tl.exp(ref - logp)
        kl = e - (ref - logp) - 1.0
        loss_t += beta * kl
        dloss_t += beta * (1.0 - e)
        kl_sum = tl.sum(tl.where(counted, kl, 0.0), axis=0)
    # 4. weight; per-block partial sums (summed by the launcher in a fixed order: deterministic)
    tl.store(dlogp_ptr + offs, tl.where(active, w * dloss_t, 0.0), mask=mask)
    part = partial_ptr + pid * 6
    tl.store(part + 0, tl.sum(tl.where(active, w * loss_t, 0.0), axis=0))
    tl.store(part + 1, tl.sum(counted.to(tl.float32), axis=0))
    tl.store(part + 2, kl_sum)
    tl.store(part + 3, tl.sum((counted & low).to(tl.float32), axis=0))
    tl.store(part + 4, tl.sum((counted & high).to(tl.float32), axis=0))
    if HAS_ENTROPY:
        ent = tl.load(ent_ptr + offs, mask=mask, other=0.0)
        tl.store(part + 5, tl.sum(tl.where(counted, ent, 0.0), axis=0))
    else:
        tl.store(part + 5, 0.0)


# ----------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------
def _interpreting():
    return os.environ.get("TRITON_INTERPRET") == "1"


def group_advantages_fwd(rewards, group_size, scale_std=True, std_floor=0.0, eps=1e-4):
    """Launch one program per group. Returns (advantages (P·G,), mean (P,), std (P,), zero_var (P,) bool)."""
    rewards = rewards.contiguous()
    P = rewards.numel() // group_size
    dev = rewards.device
    adv = torch.empty(rewards.numel(), dtype=torch.float32, device=dev)
    mean = torch.empty(P, dtype=torch.float32, device=dev)
    std = torch.empty(P, dtype=torch.float32, device=dev)
    zero_var = torch.empty(P, dtype=torch.int8, device=dev)
    if P > 0:
        _group_advantages_kernel[(P,)](
            rewards, adv, mean, std, zero_var, group_size, 1.0 / (group_size - 1) if group_size > 1 else 0.0,
            float(std_floor), float(eps),
            BLOCK_G=triton.next_power_of_2(group_size), SCALE_STD=scale_std, num_warps=1 if group_size <= 128 else 4,
        )
    return adv, mean, std, zero_var.bool()


def _check_tokens(N, **tensors):
    for name, t in tensors.items():
        if t is not None and t.shape != (N,):
            raise ValueError(f"{name} must have one value per token, ({N},), got shape {tuple(t.shape)}")


def grpo_fwd(logp, old_logp, ref_logp, advantages, weights, eps_low, eps_high, beta, entropy=None):
    """Per-token GRPO math over fp32 logp (N,). Returns (loss, dlogp (N,) = ∂loss/∂logp, stats (6,) fp32:
    [loss, tokens, kl_sum, low_clipped, high_clipped, entropy_sum])."""
    N = logp.shape[0]
    _check_tokens(N, old_logp=old_logp, ref_logp=ref_logp, advantages=advantages, weights=weights, entropy=entropy)
    if ref_logp is None and beta != 0:
        raise ValueError(f"beta={beta} needs ref_logp")
    BLOCK = 64 if _interpreting() else 1024
    n_blocks = max(1, triton.cdiv(N, BLOCK))
    dlogp = torch.empty(N, dtype=torch.float32, device=logp.device)
    partial = torch.zeros(n_blocks, 6, dtype=torch.float32, device=logp.device)
    if N > 0:
        c = lambda t: None if t is None else t.contiguous()  # noqa: E731
        _grpo_fwd_kernel[(n_blocks,)](
            logp.contiguous(), c(old_logp) if old_logp is not None else logp,
            c(ref_logp) if ref_logp is not None else logp, c(advantages),
            c(weights), c(entropy) if entropy is not None else logp, dlogp, partial,
            N, 1.0 - eps_low, 1.0 + eps_high, float(beta),
            BLOCK=BLOCK, HAS_REF=ref_logp is not None, HAS_ENTROPY=entropy is not None, num_warps=4,
        )
    sums = partial.sum(dim=0)                                             # (6,)
    return sums[0], dlogp, sums


def _stats(sums, has_ref, has_entropy):
    return GRPOStats(tokens=sums[1], kl_sum=sums[2] if has_ref else None, low_clipped=sums[3],
                     high_clipped=sums[4], entropy_sum=sums[5] if has_entropy else None)


def linear_grpo_fwd(hidden, weight, target, old_logp, ref_logp, advantages, weights, temperature, eps_low,
                    eps_high, beta, return_entropy, chunk_size, need_hidden, need_weight):
    """The fused head: per chunk of rows, logits → logp → loss and ∂loss/∂logp → ∂logits (in place) →
    ∂hidden, ∂weight. Returns (loss, sums (6,), ∂hidden or None, ∂weight or None)."""
    N, d = hidden.shape
    V = weight.shape[0]
    if weight.shape[1] != d or target.shape != (N,):
        raise ValueError(f"hidden (N, d), weight (V, d), target (N,): got {tuple(hidden.shape)}, "
                         f"{tuple(weight.shape)}, {tuple(target.shape)}")
    _check_tokens(N, old_logp=old_logp, ref_logp=ref_logp, advantages=advantages, weights=weights)
    chunk = chunk_size or default_chunk_size(N, V, hidden.dtype)  # linear_token_logprobs' rule: same bits
    sums = torch.zeros(6, dtype=torch.float32, device=hidden.device)
    dhidden = torch.empty_like(hidden) if need_hidden else None
    dweight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
    buf = torch.empty(min(chunk, N), V, dtype=hidden.dtype, device=hidden.device)  # the only logits
    sl = lambda t, a, b: None if t is None else t[a:b]  # noqa: E731
    for n0 in range(0, N, chunk):
        n1 = min(n0 + chunk, N)
        logits = torch.mm(hidden[n0:n1], weight.t(), out=buf[:n1 - n0])   # (c, V) in the input dtype
        logp, lse, ent = token_logprobs_fwd(logits, target[n0:n1], temperature, return_entropy)
        _, dlogp, part = grpo_fwd(logp, sl(old_logp, n0, n1), sl(ref_logp, n0, n1), advantages[n0:n1],
                                  weights[n0:n1], eps_low, eps_high, beta, ent)
        sums += part
        if need_hidden or need_weight:
            dlogits = token_logprobs_bwd(logits, target[n0:n1], lse, dlogp, temperature, out=logits)
            if need_hidden:
                torch.mm(dlogits, weight, out=dhidden[n0:n1])              # (c, d)
            if need_weight:
                addmm_fp32_(dweight, dlogits.t(), hidden[n0:n1])          # (V, d) += dlogits_cᵀ hidden_c
    return sums[0], sums, dhidden, None if dweight is None else dweight.to(weight.dtype)


# ----------------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------------
class _GRPOLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, old_logp, ref_logp, advantages, weights, temperature, eps_low, eps_high,
                beta, return_entropy):
        logp, lse, ent = token_logprobs_fwd(logits, target, temperature, return_entropy)
        loss, dlogp, sums = grpo_fwd(logp, old_logp, ref_logp, advantages, weights, eps_low, eps_high, beta, ent)
        ctx.save_for_backward(logits, target, lse, dlogp)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(sums)
        return loss.clone(), sums  # the loss must not be a view of the non-differentiable sums

    @staticmethod
    def backward(ctx, dloss, _dsums):
        logits, target, lse, dlogp = ctx.saved_tensors
        dlogits = token_logprobs_bwd(logits, target, lse, dlogp * dloss, ctx.temperature)
        return dlogits, *([None] * 10)


class _LinearGRPOLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, target, old_logp, ref_logp, advantages, weights, temperature, eps_low,
                eps_high, beta, return_entropy, chunk_size):
        loss, sums, dhidden, dweight = linear_grpo_fwd(
            hidden, weight, target, old_logp, ref_logp, advantages, weights, temperature, eps_low, eps_high,
            beta, return_entropy, chunk_size, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        ctx.save_for_backward(dhidden, dweight)  # the gradients, already computed: nothing else is kept
        ctx.mark_non_differentiable(sums)
        return loss.clone(), sums

    @staticmethod
    def backward(ctx, dloss, _dsums):
        dhidden, dweight = ctx.saved_tensors
        return (None if dhidden is None else dhidden * dloss.to(dhidden.dtype),
                None if dweight is None else dweight * dloss.to(dweight.dtype), *([None] * 11))


# ----------------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------------
def group_advantages(rewards, group_size: int, *, scale_std: bool = True, std_floor: float = 0.0,
                     eps: float = 1e-4, completion_mask=None, backend: str = "auto") -> GroupAdvantages:
    """Group-relative advantages of group-major rewards (P·G,); see the module docstring for the formula.
    With completion_mask (P·G, L), token_advantages broadcasts each advantage over its completion tokens."""
    group_advantages_args(rewards, group_size, completion_mask)
    if use_triton(backend, rewards):
        adv, mean, std, zero_var = group_advantages_fwd(rewards, group_size, scale_std, std_floor, eps)
    else:
        adv, mean, std, zero_var = group_advantages_reference(rewards, group_size, scale_std=scale_std,
                                                              std_floor=std_floor, eps=eps)
    token_adv = None
    if completion_mask is not None:
        token_adv = torch.where(completion_mask.bool(), adv[:, None], torch.zeros((), device=adv.device))
    return GroupAdvantages(advantages=adv, token_advantages=token_adv, mean=mean, std=std, zero_var=zero_var)


def grpo_token_weights(mask, loss_type: str, *, num_sequences: int, num_tokens: int, max_len: int) -> Tensor:
    """fp32 weights (B, L) with loss = Σ w·loss_t for `loss_type` in LOSS_TYPES (see the module docstring).
    num_sequences and num_tokens are whole-batch totals (ints or 0-dim tensors); a zero total gives zero
    weights, not NaN."""
    token_weights_args(mask, loss_type, num_sequences, num_tokens, max_len)
    m = mask.float()                                                      # (B, L)
    total = lambda x: torch.as_tensor(x, dtype=torch.float32, device=m.device).clamp_min(1)  # noqa: E731
    if loss_type == "grpo":
        length = m.sum(dim=1, keepdim=True)                               # (B, 1)
        return m / (length.clamp_min(1) * total(num_sequences))
    if loss_type in ("bnpo", "dapo"):
        return m / total(num_tokens)
    return m / (total(num_sequences) * max_len)


def grpo_loss(logits, target, old_logp, ref_logp, advantages, weights, *, temperature: float = 1.0,
              eps_low: float = 0.2, eps_high: float = 0.2, beta: float = 0.0, return_entropy: bool = False,
              backend: str = "auto"):
    """GRPO loss Σ_t w_t·loss_t from logits (..., V); target, old_logp, ref_logp (or None when beta == 0),
    advantages and weights all of shape (...); old_logp None means on-policy (ratio 1). Returns (loss fp32
    scalar, GRPOStats)."""
    grpo_loss_args(logits, target, old_logp, ref_logp, advantages, weights, temperature=temperature,
                   eps_low=eps_low, eps_high=eps_high, beta=beta)
    flat = lambda t: None if t is None else t.reshape(-1)  # noqa: E731
    if not use_triton(backend, logits, target, old_logp, ref_logp, advantages, weights):
        out = token_logprobs_reference(logits, target, temperature=temperature, return_entropy=return_entropy)
        logp, ent = out if return_entropy else (out, None)
        loss, stats = grpo_loss_reference(flat(logp), flat(old_logp), flat(ref_logp), flat(advantages),
                                          flat(weights), eps_low=eps_low, eps_high=eps_high, beta=beta)
        if return_entropy:
            stats.entropy_sum = (ent.detach().reshape(-1) * (flat(weights) > 0)).sum()
        return loss, stats
    args = (logits.reshape(-1, logits.shape[-1]), flat(target), flat(old_logp), flat(ref_logp),
            flat(advantages), flat(weights), temperature, eps_low, eps_high, beta, return_entropy)
    if torch.is_grad_enabled() and logits.requires_grad:
        loss, sums = _GRPOLoss.apply(*args)
    else:
        logp, _, ent = token_logprobs_fwd(args[0], args[1], temperature, return_entropy)
        loss, _, sums = grpo_fwd(logp, *args[2:6], eps_low, eps_high, beta, ent)
    return loss, _stats(sums, ref_logp is not None, return_entropy)


def linear_grpo_loss(hidden, weight, target, old_logp, ref_logp, advantages, weights, *, temperature=1.0,
                     eps_low=0.2, eps_high=0.2, beta=0.0, return_entropy=False, chunk_size=None, backend="auto"):
    """`grpo_loss` of the LM head hidden (..., d) @ weight (V, d)ᵀ without materialising the logits:
    `chunk_size` rows at a time (default: the rule `linear_token_logprobs` uses). Returns (loss, GRPOStats)."""
    linear_grpo_loss_args(hidden, weight, target, old_logp, ref_logp, advantages, weights, temperature=temperature,
                          eps_low=eps_low, eps_high=eps_high, beta=beta, chunk_size=chunk_size)
    flat = lambda t: None if t is None else t.reshape(-1)  # noqa: E731
    triton_path = use_triton(backend, hidden, weight, target, old_logp, ref_logp, advantages, weights)
    hidden, weight = autocast_inputs(hidden, weight)  # both paths run the head in the same dtype
    if not triton_path:
        return grpo_loss(hidden @ weight.t(), target, old_logp, ref_logp, advantages, weights,
                         temperature=temperature, eps_low=eps_low, eps_high=eps_high, beta=beta,
                         return_entropy=return_entropy, backend="reference")
    args = (hidden.reshape(-1, hidden.shape[-1]), weight, flat(target), flat(old_logp), flat(ref_logp),
            flat(advantages), flat(weights), temperature, eps_low, eps_high, beta, return_entropy, chunk_size)
    with torch.autocast(hidden.device.type, enabled=False):
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            loss, sums = _LinearGRPOLoss.apply(*args)
        else:
            loss, sums, _, _ = linear_grpo_fwd(*args, need_hidden=False, need_weight=False)
    return loss, _stats(sums, ref_logp is not None, return_entropy)
