"""Per-token log-probabilities of chosen targets ("selective log-softmax"), with optional entropy.

For N rows of logits x (N, V), targets t (N,) and a sampling temperature T, with z = x / T:

    lse_n     = log Σ_v exp(z_nv)                                   (N,)
    logp_n    = z_{n,t_n} − lse_n                                   (N,)   log p(t_n)
    H_n       = lse_n − Σ_v p_nv z_nv,   p_nv = exp(z_nv − lse_n)   (N,)   entropy of the row

Gradients, for upstream g = ∂L/∂logp (N,) and h = ∂L/∂H (N,):

    ∂L/∂z_nv  = g_n (1[v = t_n] − p_nv)  −  h_n p_nv (z_nv − lse_n + H_n)
    ∂L/∂x_nv  = ∂L/∂z_nv / T

(the entropy term: ∂H/∂z_v = −p_v (log p_v + H) and log p_v = z_v − lse). A negative target (the
ignore_index convention, e.g. −100) gives logp 0 and no gradient through logp; a target ≥ V is a ValueError
on both paths (checked before dispatch, see `kernels._checks`: on CUDA one host sync per call).

Memory: the (N, V) log-softmax is never formed. The forward reads each row once and keeps (lse, H) per
row (8 bytes); the backward reads the row again and recomputes p from lse. In `linear_token_logprobs` the
logits themselves exist only for one chunk of rows at a time: the fused head of kernels/_head.py computes
logits_c = hidden_c @ weightᵀ (a matmul in the compute dtype, bf16 on GPU, fp32 accumulate) and runs the
same forward kernel on it; the backward recomputes the chunk's logits, writes ∂L/∂logits over them in place
with the backward kernel, and the head accumulates ∂L/∂hidden_c = dlogits_c @ weight and
∂L/∂weight += dlogits_cᵀ @ hidden_c in an fp32 accumulator. Peak extra memory is one (chunk, V) logits
buffer plus that accumulator, flat in N. Under torch.autocast an fp32 hidden runs the head in the autocast
dtype; hidden and weight are cast to it before the autograd Function, and ∂weight is rounded to it.

Numerics: all softmax math is fp32 whatever the logits dtype, through the online log-sum-exp helpers of
kernels/_lse.py that the cross-entropy uses (base-2 exp/log, temperature applied on load as x / T).
Rollout scoring (no grad) and the training pass (kernels/grpo.py) go through the same launchers and kernel,
so identical inputs give bitwise identical logp and the GRPO ratio is exactly 1 on the first pass; for the
fused head this holds when both see the same rows with the same chunk_size (the matmul of a chunk is only
reproducible for the same chunk shape).
With grad disabled nothing is saved for backward.
Supported: fp32, fp16, bf16 logits/hidden/weight; any N ≥ 0, any V ≥ 1; outputs are fp32.
"""
import torch
import triton
import triton.language as tl

from kernels._checks import linear_token_logprobs_args, token_logprobs_args
from kernels._dispatch import row_block, use_triton
from kernels._head import autocast_inputs, needs_graph, run_head
from kernels._lse import (
    LOG2E, lse_finalize, lse_init, lse_update, load_logit, load_logits_block, softmax_block, transform_grad,
)


# ----------------------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------------------
def token_logprobs_reference(logits, target, *, temperature=1.0, return_entropy=False):
    """fp32 PyTorch log p(target) (and entropy) per row; differentiable; the gradient oracle."""
    z = logits.float() / temperature                                      # (..., V)
    lse = torch.logsumexp(z, dim=-1)                                      # (...,)
    valid = target >= 0
    z_t = z.gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1)     # (...,)
    logp = torch.where(valid, z_t - lse, torch.zeros_like(lse))
    if not return_entropy:
        return logp
    p = torch.softmax(z, dim=-1)                                          # (..., V)  materialised
    entropy = lse - (p * z).sum(-1)
    return logp, entropy


