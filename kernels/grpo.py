"""GRPO: token weights and the clipped policy loss (fused with the LM head); the group-relative advantages
that feed it are kernels/group_advantages.py.

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
`linear_grpo_loss` never forms the (N, V) logits: in the fused head of kernels/_head.py its step computes per
chunk the log-probs (as rollout scoring does, so the two agree bitwise), the per-token loss and its gradient,
and overwrites the chunk's logits with ∂loss/∂logits, which the head pushes into ∂hidden, ∂W at once;
backward only scales those by the upstream scalar: three matmuls (6·N·d·V FLOPs), peak memory flat in N.

Sequence-level importance (GSPO: Zheng et al. 2025, "Group Sequence Policy Optimization"; TRL's
`importance_sampling_level="sequence"`), `importance="sequence"` with `seq_ids` (N,) naming each token's
sequence: one ratio per sequence i, the geometric mean of its token ratios over its tokens with w ≠ 0,

    s_i     = exp(Σ_{t∈i} (logp_t − old_logp_t) / |i|)        (float64 segment sums; |i| ≥ 1 by a clamp)
    surr_t  = min(s_i·A_t, clamp(s_i, 1 − eps_low, 1 + eps_high)·A_t)    for every token t of sequence i

and loss_t, loss as above (the KL stays per token). Its gradient is autograd's through that formula:
∂loss/∂logp_t = −(Σ_{t'∈i} w_t'·A_t')·s_i·[unclipped_i] / |i| + beta·w_t·(1 − exp(ref − logp)), so every
token of a sequence shares one policy-gradient coefficient. That coefficient needs every token's logp of the
sequence before any chunk's ∂logits can be written, which the one-pass fused step below cannot know. So the
sequence level runs in two stages on every backend: the log-probs through `token_logprobs` /
`linear_token_logprobs` (on "triton" the same fused kernels that score rollouts, so the first-pass ratio is
still exactly 1), then this O(N) formula in PyTorch on the (N,) vectors; autograd carries ∂loss/∂logp back
through the log-prob head, whose backward recomputes each chunk's logits: 8·N·d·V FLOPs instead of 6.

Stats (detached fp32 scalars, summed over tokens with w > 0, so that micro-batches and ranks add them up):
tokens (count), kl_sum (Σ kl; None without ref_logp), low_clipped / high_clipped (counts of tokens whose
clipped branch is active as defined above), entropy_sum (Σ entropy of the temperature-scaled
distribution; None unless return_entropy).
"""
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels._checks import LOSS_TYPES, grpo_loss_args, linear_grpo_loss_args, token_weights_args
from kernels._dispatch import interpreting, use_triton
from kernels._head import autocast_inputs, needs_graph, run_head
from kernels.logprobs import (
    linear_token_logprobs, token_logprobs, token_logprobs_bwd, token_logprobs_fwd, token_logprobs_reference,
)

IMPORTANCE = ("token", "sequence")  # the ratio's level: per token (GRPO), per sequence (GSPO)


@dataclass
class GRPOStats:
    tokens: Tensor               # number of tokens with weight > 0
    kl_sum: Tensor | None        # Σ kl over those tokens (None without ref_logp)
    low_clipped: Tensor          # tokens with A < 0 and ratio < 1 − eps_low
    high_clipped: Tensor         # tokens with A > 0 and ratio > 1 + eps_high
    entropy_sum: Tensor | None   # Σ entropy over those tokens (None unless asked)


@dataclass(frozen=True)
class GRPOHyperParams:
    """The scalar hyper-parameters of one policy-loss call (the symbols of the module docstring)."""
    temperature: float = 1.0     # z = logits / temperature
    eps_low: float = 0.2         # the ratio is clipped below at 1 − eps_low
    eps_high: float = 0.2        # and above at 1 + eps_high
    beta: float = 0.0            # weight of the k3 KL to the reference
    return_entropy: bool = False  # also sum the entropy of each counted token's distribution


