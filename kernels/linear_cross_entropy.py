"""Fused LM head + cross-entropy: loss(hidden @ weightᵀ, target) without ever holding the (N, V) logits.

Math, with hidden h (N, d), the LM-head weight W (V, d) (no bias), target t (N,):

    x      = h Wᵀ                                 (N, V), never materialised: one chunk of rows at a time
    loss_i = cross_entropy(x_i, t_i)              as in kernels/cross_entropy.py (z-loss, soft-cap,
                                                  ignore_index, reductions "none" / "sum" / "mean")
    dx     = g · r · dloss/dx                     (N, V), per chunk, from the cross-entropy kernel
    dh     = dx W                                 (N, d)
    dW     = dxᵀ h = Σ_chunks dx_cᵀ h_c           (V, d), accumulated in fp32 over the chunks

Chunking (`run_head` of kernels/_head.py, the loop every fused head shares): the N tokens are processed in
chunks of C rows (`chunk_size`). For each chunk the forward computes x_c = h_c Wᵀ (C, V) into one reused
buffer, runs the cross-entropy kernel on it, which overwrites it in place with dx_c, then dh_c = dx_c W and
dW += dx_cᵀ h_c. So the extra memory is one (C, V) buffer in the compute
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
from dataclasses import dataclass

import torch

from kernels._checks import linear_cross_entropy_args
from kernels._dispatch import use_triton
from kernels._head import default_chunk_size, head_dtype, needs_graph, run_head
from kernels.cross_entropy import _mean_scale, _reduce, cross_entropy_bwd, cross_entropy_fwd, \
    cross_entropy_reference


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
# Per-chunk steps: the cross-entropy kernels of kernels/cross_entropy.py on one chunk of logits; the loop
# around them, the chunk rule and the fp32 dW are kernels/_head.py's `run_head`
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Options:
    """What a call fixes besides the tensors."""
    ignore_index: int
    reduction: str
    z_loss: float
    softcap: float | None
    chunk_size: int
    dtype: torch.dtype          # the compute dtype (`head_dtype`)

    @property
    def kernel_args(self):
        return dict(ignore_index=self.ignore_index, z_loss=self.z_loss, softcap=self.softcap)


def _forward(hidden, weight, target, o: _Options, need_hidden, need_weight):
    """(loss (N,), lse (N,), scale, dh, dW): fp32 losses and lse; scale the 1-element 1/n for "mean" (else
    None); for "mean"/"sum", dh (compute dtype) and dW (fp32) of the reduced loss with r folded in, as asked
    by need_hidden / need_weight (else None): the kernel writes dx_c over x_c during the forward."""
    h, w = hidden.to(o.dtype), weight.to(o.dtype)              # (N, d), (V, d): cast once when dtypes differ
    N = h.shape[0]
    loss = torch.empty(N, device=h.device, dtype=torch.float32)
    lse = torch.empty(N, device=h.device, dtype=torch.float32)
    scale = _mean_scale(target, o.ignore_index) if o.reduction == "mean" else None
    grads = o.reduction != "none" and (need_hidden or need_weight)

    def step(s, e, x):
        cross_entropy_fwd(x, target[s:e], dlogits=x if grads else None, grad_scale=scale, loss=loss[s:e],
                          lse=lse[s:e], **o.kernel_args)
        return x if grads else None

    dh, dw = run_head(h, w, step, o.chunk_size, need_hidden=grads and need_hidden,
                      need_weight=grads and need_weight)
    return loss, lse, scale, dh, dw


# ----------------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------------
class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, target, o: _Options):
        needs_h, needs_w = ctx.needs_input_grad[:2]
        loss, lse, scale, dh, dw = _forward(hidden, weight, target, o, needs_h, needs_w)
        if o.reduction != "none":
            ctx.save_for_backward(dh, dw)
            ctx.mode = "scale"
        else:
            ctx.save_for_backward(hidden, weight, target, lse)
            ctx.mode = "recompute"
        ctx.o = o
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return _reduce(loss, o.reduction, scale)

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
            return dh, dw, None, None
        hidden, weight, target, lse = ctx.saved_tensors
        o = ctx.o

        def step(s, e, x):                                           # x: this chunk's logits, recomputed
            return cross_entropy_bwd(x, target[s:e], lse[s:e], dloss[s:e], dlogits=x, **o.kernel_args)

        dh, dw = run_head(hidden.to(o.dtype), weight.to(o.dtype), step, o.chunk_size,
                          need_hidden=ctx.needs_input_grad[0], need_weight=ctx.needs_input_grad[1])
        return None if dh is None else dh.to(h_dtype), None if dw is None else dw.to(w_dtype), None, None


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
    dtype = head_dtype(hidden)
    o = _Options(ignore_index, reduction, float(z_loss), None if softcap is None else float(softcap),
                 chunk_size or default_chunk_size(hidden.shape[0], weight.shape[0], dtype), dtype)
    if needs_graph(hidden, weight):
        return _LinearCrossEntropy.apply(hidden, weight, target, o)
    loss, _, scale, _, _ = _forward(hidden, weight, target, o, False, False)
    return _reduce(loss, reduction, scale)
