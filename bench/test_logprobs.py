"""Benchmark: per-token log-probs from logits (kernels.logprobs.token_logprobs), forward only (scoring).

Memory-bound: reported in GB/s over the bytes that must move (the logits read once, target in, logp out),
against two PyTorch baselines: log_softmax + gather (materialises (N, V) fp32), and logsumexp-based
(x_t − logsumexp(x), still an fp32 upcast of the logits). On CUDA: the full sweep, bf16 logits, timed with a
CUDA synchronisation inside the benchmarked callable (bench.common.measure), warm-up rounds excluded, peak
memory recorded. On CPU:
the same suite at tiny sizes with the kernel under Triton's interpreter, so it keeps working; no timing claims.

    pytest bench/test_logprobs.py --benchmark-only --benchmark-columns=mean,stddev
"""
import pytest
import torch

from bench.common import CUDA, DEVICE, measure, sync
from kernels.logprobs import token_logprobs, token_logprobs_reference


def logprobs_bytes(N, V, elem_bytes, target_bytes=8):
    """Bytes a log-prob pass must move: read the (N, V) logits and the targets, write fp32 logp."""
    return N * V * elem_bytes + N * target_bytes + N * 4


def _log_softmax_gather(x, t):
    return torch.log_softmax(x.float(), dim=-1).gather(-1, t[:, None]).squeeze(-1)


def _logsumexp_based(x, t):
    xf = x.float()
    return xf.gather(-1, t[:, None]).squeeze(-1) - torch.logsumexp(xf, dim=-1)


PROVIDERS = {
    "triton": lambda x, t: token_logprobs(x, t, backend="triton"),
    "log_softmax_gather": _log_softmax_gather,
    "logsumexp": _logsumexp_based,
}
SHAPES = [(N, V) for N in (4096, 16384) for V in (50304, 131072)] if CUDA else [(8, 64), (5, 257)]


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("N,V", SHAPES)
def test_bench_token_logprobs(benchmark, N, V, provider):
    dtype = torch.bfloat16 if CUDA else torch.float32
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    x = (4 * torch.randn(N, V, device=DEVICE, generator=gen)).to(dtype)
    t = torch.randint(0, V, (N,), device=DEVICE, generator=gen)
    fn = PROVIDERS[provider]
    # 1. check: against the fp32 reference on the same (rounded) logits
    with torch.no_grad():
        got, want = fn(x, t), token_logprobs_reference(x, t)
        err = (got.float() - want).abs().max().item()
    assert err < 1e-3, f"{provider}: max |logp − reference| = {err:.3g} at N={N}, V={V}"
    # 2. time
    def run():
        with torch.no_grad():
            fn(x, t)
        sync()
    measure(benchmark, run, suite="logprobs", impl=provider, rounds=20, warmup=3,
            shape=f"N={N} V={V} {str(dtype).removeprefix('torch.')}", nbytes=logprobs_bytes(N, V, x.element_size()),
            N=N, V=V, baseline="log_softmax_gather, logsumexp", max_abs_err=err)