@dataclass(frozen=True)
class _Tokens:
    """The per-token inputs of the policy loss, each (N,); constants: no gradient flows into them."""
    target: Tensor
    old_logp: Tensor | None
    ref_logp: Tensor | None
    advantages: Tensor
    weights: Tensor

    def map(self, f):
        """Every tensor through f (e.g. a flatten or a slice of rows); None stays None."""
        return _Tokens(*(None if t is None else f(t) for t in vars(self).values()))


# ----------------------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------------------
def _sequence_mean(x, active, seq_ids):
    """Each token's sequence mean of x over the sequence's active tokens (N,): float64 segment sums, so the
    order the index_add visits tokens in barely matters; a sequence with no active token gets 0."""
    n = x.numel()
    total = torch.zeros(n, dtype=torch.float64, device=x.device).index_add(0, seq_ids, (x * active).double())
    count = torch.zeros(n, dtype=torch.float64, device=x.device).index_add(0, seq_ids, active.double())
    return (total / count.clamp_min(1)).to(x.dtype)[seq_ids]


def grpo_loss_reference(logp, old_logp, ref_logp, advantages, weights, *, eps_low, eps_high, beta,
                        importance="token", seq_ids=None):
    """fp32 PyTorch GRPO loss Σ_t w_t·loss_t from per-token log-probs; differentiable in logp. importance
    "sequence" (GSPO) takes seq_ids (N,), int64 in [0, N): each token's sequence. Returns (loss, GRPOStats)
    with entropy_sum None."""
    _importance_args(importance, seq_ids, logp)
    if ref_logp is None and beta != 0:
        raise ValueError(f"beta={beta} needs ref_logp")
    logp = logp.float()
    w = weights.float()
    active = w != 0
    # inactive tokens get inputs that make every term finite (ratio 1, kl 0), so no inf·0 reaches the sum
    old = logp.detach() if old_logp is None else torch.where(active, old_logp.float(), logp.detach())
    adv = torch.where(active, advantages.float(), torch.zeros_like(w))
    log_ratio = logp - old
    if importance == "sequence":
        log_ratio = _sequence_mean(log_ratio, active, seq_ids)
    ratio = torch.exp(log_ratio)
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
# The slots of the per-block partial sums that _grpo_fwd_kernel writes, one row of N_SUMS per block
SUM_LOSS = tl.constexpr(0)         # Σ w·loss_t
SUM_TOKENS = tl.constexpr(1)       # tokens with w > 0 (the counted tokens)
SUM_KL = tl.constexpr(2)           # Σ kl over the counted tokens
SUM_LOW = tl.constexpr(3)          # counted tokens with A < 0 and ratio < 1 − eps_low
SUM_HIGH = tl.constexpr(4)         # counted tokens with A > 0 and ratio > 1 + eps_high
SUM_ENTROPY = tl.constexpr(5)      # Σ entropy over the counted tokens
N_SUMS = tl.constexpr(6)


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
    part = partial_ptr + pid * N_SUMS
    tl.store(part + SUM_LOSS, tl.sum(tl.where(active, w * loss_t, 0.0), axis=0))
    tl.store(part + SUM_TOKENS, tl.sum(counted.to(tl.float32), axis=0))
    tl.store(part + SUM_KL, kl_sum)
    tl.store(part + SUM_LOW, tl.sum((counted & low).to(tl.float32), axis=0))
    tl.store(part + SUM_HIGH, tl.sum((counted & high).to(tl.float32), axis=0))
    if HAS_ENTROPY:
        ent = tl.load(ent_ptr + offs, mask=mask, other=0.0)
        tl.store(part + SUM_ENTROPY, tl.sum(tl.where(counted, ent, 0.0), axis=0))
    else:
        tl.store(part + SUM_ENTROPY, 0.0)


