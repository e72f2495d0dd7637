"""The fused LM head, written once for the three ops that fuse it: cross-entropy, per-token log-probs, GRPO.

Each op computes its loss from the logits x = h Wᵀ (N, V) of hidden h (N, d) and head weight W (V, d)
without ever holding all of them: `run_head` walks the N rows in chunks of C and, for the chunk of rows c,

    1. x_c   = h_c Wᵀ              (C, V)  into one reused buffer, in the compute dtype
    2. dx_c  = step(s, e, x_c)     (C, V)  the op's own kernel on rows s..e; it overwrites x_c in place with
                                           ∂L/∂x_c and returns it, or returns None (no gradient now)
    3. dh_c  = dx_c W              (C, d)  in the compute dtype
    4. dW   += dx_cᵀ h_c           (V, d)  in an fp32 accumulator, so dW does not round once per chunk

The extra memory is one (C, V) buffer plus the fp32 dW, flat in N; the FLOPs are the three matmuls of a
plain head, 6·N·d·V for forward and backward. The rules every fused op shares live here too:

  * compute dtype (`head_dtype`): hidden's dtype, or under torch.autocast the autocast dtype for an fp32
    hidden, as a plain `hidden @ weightᵀ` would run. The matmuls accumulate in fp32 inside the GEMM and store
    the logits in the compute dtype; all softmax math is fp32 in the kernels. ∂hidden and ∂weight come back
    in the inputs' own dtypes. linear_cross_entropy casts inside its autograd Function and casts the fp32 dW
    straight to weight's dtype; the log-prob and GRPO heads cast with `autocast_inputs` before theirs, so an
    fp32 master weight under autocast gets dW rounded to the compute dtype first.
  * chunk rule (`default_chunk_size`): one C for one (N, V, dtype). A chunk's matmul is reproducible only
    for the same chunk shape, so this single rule, with the single loop below and the same log-prob kernel
    launcher in both, is what makes rollout scoring (linear_token_logprobs) and the GRPO training pass
    (linear_grpo_loss) compute bitwise-identical log-probs for the same rows: the first-pass ratio is 1.
  * graph (`needs_graph`): a call builds an autograd graph only when grad is enabled and hidden or weight
    requires it; otherwise the op runs its forward steps alone and saves nothing.
"""
import functools

import torch


def head_dtype(hidden) -> torch.dtype:
    """The dtype the head's matmuls run in: hidden's own, or the autocast dtype for an fp32 hidden under
    torch.autocast."""
    device = hidden.device.type
    if hidden.dtype == torch.float32 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return hidden.dtype


def autocast_inputs(hidden, weight):
    """hidden and weight cast to `head_dtype` by differentiable casts outside the autograd Functions, so
    autograd returns ∂hidden and ∂weight in their own dtypes (e.g. an fp32 master weight)."""
    dtype = head_dtype(hidden)
    if weight.dtype != dtype or hidden.dtype != dtype:
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    return hidden, weight


def needs_graph(*tensors) -> bool:
    """Whether a call must record an autograd graph: grad is enabled and some input requires it."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def default_chunk_size(N: int, V: int, dtype: torch.dtype) -> int:
    """Tokens per chunk: a (C, V) logits buffer of at most 512 MiB, C a multiple of 256 in [256, 8192].
    Large C keeps the dW update (K = C) efficient: its fp32 read-modify-write of dW is amortised over C."""
    budget = (512 * 2**20) // (V * torch.finfo(dtype).bits // 8)
    return max(1, min(N, max(256, min(8192, budget // 256 * 256))))


def run_head(hidden, weight, step, chunk_size=None, *, need_hidden=False, need_weight=False):
    """Steps 1-4 of the module docstring over hidden (N, d) and weight (V, d), both in the compute dtype;
    `step(s, e, logits)` gets the (e − s, V) logits of rows s..e. chunk_size None: `default_chunk_size`.
    Returns (∂hidden (N, d) in the compute dtype, ∂weight (V, d) fp32), each None unless asked for."""
    N, d = hidden.shape
    V = weight.shape[0]
    C = chunk_size or default_chunk_size(N, V, hidden.dtype)
    dev = hidden.device
    dhidden = torch.empty(N, d, dtype=hidden.dtype, device=dev) if need_hidden else None
    dweight = torch.zeros(V, d, dtype=torch.float32, device=dev) if need_weight else None
    with torch.autocast(dev.type, enabled=False):  # the dtype is chosen; the fp32 dW takes no autocast casts
        buf = torch.empty(min(C, N), V, dtype=hidden.dtype, device=dev)       # (C, V) the only logits
        for s in range(0, N, C):
            e = min(s + C, N)
            logits = torch.mm(hidden[s:e], weight.t(), out=buf[:e - s])       # (c, V)
            dlogits = step(s, e, logits)
            if dlogits is None:
                continue
            if dhidden is not None:
                torch.mm(dlogits, weight, out=dhidden[s:e])                   # (c, d) dx_c W
            if dweight is not None:
                addmm_fp32_(dweight, dlogits.t(), hidden[s:e])               # (V, d) += dx_cᵀ h_c
    return dhidden, dweight


def addmm_fp32_(acc, a, b):
    """acc (fp32) += a @ b, with a and b in the compute dtype and fp32 accumulation."""
    if a.dtype == torch.float32:
        acc.addmm_(a, b)
    elif acc.is_cuda and fp32_out_addmm_works(acc.device):
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:
        # fallback: the chunk's product is rounded to the compute dtype once before the fp32 sum
        acc.add_(torch.mm(a, b))


@functools.cache
def fp32_out_addmm_works(device: torch.device) -> bool:
    """Whether torch.addmm(acc, a, b, out_dtype=fp32, out=acc) accumulates fp16/bf16 products into an fp32
    tensor in place on this device (a cuBLAS feature of recent PyTorch); probed once, checked numerically."""
    try:
        # small integers over 4: exact in bf16 and in every fp32 partial sum (and no RNG state consumed)
        a = ((torch.arange(64 * 32, device=device) % 7 - 3) / 4).reshape(64, 32).to(torch.bfloat16)
        b = ((torch.arange(32 * 48, device=device) % 5 - 2) / 4).reshape(32, 48).to(torch.bfloat16)
        acc = torch.ones(64, 48, device=device)
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
        want = 1.0 + a.float() @ b.float()
        return bool(torch.equal(acc, want))
    except (RuntimeError, TypeError, NotImplementedError):
        return False
