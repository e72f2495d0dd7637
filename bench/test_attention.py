"""Attention throughput: Triton vs the fp32 reference and F.scaled_dot_product_attention.

On CUDA: bf16, T = 512 … 16k, head dims 64 and 128, causal and not, forward / backward / forward+backward,
with B·T = 16k tokens and H·D = 2048 per shape (as in the FlashAttention papers' sweeps). Each case first
checks the output against SDPA, then times with CUDA synchronisation inside the timed callable (warm-up rounds
excluded) and records TFLOP/s, peak memory, the shape and the provenance in `benchmark.extra_info`.
On CPU: one tiny shape under the Triton interpreter so the suite keeps working; no timing claims.
Run: `python -m pytest bench/test_attention.py --benchmark-only` (add `--benchmark-json=…` to keep results).
"""
import pytest
import torch
import torch.nn.functional as F

from bench.common import CUDA, measure, sync
from kernels.attention import attention, attention_reference
from tests.helpers import assert_close


def attention_flops(B: int, H: int, T: int, D: int, causal: bool, mode: str) -> float:
    """Forward 4·B·H·T²·D (two matmuls), half when causal; backward 2.5× forward; fwd+bwd 3.5×."""
    fwd = 4 * B * H * T * T * D * (0.5 if causal else 1.0)
    return {"fwd": fwd, "bwd": 2.5 * fwd, "fwd+bwd": 3.5 * fwd}[mode]


def reference_bytes(B: int, H: int, T: int) -> int:
    """Rough peak of the reference: about six fp32 (B, H, T, T) tensors (S, its mask fill, exp, P and grads)."""
    return 6 * 4 * B * H * T * T


if CUDA:
    SEQ_LENS, HEAD_DIMS, DTYPE = [512, 1024, 2048, 4096, 8192, 16384], [64, 128], torch.bfloat16
    TOKENS, MODEL_DIM, ROUNDS, WARMUP = 16384, 2048, 20, 3  # B·T and H·D of every shape
else:
    SEQ_LENS, HEAD_DIMS, DTYPE = [37], [32], torch.float32
    TOKENS, MODEL_DIM, ROUNDS, WARMUP = 37, 64, 1, 0
BACKENDS = ["triton", "sdpa", "reference"]
MODES = ["fwd", "bwd", "fwd+bwd"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("T", SEQ_LENS)
def test_attention_throughput(benchmark, T, D, causal, backend, mode):
    device = "cuda" if CUDA else "cpu"
    B, H = max(1, TOKENS // T), MODEL_DIM // D
    if backend == "reference" and CUDA and reference_bytes(B, H, T) > 0.6 * torch.cuda.mem_get_info()[1]:
        pytest.skip(f"the reference materialises (B={B}, H={H}, {T}, {T}) fp32 scores several times: too big")
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, device=device, dtype=DTYPE, requires_grad=True) for _ in range(3))
    do = torch.randn(B, H, T, D, device=device, dtype=DTYPE)

    def forward():
        if backend == "reference":
            return attention_reference(q, k, v, causal=causal)
        return attention(q, k, v, causal=causal, backend=backend)

    # 1. Check: the output against SDPA in the same dtype (an independent implementation).
    with torch.no_grad():
        got = forward().float()
        want = F.scaled_dot_product_attention(q, k, v, is_causal=causal).float()
    assert_close(got, want, DTYPE, f"{backend} output vs SDPA", "attention_output")

    # 2. Time. The backward re-runs on one retained graph; gradients are cleared in the (untimed) setup.
    if mode == "fwd":
        def step():
            with torch.no_grad():
                forward()
            sync()
        setup = None
    elif mode == "bwd":
        o = forward()

        def step():
            o.backward(do, retain_graph=True)
            sync()

        def setup():
            q.grad = k.grad = v.grad = None
    else:
        def step():
            forward().backward(do)
            sync()

        def setup():
            q.grad = k.grad = v.grad = None

    measure(benchmark, step, setup=setup, suite="attention", impl=backend, rounds=ROUNDS, warmup=WARMUP,
            shape=f"B={B} H={H} T={T} D={D} {str(DTYPE).removeprefix('torch.')}",
            flops=attention_flops(B, H, T, D, causal, mode), causal=causal, mode=mode,
            baseline="reference (fp32 PyTorch), sdpa (F.scaled_dot_product_attention)")