# ----------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------
def grpo_fwd(logp, old_logp, ref_logp, advantages, weights, eps_low, eps_high, beta, entropy=None):
    """Per-token GRPO math over fp32 logp (N,). Returns (loss, dlogp (N,) = ∂loss/∂logp, sums (N_SUMS,) fp32
    indexed by the SUM_* slots)."""
    N = logp.shape[0]
    for name, t in dict(old_logp=old_logp, ref_logp=ref_logp, advantages=advantages, weights=weights,
                        entropy=entropy).items():
        if t is not None and t.shape != (N,):
            raise ValueError(f"{name} must have one value per token, ({N},), got shape {tuple(t.shape)}")
    if ref_logp is None and beta != 0:
        raise ValueError(f"beta={beta} needs ref_logp")
    BLOCK = 64 if interpreting() else 1024
    n_blocks = max(1, triton.cdiv(N, BLOCK))
    dlogp = torch.empty(N, dtype=torch.float32, device=logp.device)
    partial = torch.zeros(n_blocks, N_SUMS.value, dtype=torch.float32, device=logp.device)
    if N > 0:
        c = lambda t: None if t is None else t.contiguous()  # noqa: E731
        _grpo_fwd_kernel[(n_blocks,)](
            logp.contiguous(), c(old_logp) if old_logp is not None else logp,
            c(ref_logp) if ref_logp is not None else logp, c(advantages),
            c(weights), c(entropy) if entropy is not None else logp, dlogp, partial,
            N, 1.0 - eps_low, 1.0 + eps_high, float(beta),
            BLOCK=BLOCK, HAS_REF=ref_logp is not None, HAS_ENTROPY=entropy is not None, num_warps=4,
        )
    sums = partial.sum(dim=0)                                             # (N_SUMS,)
    return sums[SUM_LOSS.value], dlogp, sums


def _stats(sums, has_ref, has_entropy):
    at = lambda slot: sums[slot.value]  # noqa: E731
    return GRPOStats(tokens=at(SUM_TOKENS), kl_sum=at(SUM_KL) if has_ref else None, low_clipped=at(SUM_LOW),
                     high_clipped=at(SUM_HIGH), entropy_sum=at(SUM_ENTROPY) if has_entropy else None)


# ----------------------------------------------------------------------------------------------------------
# The policy loss of rows of logits, and the fused head's step around it (kernels/_head.py: `run_head`)
# ----------------------------------------------------------------------------------------------------------
def _grpo_rows(logits, tok: _Tokens, hp: GRPOHyperParams):
    """The policy loss of rows of logits (n, V): logp (the kernel that scores rollouts), then the per-token
    GRPO kernel. Returns (dlogp (n,), sums (N_SUMS,), lse (n,))."""
    logp, lse, ent = token_logprobs_fwd(logits, tok.target, hp.temperature, hp.return_entropy)
    _, dlogp, sums = grpo_fwd(logp, tok.old_logp, tok.ref_logp, tok.advantages, tok.weights, hp.eps_low,
                              hp.eps_high, hp.beta, ent)
    return dlogp, sums, lse


def _linear_grpo(hidden, weight, tok: _Tokens, hp: GRPOHyperParams, chunk_size, need_hidden, need_weight):
    """The fused head with a step that runs `_grpo_rows` on a chunk's logits, then overwrites them with
    ∂loss/∂logits. Returns (sums (N_SUMS,), ∂hidden or None, ∂weight or None): the loss's gradients."""
    sums = torch.zeros(N_SUMS.value, dtype=torch.float32, device=hidden.device)
    grads = need_hidden or need_weight

    def step(s, e, logits):
        rows = tok.map(lambda t: t[s:e])
        dlogp, part, lse = _grpo_rows(logits, rows, hp)
        sums.add_(part)
        return token_logprobs_bwd(logits, rows.target, lse, dlogp, hp.temperature, out=logits) if grads else None

    dhidden, dweight = run_head(hidden, weight, step, chunk_size, need_hidden=need_hidden,
                                need_weight=need_weight)
    return sums, dhidden, None if dweight is None else dweight.to(weight.dtype)