# ----------------------------------------------------------------------------------------------------------
# Triton kernels: one program per row, looping over the vocabulary in BLOCK_V tiles
# ----------------------------------------------------------------------------------------------------------
@triton.jit
def _token_logprobs_fwd_kernel(
    # pointers
    logits_ptr, target_ptr, logp_ptr, lse_ptr, entropy_ptr,
    # strides
    stride_logits_n,
    # sizes and scalars
    V, temperature,
    # meta-parameters
    BLOCK_V: tl.constexpr, HAS_TEMPERATURE: tl.constexpr, HAS_ENTROPY: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # int64: row · stride overflows int32 past 2³¹ logits
    row_ptr = logits_ptr + row * stride_logits_n
    # 1. online log-sum-exp over the row (kernels/_lse.py: the numbers the cross-entropy sees), and for the
    #    entropy zs = Σ exp(z − m)·z, rescaled with s whenever the running max m grows
    m, s = lse_init()
    zs = tl.full((), 0.0, tl.float32)
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        z = load_logits_block(row_ptr, offs, V, temperature, 1.0, HAS_TEMPERATURE, False)
        if HAS_ENTROPY:
            m_new = tl.maximum(m, tl.max(z, axis=0))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            e = tl.exp2((z - m_safe) * LOG2E)
            # e·z is 0·(−inf) = NaN on masked lanes and on −inf logits: select z first
            zs = zs * tl.exp2((m - m_safe) * LOG2E) + tl.sum(e * tl.where(e > 0, z, 0.0), axis=0)
        m, s = lse_update(m, s, z)
    lse = lse_finalize(m, s)
    # 2. logp = z_t − lse from a single load of the target's logit (negative target: ignored, logp 0)
    t = tl.load(target_ptr + row).to(tl.int64)
    valid = (t >= 0) & (t < V)
    z_t = load_logit(row_ptr, tl.where(valid, t, 0), temperature, 1.0, HAS_TEMPERATURE, False)
    tl.store(logp_ptr + row, tl.where(valid, z_t - lse, 0.0))
    tl.store(lse_ptr + row, lse)
    # 3. H = lse − Σ p z = lse − zs / s  (zs and s carry the same factor exp(−m))
    if HAS_ENTROPY:
        tl.store(entropy_ptr + row, lse - zs / s)


@triton.jit
def _token_logprobs_bwd_kernel(
    # pointers
    logits_ptr, target_ptr, lse_ptr, entropy_ptr, dlogp_ptr, dentropy_ptr, dlogits_ptr,
    # strides
    stride_logits_n, stride_dlogits_n,
    # sizes and scalars
    V, temperature,
    # meta-parameters
    BLOCK_V: tl.constexpr, HAS_TEMPERATURE: tl.constexpr, HAS_DENTROPY: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride_logits_n
    drow_ptr = dlogits_ptr + row * stride_dlogits_n  # may alias row_ptr (in place): each tile is read first
    t = tl.load(target_ptr + row).to(tl.int64)
    g = tl.load(dlogp_ptr + row).to(tl.float32)
    g = tl.where((t >= 0) & (t < V), g, 0.0)  # ignored rows: logp is the constant 0
    lse = tl.load(lse_ptr + row)
    if HAS_DENTROPY:
        h = tl.load(dentropy_ptr + row).to(tl.float32)
        ent = tl.load(entropy_ptr + row)
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        z = load_logits_block(row_ptr, offs, V, temperature, 1.0, HAS_TEMPERATURE, False)
        # 1. p recomputed from the saved lse
        p = softmax_block(z, lse)
        # 2. ∂L/∂z = g (1[v = t] − p)  −  h p (z − lse + H)
        dz = g * (tl.where(offs == t, 1.0, 0.0) - p)
        if HAS_DENTROPY:
            dz -= h * p * tl.where(p > 0, z - lse + ent, 0.0)
        # 3. ∂L/∂x = ∂L/∂z · dz/dx  (1 / T)
        dx = dz * transform_grad(z, temperature, 1.0, HAS_TEMPERATURE, False)
        tl.store(drow_ptr + offs, dx.to(dlogits_ptr.dtype.element_ty), mask=offs < V)


# ----------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------
def _block_v(V):
    """`row_block` with 128-lane tiles under the interpreter: the log-prob tests' vocabularies (a few hundred
    at most) then span several tiles, which is where the entropy's running rescale can go wrong."""
    return row_block(V, interpreted=128)


def _check_rows(logits, target):
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, V), got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target must be (N,) = {tuple(logits.shape[:1])}, got shape {tuple(target.shape)}")
    if logits.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"logits must be fp32, fp16 or bf16, got {logits.dtype}")
    if target.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"target must be int64 or int32, got {target.dtype}")
    if logits.device != target.device:
        raise ValueError(f"logits on {logits.device} but target on {target.device}")


