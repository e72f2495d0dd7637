"""Benchmark: the GRPO policy loss fused with the LM head (kernels.grpo.linear_grpo_loss), forward + backward.

Against the unfused reference (materialised bf16 logits hidden @ Wᵀ, fp32 log-softmax and GRPO math by
autograd) and the floor: the bare LM-head matmul forward + backward (3 matmuls, 6·N·d·V FLOPs), which no
fused loss can beat. Reported: time, TFLOP/s at 6·N·d·V, and peak memory above the inputs. On CUDA: N = 2k,
4k, 8k, 16k tokens, V = 50304 and 131072, d = 2048, bf16, synchronised inside the timed callable, warm-up
excluded (bench.common.measure; a case that runs out of memory is skipped). On CPU: tiny sizes, the kernels
under Triton's interpreter, so the suite keeps working; no timing claims.

    pytest bench/test_grpo.py --benchmark-only --benchmark-columns=mean,stddev
"""
import pytest
import torch

from bench.common import CUDA, DEVICE, measure, sync
from kernels.grpo import grpo_loss_reference, linear_grpo_loss
from kernels.logprobs import token_logprobs_reference

KW = dict(eps_low=0.2, eps_high=0.28, beta=0.04)


def head_flops(N, d, V):
    """Forward + backward of the LM head: logits (2·N·d·V), ∂hidden (2·N·d·V), ∂W (2·N·d·V)."""
    return 6 * N * d * V


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


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("N,V,d", SHAPES)
def test_bench_linear_grpo_loss(benchmark, N, V, d, provider):
    args = _problem(N, V, d, DEVICE)
    hidden, weight = args[0], args[1]
    fn = PROVIDERS[provider]
    info = {}
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
        sync()
    measure(benchmark, run, suite="grpo_loss", impl=provider, rounds=10, warmup=2,
            shape=f"N={N} V={V} d={d} {str(hidden.dtype).removeprefix('torch.')}", flops=head_flops(N, d, V),
            N=N, V=V, d=d, flops_formula="6·N·d·V (the LM head's three matmuls)",
            baseline="unfused (materialised logits + reference math), head_matmul (floor)", **info)