# ----------------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------------
class _GRPOLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, tok: _Tokens, hp: GRPOHyperParams):
        dlogp, sums, lse = _grpo_rows(logits, tok, hp)
        ctx.save_for_backward(logits, tok.target, lse, dlogp)
        ctx.temperature = hp.temperature
        ctx.mark_non_differentiable(sums)
        return sums[SUM_LOSS.value].clone(), sums  # the loss must not be a view of the non-differentiable sums

    @staticmethod
    def backward(ctx, dloss, _dsums):
        logits, target, lse, dlogp = ctx.saved_tensors
        return token_logprobs_bwd(logits, target, lse, dlogp * dloss, ctx.temperature), None, None


class _LinearGRPOLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, tok: _Tokens, hp: GRPOHyperParams, chunk_size):
        sums, dhidden, dweight = _linear_grpo(hidden, weight, tok, hp, chunk_size, *ctx.needs_input_grad[:2])
        ctx.save_for_backward(dhidden, dweight)  # the gradients, already computed: nothing else is kept
        ctx.mark_non_differentiable(sums)
        return sums[SUM_LOSS.value].clone(), sums

    @staticmethod
    def backward(ctx, dloss, _dsums):
        dhidden, dweight = ctx.saved_tensors
        return (None if dhidden is None else dhidden * dloss.to(dhidden.dtype),
                None if dweight is None else dweight * dloss.to(dweight.dtype), None, None, None)


# ----------------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------------
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


def _importance_args(importance, seq_ids, like):
    """importance is one of IMPORTANCE; "sequence" needs seq_ids: int64 of like's shape, on its device."""
    if importance not in IMPORTANCE:
        raise ValueError(f"importance must be one of {IMPORTANCE}, got {importance!r}")
    if importance == "token":
        if seq_ids is not None:
            raise ValueError('seq_ids is for importance="sequence"; got it with importance="token"')
        return
    if seq_ids is None:
        raise ValueError('importance="sequence" needs seq_ids, the sequence index of each token')
    if seq_ids.dtype != torch.int64 or seq_ids.shape != like.shape or seq_ids.device != like.device:
        raise ValueError(f"seq_ids must be int64 of shape {tuple(like.shape)} on {like.device}, got "
                         f"{seq_ids.dtype} of shape {tuple(seq_ids.shape)} on {seq_ids.device}")
    if seq_ids.numel() and not (0 <= int(seq_ids.min()) and int(seq_ids.max()) < seq_ids.numel()):
        raise ValueError(f"seq_ids must lie in [0, {seq_ids.numel()}) (one id per sequence, at most one per "
                         f"token), got [{int(seq_ids.min())}, {int(seq_ids.max())}]")


def _sequence_level(out, old_logp, ref_logp, advantages, weights, seq_ids, *, eps_low, eps_high, beta,
                    return_entropy):
    """GSPO's second stage (module docstring): the reference formula on the (N,) log-probs `out` (logp, or
    (logp, entropy)) that the log-prob head computed, differentiable through them."""
    logp, ent = out if return_entropy else (out, None)
    flat = lambda t: None if t is None else t.reshape(-1)  # noqa: E731
    loss, stats = grpo_loss_reference(flat(logp), flat(old_logp), flat(ref_logp), flat(advantages), flat(weights),
                                      eps_low=eps_low, eps_high=eps_high, beta=beta, importance="sequence",
                                      seq_ids=flat(seq_ids))
    if return_entropy:
        stats.entropy_sum = (ent.detach().reshape(-1) * (flat(weights) > 0)).sum()
    return loss, stats