def token_logprobs_fwd(logits, target, temperature=1.0, return_entropy=False):
    """Launch the forward over rows of (N, V) logits. Returns fp32 (logp, lse, entropy or None), each (N,)."""
    _check_rows(logits, target)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    target = target.contiguous()
    N, V = logits.shape
    logp = torch.empty(N, dtype=torch.float32, device=logits.device)
    lse = torch.empty(N, dtype=torch.float32, device=logits.device)
    entropy = torch.empty(N, dtype=torch.float32, device=logits.device) if return_entropy else None
    if N == 0:
        return logp, lse, entropy
    BLOCK_V, num_warps = _block_v(V)
    _token_logprobs_fwd_kernel[(N,)](
        logits, target, logp, lse, entropy if return_entropy else lse,
        logits.stride(0),
        V, float(temperature),
        BLOCK_V=BLOCK_V, HAS_TEMPERATURE=temperature != 1.0, HAS_ENTROPY=return_entropy, num_warps=num_warps,
    )
    return logp, lse, entropy


def token_logprobs_bwd(logits, target, lse, dlogp, temperature=1.0, entropy=None, dentropy=None, out=None):
    """Launch the backward: ∂L/∂logits (N, V) in logits' dtype. `out` may be `logits` itself (in place)."""
    _check_rows(logits, target)
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    N, V = logits.shape
    for name, t in (("lse", lse), ("dlogp", dlogp), ("entropy", entropy), ("dentropy", dentropy)):
        if t is not None and t.shape != (N,):
            raise ValueError(f"{name} must be (N,) = ({N},), got shape {tuple(t.shape)}")
    if (entropy is None) != (dentropy is None):
        raise ValueError("entropy and dentropy come together")
    if out is None:
        out = torch.empty_like(logits)
    elif out.shape != logits.shape or out.stride(-1) != 1:
        raise ValueError(f"out must be a row-major {tuple(logits.shape)} buffer, got shape {tuple(out.shape)}")
    if N == 0:
        return out
    has_dent = dentropy is not None
    BLOCK_V, num_warps = _block_v(V)
    _token_logprobs_bwd_kernel[(N,)](
        logits, target.contiguous(), lse.contiguous(),
        entropy.contiguous() if has_dent else lse, dlogp.contiguous(),
        dentropy.contiguous() if has_dent else dlogp, out,
        logits.stride(0), out.stride(0),
        V, float(temperature),
        BLOCK_V=BLOCK_V, HAS_TEMPERATURE=temperature != 1.0, HAS_DENTROPY=has_dent, num_warps=num_warps,
    )
    return out


# ----------------------------------------------------------------------------------------------------------
# The fused head's forward: the forward kernel on each chunk of logits (the loop around it, the chunk rule
# and the fp32 ∂W are kernels/_head.py's `run_head`; the backward step is in `_LinearTokenLogprobs`)
# ----------------------------------------------------------------------------------------------------------
def _linear_fwd(hidden, weight, target, temperature, return_entropy, chunk_size):
    """fp32 (logp, lse, entropy or None), each (N,), of hidden (N, d) @ weight (V, d)ᵀ. Rollout scoring and
    the forward of `_LinearTokenLogprobs` both run this, so they give the same bits."""
    N = hidden.shape[0]
    logp = torch.empty(N, dtype=torch.float32, device=hidden.device)
    lse = torch.empty_like(logp)
    entropy = torch.empty_like(logp) if return_entropy else None

    def step(s, e, logits):
        logp[s:e], lse[s:e], ent = token_logprobs_fwd(logits, target[s:e], temperature, return_entropy)
        if return_entropy:
            entropy[s:e] = ent

    run_head(hidden, weight, step, chunk_size)
    return logp, lse, entropy


