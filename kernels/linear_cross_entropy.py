"""Fused LM head + cross-entropy: loss(hidden @ weightᵀ, target) without ever holding the (N, V) logits.

Math, with hidden h (N, d), the LM-head weight W (V, d) (no bias), target t (N,):

    x      = h Wᵀ                                 (N, V), never materialised: one chunk of rows at a time
    loss_i = cross_entropy(x_i, t_i)              as in kernels/cross_entropy.py (z-loss, soft-cap,
                                                  ignore_index, reductions "none" / "sum" / "mean")
    dx     = g · r · dloss/dx                     (N, V), per chunk, from the cross-entropy kernel
    dh     = dx W                                 (N, d)
    dW     = dxᵀ h = Σ_chunks dx_cᵀ h_c           (V, d), accumulated in fp32 over the chunks

Chunking: the N tokens are processed in chunks of C rows (`chunk_size`). For each chunk the forward computes
x_c = h_c Wᵀ (C, V) into one reused buffer, runs the cross-entropy kernel on it, which overwrites it in place
with dx_c, then dh_c = dx_c W and dW += dx_cᵀ h_c. So the extra memory is one (C, V) buffer in the compute
dtype plus the fp32 dW accumulator, whatever N is: peak memory stays flat as N grows. FLOPs are the three
matmuls of the plain LM head, 6·N·d·V for forward + backward, plus one pass over each chunk's logits.

Which gradients are computed when:
  * "mean"/"sum" (a scalar loss): dh and dW are computed during the forward (r folded in, 1/n for "mean")
    and multiplied by the scalar upstream gradient g in backward. Saved: dh (N, d) and dW (V, d) fp32.
  * "none": the gradient needs the per-token g_i, so the forward computes only loss and lse, and backward
    recomputes each chunk's logits (2·N·d·V more FLOPs) and applies dx_i = g_i · dloss_i/dx_i.
    Saved: h, W, t and lse (N,).
Backward runs once per forward (the saved gradients are scaled in place); a second backward raises.

Precision: the matmuls run in the compute dtype (hidden's dtype; under torch.autocast an fp32 hidden uses
the autocast dtype) with fp32 accumulation inside the GEMM; W is cast to the compute dtype once per call when
its dtype differs (e.g. an fp32 master weight under autocast). The chunk logits are stored in the compute
dtype, as a plain bf16 LM head would store them; softmax math is fp32 in the kernel; dx is rounded to the
compute dtype before the two gradient matmuls. dh and dW come back in hidden's and weight's own dtypes.
"""
import torch

from kernels._checks import linear_cross_entropy_args
from kernels._dispatch import use_triton
from kernels._head import addmm_fp32_, default_chunk_size
from kernels.cross_entropy import _mean_scale, cross_entropy_bwd, cross_entropy_fwd, cross_entropy_reference


# ----------------------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------------------
def linear_cross_entropy_reference(hidden, weight, target, *, ignore_index: int = -100, reduction: str = "mean",
                                   z_loss: float = 0.0, softcap: float | None = None,
                                   chunk_size: int | None = None):
    """fp32 logits materialised, then `cross_entropy_reference`. chunk_size is accepted for signature parity
    with `linear_cross_entropy` and unused."""
    linear_cross_entropy_args(hidden, weight, target, ignore_index=ignore_index, reduction=reduction,
                              softcap=softcap, chunk_size=chunk_size)
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        logits = hidden.float() @ weight.float().t()             # (N, V) fp32: the memory the fused path saves
        return cross_entropy_reference(logits, target, ignore_index=ignore_index, reduction=reduction,
                                       z_loss=z_loss, softcap=softcap)


# ----------------------------------------------------------------------------------------------------------
# Chunk helpers (the chunk rule and fp32 dW accumulation are in kernels/_head.py; the per-chunk work is the
# cross-entropy kernel of kernels/cross_entropy.py)
# ----------------------------------------------------------------------------------------------------------
def _chunks(N: int, C: int):
    return ((s, min(s + C, N)) for s in range(0, N, C))