def grpo_loss(logits, target, old_logp, ref_logp, advantages, weights, *, temperature: float = 1.0,
              eps_low: float = 0.2, eps_high: float = 0.2, beta: float = 0.0, return_entropy: bool = False,
              importance: str = "token", seq_ids=None, backend: str = "auto"):
    """GRPO loss Σ_t w_t·loss_t from logits (..., V); target, old_logp, ref_logp (or None when beta == 0),
    advantages and weights all of shape (...); old_logp None means on-policy (ratio 1). importance
    "sequence" (GSPO) with seq_ids (...) int64: each token's sequence, in [0, N). Returns (loss fp32
    scalar, GRPOStats)."""
    grpo_loss_args(logits, target, old_logp, ref_logp, advantages, weights, temperature=temperature,
                   eps_low=eps_low, eps_high=eps_high, beta=beta)
    _importance_args(importance, seq_ids, target)
    if importance == "sequence":
        out = token_logprobs(logits, target, temperature=temperature, return_entropy=return_entropy,
                             backend=backend)
        return _sequence_level(out, old_logp, ref_logp, advantages, weights, seq_ids, eps_low=eps_low,
                               eps_high=eps_high, beta=beta, return_entropy=return_entropy)
    flat = lambda t: None if t is None else t.reshape(-1)  # noqa: E731
    if not use_triton(backend, logits, target, old_logp, ref_logp, advantages, weights):
        out = token_logprobs_reference(logits, target, temperature=temperature, return_entropy=return_entropy)
        logp, ent = out if return_entropy else (out, None)
        loss, stats = grpo_loss_reference(flat(logp), flat(old_logp), flat(ref_logp), flat(advantages),
                                          flat(weights), eps_low=eps_low, eps_high=eps_high, beta=beta)
        if return_entropy:
            stats.entropy_sum = (ent.detach().reshape(-1) * (flat(weights) > 0)).sum()
        return loss, stats
    tok = _Tokens(target, old_logp, ref_logp, advantages, weights).map(lambda t: t.reshape(-1))
    hp = GRPOHyperParams(temperature, eps_low, eps_high, beta, return_entropy)
    flat_logits = logits.reshape(-1, logits.shape[-1])
    if needs_graph(logits):
        loss, sums = _GRPOLoss.apply(flat_logits, tok, hp)
    else:
        _, sums, _ = _grpo_rows(flat_logits, tok, hp)
        loss = sums[SUM_LOSS.value]
    return loss, _stats(sums, ref_logp is not None, return_entropy)


def linear_grpo_loss(hidden, weight, target, old_logp, ref_logp, advantages, weights, *, temperature=1.0,
                     eps_low=0.2, eps_high=0.2, beta=0.0, return_entropy=False, importance="token", seq_ids=None,
                     chunk_size=None, backend="auto"):
    """`grpo_loss` of the LM head hidden (..., d) @ weight (V, d)ᵀ without materialising the logits:
    `chunk_size` rows at a time (default: the rule `linear_token_logprobs` uses). importance="sequence": the
    fused log-prob head, then GSPO's formula (module docstring). Returns (loss, GRPOStats)."""
    linear_grpo_loss_args(hidden, weight, target, old_logp, ref_logp, advantages, weights, temperature=temperature,
                          eps_low=eps_low, eps_high=eps_high, beta=beta, chunk_size=chunk_size)
    _importance_args(importance, seq_ids, target)
    if importance == "sequence":
        out = linear_token_logprobs(hidden, weight, target, temperature=temperature, return_entropy=return_entropy,
                                    chunk_size=chunk_size, backend=backend)
        return _sequence_level(out, old_logp, ref_logp, advantages, weights, seq_ids, eps_low=eps_low,
                               eps_high=eps_high, beta=beta, return_entropy=return_entropy)
    triton_path = use_triton(backend, hidden, weight, target, old_logp, ref_logp, advantages, weights)
    hidden, weight = autocast_inputs(hidden, weight)  # both paths run the head in the same dtype
    if not triton_path:
        return grpo_loss(hidden @ weight.t(), target, old_logp, ref_logp, advantages, weights,
                         temperature=temperature, eps_low=eps_low, eps_high=eps_high, beta=beta,
                         return_entropy=return_entropy, backend="reference")
    tok = _Tokens(target, old_logp, ref_logp, advantages, weights).map(lambda t: t.reshape(-1))
    hp = GRPOHyperParams(temperature, eps_low, eps_high, beta, return_entropy)
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    if needs_graph(hidden, weight):
        loss, sums = _LinearGRPOLoss.apply(flat_hidden, weight, tok, hp, chunk_size)
    else:
        sums, _, _ = _linear_grpo(flat_hidden, weight, tok, hp, chunk_size, False, False)
        loss = sums[SUM_LOSS.value]
    return loss, _stats(sums, ref_logp is not None, return_entropy)