# ----------------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------------
class _TokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, temperature, return_entropy):
        logp, lse, entropy = token_logprobs_fwd(logits, target, temperature, return_entropy)
        ctx.save_for_backward(logits, target, lse, entropy)
        ctx.temperature = temperature
        ctx.set_materialize_grads(False)
        return (logp, entropy) if return_entropy else logp

    @staticmethod
    def backward(ctx, dlogp, dentropy=None):
        logits, target, lse, entropy = ctx.saved_tensors
        if dlogp is None:
            dlogp = torch.zeros_like(lse)
        dlogits = token_logprobs_bwd(logits, target, lse, dlogp, ctx.temperature,
                                     entropy if dentropy is not None else None, dentropy)
        return dlogits, None, None, None


class _LinearTokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, target, temperature, return_entropy, chunk_size):
        logp, lse, entropy = _linear_fwd(hidden, weight, target, temperature, return_entropy, chunk_size)
        ctx.save_for_backward(hidden, weight, target, lse, entropy)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        ctx.set_materialize_grads(False)
        return (logp, entropy) if return_entropy else logp

    @staticmethod
    def backward(ctx, dlogp, dentropy=None):
        hidden, weight, target, lse, entropy = ctx.saved_tensors
        if dlogp is None:
            dlogp = torch.zeros_like(lse)
        with_entropy = dentropy is not None

        def step(s, e, logits):  # the chunk's logits, recomputed, overwritten with ∂L/∂logits
            return token_logprobs_bwd(logits, target[s:e], lse[s:e], dlogp[s:e], ctx.temperature,
                                      entropy[s:e] if with_entropy else None,
                                      dentropy[s:e] if with_entropy else None, out=logits)

        dhidden, dweight = run_head(hidden, weight, step, ctx.chunk_size, need_hidden=ctx.needs_input_grad[0],
                                    need_weight=ctx.needs_input_grad[1])
        return dhidden, None if dweight is None else dweight.to(weight.dtype), None, None, None, None


# ----------------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------------
def _shaped(out, lead, return_entropy):
    """The flat (N,) outputs viewed as the targets' shape: logp, or (logp, entropy)."""
    if return_entropy:
        return out[0].view(lead), out[1].view(lead)
    return out.view(lead)


def token_logprobs(logits, target, *, temperature: float = 1.0, return_entropy: bool = False,
                   backend: str = "auto"):
    """log p(target) per row of `logits` (..., V) at `temperature`, fp32 of shape target.shape (...);
    with return_entropy, also the entropy of each row. Negative targets give 0."""
    token_logprobs_args(logits, target, temperature=temperature)
    if not use_triton(backend, logits, target):
        return token_logprobs_reference(logits, target, temperature=temperature, return_entropy=return_entropy)
    lead = target.shape
    flat_logits, flat_target = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    if needs_graph(logits):
        out = _TokenLogprobs.apply(flat_logits, flat_target, temperature, return_entropy)
    else:  # scoring: nothing is saved
        logp, _, entropy = token_logprobs_fwd(flat_logits, flat_target, temperature, return_entropy)
        out = (logp, entropy) if return_entropy else logp
    return _shaped(out, lead, return_entropy)


def linear_token_logprobs(hidden, weight, target, *, temperature: float = 1.0, return_entropy: bool = False,
                          chunk_size: int | None = None, backend: str = "auto"):
    """log p(target) of the LM head `hidden (..., d) @ weight (V, d)ᵀ` without the (N, V) logits: the
    head runs `chunk_size` rows at a time. fp32 of shape target.shape; entropy too with return_entropy."""
    linear_token_logprobs_args(hidden, weight, target, temperature=temperature, chunk_size=chunk_size)
    triton_path = use_triton(backend, hidden, weight, target)
    hidden, weight = autocast_inputs(hidden, weight)  # both paths run the head in the same dtype
    if not triton_path:
        return token_logprobs_reference(hidden @ weight.t(), target, temperature=temperature,
                                        return_entropy=return_entropy)
    lead = target.shape
    flat_hidden, flat_target = hidden.reshape(-1, hidden.shape[-1]), target.reshape(-1)
    if needs_graph(hidden, weight):
        out = _LinearTokenLogprobs.apply(flat_hidden, weight, flat_target, temperature, return_entropy,
                                         chunk_size)
    else:  # scoring: nothing is saved
        logp, _, entropy = _linear_fwd(flat_hidden, weight, flat_target, temperature, return_entropy, chunk_size)
        out = (logp, entropy) if return_entropy else logp
    return _shaped(out, lead, return_entropy)
