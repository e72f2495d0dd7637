"""The LM-head chunking shared by the fused heads (cross-entropy, per-token log-probs, GRPO loss).

Each fused head computes logits = hidden_c @ weightᵀ for one chunk of tokens at a time and accumulates the
head weight's gradient over chunks in fp32. Using the same chunk rule and the same accumulation everywhere is
what makes rollout scoring and the GRPO training pass produce bitwise-identical log-probs.
"""
import functools

import torch


def default_chunk_size(N: int, V: int, dtype: torch.dtype) -> int:
    """Tokens per chunk: a (C, V) logits buffer of at most 512 MiB, C a multiple of 256 in [256, 8192].
    Large C keeps the dW update (K = C) efficient: its fp32 read-modify-write of dW is amortised over C."""
    budget = (512 * 2**20) // (V * torch.finfo(dtype).bits // 8)
    return max(1, min(N, max(256, min(8192, budget // 256 * 256))))


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


def addmm_fp32_(acc, a, b):
    """acc (fp32) += a @ b, with a and b in the compute dtype and fp32 accumulation."""
    if a.dtype == torch.float32:
        acc.addmm_(a, b)
    elif acc.is_cuda and fp32_out_addmm_works(acc.device):
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:
        # fallback: the chunk's product is rounded to the compute dtype once before the fp32 sum
        acc.add_(torch.mm(a, b))
