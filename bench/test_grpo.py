"""Benchmark: the GRPO policy loss fused with the LM head (kernels.grpo.linear_grpo_loss), forward + backward.

Against the unfused reference (materialised bf16 logits hidden @ Wᵀ, fp32 log-softmax and GRPO math by
autograd) and the floor: the bare LM-head matmul forward + backward (3 matmuls, 6·N·d·V FLOPs), which no
fused loss can beat. Reported: time, TFLOP/s at 6·N·d·V, and peak memory above the inputs. On CUDA: N = 2k,
4k, 8k, 16k tokens, V = 50304 and 131072, d = 2048, bf16, synchronised inside the timed callable, warm-up
excluded. On CPU: tiny sizes, the kernels under Triton's interpreter, so the suite keeps working; no timing
claims.

    pytest bench/test_grpo.py --benchmark-only --benchmark-columns=mean,stddev
"""
import pytest
import torch

from kernels.grpo import grpo_loss_reference, linear_grpo_loss
from kernels.logprobs import token_logprobs_reference

CUDA = torch.cuda.is_available()
KW = dict(eps_low=0.2, eps_high=0.28, beta=0.04)


def head_flops(N, d, V):
    """Forward + backward of the LM head: logits (2·N·d·V), ∂hidden (2·N·d·V), ∂W (2·N·d·V)."""
    return 6 * N * d * V


def tflops(flops, seconds):
    return flops / seconds / 1e12


def _problem(N, V, d, device):
    gen = torch.Generator(device=device).manual_seed(0)
    dtype = torch.bfloat16 if CUDA else torch.float32
    hidden = torch.randn(N, d, device=device, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(V, d, device=device, generator=gen) / d ** 0.5).to(dtype).requires_grad_()
    target = torch.randint(0, V, (N,), device=device, generator=gen)
    old = -torch.rand(N, device=device, generator=gen) * 5 - 8
    ref = old + 0.1 * torch.randn(N, device=device, generator=gen)
    adv = torch.randn(N, device=device, generator=gen)
    w = torch.full((N,), 1.0 / N, device=device)
    return hidden, weight, target, old, ref, adv, w


def _fused(hidden, weight, target, old, ref, adv, w):
    loss, _ = linear_grpo_loss(hidden, weight, target, old, ref, adv, w, backend="triton", **KW)
    loss.backward()
    return loss


def _unfused(hidden, weight, target, old, ref, adv, w):
    logp = token_logprobs_reference(hidden @ weight.t(), target)         # (N, V) logits materialised
    loss, _ = grpo_loss_reference(logp, old, ref, adv, w, **KW)
    loss.backward()
    return loss


def _head_matmul(hidden, weight, target, old, ref, adv, w):
    logits = hidden @ weight.t()
    logits.backward(torch.ones_like(logits))  # the same three matmuls, no loss at all
    return None


PROVIDERS = {"fused": _fused, "unfused": _unfused, "head_matmul": _head_matmul}
SHAPES = ([(N, V, 2048) for V in (50304, 131072) for N in (2048, 4096, 8192, 16384)] if CUDA
          else [(9, 70, 16), (33, 130, 8)])


def _provenance():
    import triton
    dev = torch.cuda.get_device_name() if CUDA else "cpu (Triton interpreter)"
    return dict(device=dev, torch=torch.__version__, triton=triton.__version__)


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("N,V,d", SHAPES)
def test_bench_linear_grpo_loss(benchmark, N, V, d, provider):
    device = "cuda" if CUDA else "cpu"
    args = _problem(N, V, d, device)
    hidden, weight = args[0], args[1]
    fn = PROVIDERS[provider]
    info = dict(_provenance(), shape=f"N={N} V={V} d={d} {str(hidden.dtype).removeprefix('torch.')}",
                provider=provider, baselines="unfused (materialised logits + reference math), head_matmul (floor)")
    # 1. check the fused loss against the unfused one at this shape (on a 2k-row slice when that is larger)
    if provider == "fused":
        n = min(N, 2048)

        def sliced():
            h, wt, *rest = args
            return (h[:n].detach().requires_grad_(), wt.detach().requires_grad_(), *(a[:n] for a in rest))
        got, want = _fused(*sliced()).item(), _unfused(*sliced()).item()
        tol = 2e-2 * abs(want) + 1e-3 if CUDA else 1e-5 * abs(want) + 1e-6
        assert abs(got - want) <= tol, f"fused loss {got} != unfused {want} at N={n} V={V} d={d}"
        info["checked_rows"] = n

    def run():
        hidden.grad = weight.grad = None
        fn(*args)
        if CUDA:
            torch.cuda.synchronize()
    if CUDA:
        torch.cuda.synchronize()
        hidden.grad = weight.grad = None
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        try:
            run()
        except torch.cuda.OutOfMemoryError:
            pytest.skip(f"{provider} runs out of memory at N={N} V={V} d={d}")
        info["peak_extra_gib"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 30
        benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=2)
        if benchmark.stats is not None:
            sec = benchmark.stats.stats.median
            info["ms"] = sec * 1e3
            info["TFLOP/s (6·N·d·V)"] = tflops(head_flops(N, d, V), sec)
    else:
        benchmark.pedantic(run, rounds=1, iterations=1)
        info["note"] = "CPU smoke run under the interpreter: no timing claims"
    benchmark.extra_info.update(info)