# ----------------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------------
class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, target, ignore_index, reduction, z_loss, softcap, chunk_size, compute_dtype,
                grad_enabled):
        kw = dict(ignore_index=ignore_index, z_loss=z_loss, softcap=softcap)
        N, d = hidden.shape
        V = weight.shape[0]
        # needs_input_grad is True under torch.no_grad too; grad_enabled (the caller's mode) says if it counts
        needs_h, needs_w = (grad_enabled and n for n in ctx.needs_input_grad[:2])
        grads_now = reduction != "none" and (needs_h or needs_w)
        dev = hidden.device
        with torch.autocast(device_type=dev.type, enabled=False):
            h = hidden.to(compute_dtype)                           # (N, d)
            w = weight.to(compute_dtype)                           # (V, d), cast once when dtypes differ
            loss = torch.empty(N, device=dev, dtype=torch.float32)
            lse = torch.empty(N, device=dev, dtype=torch.float32)
            scale = _mean_scale(target, ignore_index) if reduction == "mean" else None
            dh = torch.empty(N, d, device=dev, dtype=compute_dtype) if grads_now and needs_h else None
            dw = torch.zeros(V, d, device=dev, dtype=torch.float32) if grads_now and needs_w else None
            buf = torch.empty(min(chunk_size, N), V, device=dev, dtype=compute_dtype)  # (C, V) the only logits
            for s, e in _chunks(N, chunk_size):
                x = buf[: e - s]
                torch.mm(h[s:e], w.t(), out=x)                     # (c, V) this chunk's logits
                cross_entropy_fwd(x, target[s:e], dlogits=x if grads_now else None, grad_scale=scale,
                                  loss=loss[s:e], lse=lse[s:e], **kw)
                if dh is not None:
                    torch.mm(x, w, out=dh[s:e])                    # (c, d) dx_c W
                if dw is not None:
                    addmm_fp32_(dw, x.t(), h[s:e])                # (V, d) += dx_cᵀ h_c
            del buf
        ctx.mode = None
        if grads_now:
            ctx.save_for_backward(dh, dw)
            ctx.mode = "scale"
        elif needs_h or needs_w:
            ctx.save_for_backward(hidden, weight, target, lse)
            ctx.mode = "recompute"
        ctx.kw, ctx.chunk_size, ctx.compute_dtype = kw, chunk_size, compute_dtype
        ctx.dtypes = (hidden.dtype, weight.dtype)
        if reduction == "sum":
            return loss.sum()
        if reduction == "mean":
            return loss.sum() * scale[0]
        return loss

    @staticmethod
    def backward(ctx, dloss):
        if ctx.mode == "used":
            raise RuntimeError("linear_cross_entropy: backward ran twice; its saved gradients were scaled in "
                               "place by the first. Recompute the loss instead of using retain_graph=True.")
        h_dtype, w_dtype = ctx.dtypes
        if ctx.mode == "scale":
            dh, dw = ctx.saved_tensors
            ctx.mode = "used"
            g = dloss.to(torch.float32)
            dh = None if dh is None else dh.mul_(g).to(h_dtype)           # bf16 · fp32 scalar, fp32 math
            dw = None if dw is None else dw.mul_(g).to(w_dtype)
            return dh, dw, None, None, None, None, None, None, None, None
        hidden, weight, target, lse = ctx.saved_tensors
        needs_h, needs_w = ctx.needs_input_grad[:2]
        N, d = hidden.shape
        V = weight.shape[0]
        cd, dev = ctx.compute_dtype, hidden.device
        with torch.autocast(device_type=dev.type, enabled=False):
            h, w = hidden.to(cd), weight.to(cd)
            dh = torch.empty(N, d, device=dev, dtype=cd) if needs_h else None
            dw = torch.zeros(V, d, device=dev, dtype=torch.float32) if needs_w else None
            buf = torch.empty(min(ctx.chunk_size, N), V, device=dev, dtype=cd)
            for s, e in _chunks(N, ctx.chunk_size):
                x = buf[: e - s]
                torch.mm(h[s:e], w.t(), out=x)                     # recompute this chunk's logits
                cross_entropy_bwd(x, target[s:e], lse[s:e], dloss[s:e], dlogits=x, **ctx.kw)
                if dh is not None:
                    torch.mm(x, w, out=dh[s:e])
                if dw is not None:
                    addmm_fp32_(dw, x.t(), h[s:e])
        dh = None if dh is None else dh.to(h_dtype)
        dw = None if dw is None else dw.to(w_dtype)
        return dh, dw, None, None, None, None, None, None, None, None


# ----------------------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------------------
def linear_cross_entropy(hidden, weight, target, *, ignore_index: int = -100, reduction: str = "mean",
                         z_loss: float = 0.0, softcap: float | None = None, chunk_size: int | None = None,
                         backend: str = "auto"):
    """cross_entropy(hidden @ weight.T, target) for hidden (N, d) and the LM head weight (V, d), computed
    chunk_size tokens at a time so the (N, V) logits never exist (default: `default_chunk_size`).
    Same reductions, z_loss and softcap as `kernels.cross_entropy`; the loss is fp32."""
    linear_cross_entropy_args(hidden, weight, target, ignore_index=ignore_index, reduction=reduction,
                              softcap=softcap, chunk_size=chunk_size)
    if not use_triton(backend, hidden, weight, target):
        return linear_cross_entropy_reference(hidden, weight, target, ignore_index=ignore_index,
                                              reduction=reduction, z_loss=z_loss, softcap=softcap)
    dev = hidden.device.type
    compute_dtype = hidden.dtype
    if compute_dtype == torch.float32 and torch.is_autocast_enabled(dev):
        compute_dtype = torch.get_autocast_dtype(dev)
    N, V = hidden.shape[0], weight.shape[0]
    chunk = chunk_size or default_chunk_size(N, V, compute_dtype)
    return _LinearCrossEntropy.apply(hidden, weight, target, ignore_index, reduction, float(z_loss),
                                     None if softcap is None else float(softcap), chunk, compute_dtype,
                                     torch.is_grad_enabled())
