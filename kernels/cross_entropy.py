"""Cross-entropy on logits, one Triton program per row, with the gradient written in the forward pass.

Math, for row i of the logits x (N, V), target t_i, optional soft-cap c and z-loss weight w:

    z_ij   = c · tanh(x_ij / c)                  (z = x without a soft-cap)
    lse_i  = log Σ_j exp(z_ij)                   (N,)  fp32, returned when return_lse=True
    loss_i = lse_i − z_{i,t_i} + w · lse_i²      (N,)  0 where t_i == ignore_index
    p_ij   = exp(z_ij − lse_i)                   (the softmax)

    dloss_i/dz_ij = p_ij · (1 + 2·w·lse_i) − [j == t_i]
    dz_ij/dx_ij   = 1 − (z_ij / c)²              (1 without a soft-cap)
    dx_ij         = g_i · r · dloss_i/dz_ij · dz_ij/dx_ij,   0 on ignored rows

where g is the upstream gradient (a scalar, or (N,) for reduction="none") and r the reduction's factor:
"none" returns loss (N,) and r = 1; "sum" returns Σ_i loss_i and r = 1; "mean" returns
Σ_i loss_i / n and r = 1/n with n = max(#{i : t_i != ignore_index}, 1). So the mean over a batch in which
every target is ignored is 0.0 with a zero gradient (torch's F.cross_entropy gives NaN there). The loss is
fp32 whatever the logits' dtype; dx has the logits' dtype. A target outside [0, V) that is not
ignore_index is a ValueError on both paths (checked before dispatch, see `kernels._checks`: on CUDA one host
sync per call); the kernel itself, called directly, writes a NaN loss for such a row.

Kernel: one program per row. Pass 1 reads the row in blocks with the online log-sum-exp of `kernels._lse`
and loads the target's logit once; pass 2 (when the logits need a gradient) reads the row again
(mostly from L2) and writes dx = r · dloss/dx, into a new buffer or, with inplace_backward=True, into the
logits buffer itself (the caller gives the logits up: they hold the gradient afterwards). Ignored rows skip
the second read and write zeros. Memory: with a gradient, 2 reads + 1 write of N·V elements and nothing
(N, V)-sized beyond dx; without one, a single read.

What backward does, by reduction:
  * "mean"/"sum": the saved dx is multiplied by the scalar g in place; a program whose g is exactly 1
    (plain `loss.backward()`) returns at once, so the common case costs no extra pass and no host sync.
  * "none" with inplace_backward: dx (computed with g = 1) is scaled row by row by g_i in place.
  * "none" otherwise: the forward only reads; logits and lse are saved and the backward kernel writes
    dx = g_i · dloss_i/dx_i in one read + one write, which is the correct gradient for any g.
Backward runs once per forward (the saved gradient is scaled in place); a second backward raises.

Supported: fp32, fp16, bf16 logits with stride 1 along V; V from 1 up (any length: every tail is masked);
targets int64 or int32; int64 row offsets. The vocabulary numerics (exp2, the fp32 running max and sum,
the soft-cap) come from `kernels._lse`, shared with the log-prob and GRPO kernels.
"""
import torch
import triton
import triton.language as tl

from kernels._checks import REDUCTIONS, cross_entropy_args
from kernels._dispatch import row_block, use_triton
from kernels._head import needs_graph
from kernels._lse import load_logits_block, row_logsumexp, softmax_block, transform_grad, transform_logits


# ----------------------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------------------
def cross_entropy_reference(logits, target, *, ignore_index: int = -100, reduction: str = "mean",
                            z_loss: float = 0.0, softcap: float | None = None, return_lse: bool = False):
    """The math above in fp32 PyTorch; autograd through it is the gradient oracle. lse carries no gradient."""
    cross_entropy_args(logits, target, ignore_index=ignore_index, reduction=reduction, softcap=softcap)
    z = logits.float()                                         # (N, V) fp32 copy: one read, one write
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)                  # (N, V)
    lse = torch.logsumexp(z, dim=-1)                           # (N,)
    valid = target != ignore_index                             # (N,)
    z_t = z.gather(1, torch.where(valid, target, 0)[:, None]).squeeze(1)  # (N,) ignored rows read column 0
    loss = lse - z_t
    if z_loss != 0.0:
        loss = loss + z_loss * lse * lse
    loss = torch.where(valid, loss, 0.0)                       # (N,) ignored rows: 0 loss and 0 gradient
    if reduction == "sum":
        loss = loss.sum()
    elif reduction == "mean":
        loss = loss.sum() / valid.sum().clamp(min=1)
    return (loss, lse.detach()) if return_lse else loss


# ----------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------
@triton.jit
def _row_grad(row_ptr, drow_ptr, t, lse, scale, V, z_loss, softcap,
              HAS_SOFTCAP: tl.constexpr, BLOCK_V: tl.constexpr):
    """One pass over a row: drow = scale · (p·(1 + 2·z_loss·lse) − onehot(t)) · dz/dx (docstring, dx_ij)."""
    p_factor = 1.0 + 2.0 * z_loss * lse
    for start in range(0, V, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        z = load_logits_block(row_ptr, offs, V, 1.0, softcap, False, HAS_SOFTCAP)  # (BLOCK_V,) fp32
        g = softmax_block(z, lse) * p_factor - tl.where(offs == t, 1.0, 0.0)
        if HAS_SOFTCAP:
            # masked lanes hold z = −inf, where dz/dx would be −inf and 0·(−inf) a NaN: use z = 0 there
            g = g * transform_grad(tl.where(offs < V, z, 0.0), 1.0, softcap, False, True)
        # in place is safe: this program alone owns the row, and reads each block before writing it
        tl.store(drow_ptr + offs, (g * scale).to(drow_ptr.dtype.element_ty), mask=offs < V)


@triton.jit
def _row_zero(drow_ptr, V, BLOCK_V: tl.constexpr):
    """An ignored row's gradient: zeros, written without reading the logits."""
    zeros = tl.zeros([BLOCK_V], dtype=drow_ptr.dtype.element_ty)
    for start in range(0, V, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        tl.store(drow_ptr + offs, zeros, mask=offs < V)


@triton.jit
def _cross_entropy_fwd_kernel(
    # pointers
    logits_ptr, target_ptr, loss_ptr, lse_ptr, dlogits_ptr, grad_scale_ptr,
    # strides (the vocabulary stride is 1)
    stride_logits_n, stride_dlogits_n,
    # sizes and scalars
    V, ignore_index, z_loss, softcap,
    # meta-parameters
    HAS_SOFTCAP: tl.constexpr, HAS_GRAD: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # int64: row · stride exceeds 2³¹ for N·V beyond 2 G elements
    row_ptr = logits_ptr + row * stride_logits_n

    # 1. lse_i over the whole row (pass 1)
    lse = row_logsumexp(row_ptr, V, 1.0, softcap, False, HAS_SOFTCAP, BLOCK_V)

    # 2. loss_i = lse_i − z_{i,t_i} + w·lse_i²; a target out of [0, V) reads NaN so the loss shows it
    t = tl.load(target_ptr + row).to(tl.int64)
    valid = t != ignore_index
    x_t = tl.load(row_ptr + t, mask=valid & (t >= 0) & (t < V), other=float("nan")).to(tl.float32)
    z_t = transform_logits(x_t, 1.0, softcap, False, HAS_SOFTCAP)
    loss = tl.where(valid, lse - z_t + z_loss * lse * lse, 0.0)
    tl.store(loss_ptr + row, loss)
    tl.store(lse_ptr + row, lse)

    # 3. dx_i = r · dloss_i/dx_i (pass 2), r = 1/n for "mean" and 1 otherwise; zeros on ignored rows
    if HAS_GRAD:
        drow_ptr = dlogits_ptr + row * stride_dlogits_n
        if valid:
            _row_grad(row_ptr, drow_ptr, t, lse, tl.load(grad_scale_ptr), V, z_loss, softcap, HAS_SOFTCAP, BLOCK_V)
        else:
            _row_zero(drow_ptr, V, BLOCK_V)


@triton.jit
def _cross_entropy_bwd_kernel(
    # pointers
    logits_ptr, target_ptr, lse_ptr, dloss_ptr, dlogits_ptr,
    # strides (the vocabulary stride is 1; stride_dloss_n is 0 for a scalar upstream gradient)
    stride_logits_n, stride_dlogits_n, stride_dloss_n,
    # sizes and scalars
    V, ignore_index, z_loss, softcap,
    # meta-parameters
    HAS_SOFTCAP: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    drow_ptr = dlogits_ptr + row * stride_dlogits_n
    t = tl.load(target_ptr + row).to(tl.int64)
    # dx_i = g_i · dloss_i/dx_i from the saved lse_i: one read and one write of the row
    if t != ignore_index:
        g = tl.load(dloss_ptr + row * stride_dloss_n).to(tl.float32)
        lse = tl.load(lse_ptr + row)
        _row_grad(logits_ptr + row * stride_logits_n, drow_ptr, t, lse, g, V, z_loss, softcap,
                  HAS_SOFTCAP, BLOCK_V)
    else:
        _row_zero(drow_ptr, V, BLOCK_V)


@triton.jit
def _scale_rows_kernel(
    dlogits_ptr, dloss_ptr,
    stride_dlogits_n, stride_dloss_n,
    V,
    BLOCK_V: tl.constexpr,
):
    """dlogits_i *= g_i in place; rows with g_i == 1 are left untouched (no read, no write)."""
    row = tl.program_id(0).to(tl.int64)
    g = tl.load(dloss_ptr + row * stride_dloss_n).to(tl.float32)
    if g != 1.0:
        drow_ptr = dlogits_ptr + row * stride_dlogits_n
        for start in range(0, V, BLOCK_V):
            offs = start + tl.arange(0, BLOCK_V)
            d = tl.load(drow_ptr + offs, mask=offs < V).to(tl.float32)
            tl.store(drow_ptr + offs, (d * g).to(drow_ptr.dtype.element_ty), mask=offs < V)


# ----------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------
def _check_logits(name, logits, target):
    if logits.dim() != 2 or logits.stride(1) != 1:
        raise ValueError(f"{name} must be (N, V) with stride 1 along V, got shape {tuple(logits.shape)} "
                         f"strides {tuple(logits.stride())}")
    if logits.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"{name} must be fp32, fp16 or bf16, got {logits.dtype}")
    if target.shape != logits.shape[:1] or target.device != logits.device:
        raise ValueError(f"target must be (N,) = ({logits.shape[0]},) on {logits.device}, "
                         f"got shape {tuple(target.shape)} on {target.device}")


def cross_entropy_fwd(logits, target, *, ignore_index: int = -100, z_loss: float = 0.0,
                      softcap: float | None = None, dlogits=None, grad_scale=None, loss=None, lse=None):
    """Per-row loss (N,) and lse (N,), fp32. With `dlogits` ((N, V), may be `logits` itself) also writes
    dx = grad_scale · dloss/dx there; `grad_scale` is a 1-element fp32 tensor (1 when None). `loss` and
    `lse` may be given as (N,) fp32 outputs to write into (e.g. slices of a larger buffer)."""
    _check_logits("logits", logits, target)
    N, V = logits.shape
    if dlogits is not None and (dlogits.shape != logits.shape or dlogits.stride(1) != 1):
        raise ValueError(f"dlogits must match logits {tuple(logits.shape)} with stride 1 along V, "
                         f"got shape {tuple(dlogits.shape)} strides {tuple(dlogits.stride())}")
    loss = torch.empty(N, device=logits.device, dtype=torch.float32) if loss is None else loss
    lse = torch.empty(N, device=logits.device, dtype=torch.float32) if lse is None else lse
    if grad_scale is None:
        grad_scale = torch.ones(1, device=logits.device, dtype=torch.float32)
    if N == 0:
        return loss, lse
    block, warps = row_block(V)
    _cross_entropy_fwd_kernel[(N,)](
        logits, target, loss, lse, logits if dlogits is None else dlogits, grad_scale,
        logits.stride(0), logits.stride(0) if dlogits is None else dlogits.stride(0),
        V, ignore_index, z_loss, 1.0 if softcap is None else softcap,
        HAS_SOFTCAP=softcap is not None, HAS_GRAD=dlogits is not None, BLOCK_V=block, num_warps=warps,
    )
    return loss, lse


def cross_entropy_bwd(logits, target, lse, dloss, *, ignore_index: int = -100, z_loss: float = 0.0,
                      softcap: float | None = None, dlogits=None):
    """dx (N, V) = dloss_i · dloss_i/dx_i from the saved lse; `dloss` is (N,) or a scalar. `dlogits` may be
    `logits` itself (in place); otherwise a new tensor in the logits' dtype."""
    _check_logits("logits", logits, target)
    N, V = logits.shape
    if lse.shape != (N,) or lse.dtype != torch.float32:
        raise ValueError(f"lse must be (N,) = ({N},) fp32, got shape {tuple(lse.shape)} {lse.dtype}")
    if dloss.numel() != 1 and dloss.shape != (N,):
        raise ValueError(f"dloss must be a scalar or (N,) = ({N},), got shape {tuple(dloss.shape)}")
    dlogits = torch.empty_like(logits) if dlogits is None else dlogits
    if N == 0:
        return dlogits
    block, warps = row_block(V)
    _cross_entropy_bwd_kernel[(N,)](
        logits, target, lse, dloss, dlogits,
        logits.stride(0), dlogits.stride(0), 0 if dloss.numel() == 1 else dloss.stride(0),
        V, ignore_index, z_loss, 1.0 if softcap is None else softcap,
        HAS_SOFTCAP=softcap is not None, BLOCK_V=block, num_warps=warps,
    )
    return dlogits


def scale_rows_(dlogits, dloss):
    """dlogits (N, V) *= dloss ((N,) or scalar) in place, skipping rows whose factor is exactly 1."""
    N, V = dlogits.shape
    if dlogits.stride(1) != 1:
        raise ValueError(f"dlogits must have stride 1 along V, got strides {tuple(dlogits.stride())}")
    if dloss.numel() != 1 and dloss.shape != (N,):
        raise ValueError(f"dloss must be a scalar or (N,) = ({N},), got shape {tuple(dloss.shape)}")
    if N == 0:
        return dlogits
    block, warps = row_block(V)
    _scale_rows_kernel[(N,)](dlogits, dloss, dlogits.stride(0), 0 if dloss.numel() == 1 else dloss.stride(0),
                             V, BLOCK_V=block, num_warps=warps)
    return dlogits


# ----------------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------------
def _mean_scale(target, ignore_index):
    """1 / max(#non-ignored targets, 1) as a 1-element fp32 device tensor (no host sync)."""
    n = (target != ignore_index).sum().clamp(min=1).to(torch.float32)
    return (1.0 / n).reshape(1)


def _reduce(loss, reduction, scale):
    """The reduction of the per-row losses (N,); `scale` is `_mean_scale` for "mean", else unused."""
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() * scale[0]
    return loss


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, ignore_index, reduction, z_loss, softcap, inplace_backward):
        kw = dict(ignore_index=ignore_index, z_loss=z_loss, softcap=softcap)
        scale = _mean_scale(target, ignore_index) if reduction == "mean" else None
        if reduction != "none" or inplace_backward:
            # the gradient is written now (with r folded in) and scaled by g in backward
            dlogits = logits if inplace_backward else torch.empty_like(logits)
            loss, lse = cross_entropy_fwd(logits, target, dlogits=dlogits, grad_scale=scale, **kw)
            ctx.save_for_backward(dlogits)
            ctx.mode = "scale"
        else:
            # reduction="none": the gradient depends on the per-row g, so it is computed in backward
            loss, lse = cross_entropy_fwd(logits, target, **kw)
            ctx.save_for_backward(logits, target, lse)
            ctx.mode = "recompute"
            ctx.kw = kw
        ctx.mark_non_differentiable(lse)
        return _reduce(loss, reduction, scale), lse

    @staticmethod
    def backward(ctx, dloss, dlse):
        if ctx.mode == "used":
            raise RuntimeError("cross_entropy: backward ran twice; its saved gradient was scaled in place by "
                               "the first. Recompute the loss instead of using retain_graph=True.")
        if ctx.mode == "scale":
            (dlogits,) = ctx.saved_tensors
            ctx.mode = "used"
            dlogits = scale_rows_(dlogits, dloss.to(torch.float32))
        else:
            logits, target, lse = ctx.saved_tensors
            dlogits = cross_entropy_bwd(logits, target, lse, dloss, **ctx.kw)
        return dlogits, None, None, None, None, None, None


# ----------------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------------
def cross_entropy(logits, target, *, ignore_index: int = -100, reduction: str = "mean",
                  z_loss: float = 0.0, softcap: float | None = None, return_lse: bool = False,
                  inplace_backward: bool = False, backend: str = "auto"):
    """Cross-entropy of logits (N, V) against target (N,): loss, or (loss, lse) with lse (N,) fp32.

    reduction: "none" (N,), "sum", or "mean" over non-ignored targets (0.0 when there are none).
    z_loss adds z_loss · lse² per token; softcap applies softcap · tanh(logits / softcap) first.
    inplace_backward=True writes the gradient into `logits` during the forward when a gradient is needed
    (the caller must not use the logits afterwards); it saves an (N, V) buffer. Under torch.no_grad or for
    logits that do not require grad, only the loss is computed. The loss is fp32."""
    cross_entropy_args(logits, target, ignore_index=ignore_index, reduction=reduction, softcap=softcap)
    if not use_triton(backend, logits, target):
        return cross_entropy_reference(logits, target, ignore_index=ignore_index, reduction=reduction,
                                       z_loss=z_loss, softcap=softcap, return_lse=return_lse)
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    z_loss, softcap = float(z_loss), None if softcap is None else float(softcap)
    if needs_graph(logits):
        loss, lse = _CrossEntropy.apply(logits, target, ignore_index, reduction, z_loss, softcap, inplace_backward)
    else:  # nothing to differentiate: the forward alone, nothing saved
        loss, lse = cross_entropy_fwd(logits, target, ignore_index=ignore_index, z_loss=z_loss, softcap=softcap)
        loss = _reduce(loss, reduction, _mean_scale(target, ignore_index) if reduction == "mean" else None)
    return (loss, lse) if return_lse else loss
