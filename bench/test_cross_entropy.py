"""Benchmarks: cross-entropy on logits, fused linear + cross-entropy, and the device copy they are judged by.

Each case checks its result first, then times forward + backward through `bench.common.measure` (CUDA
synchronisation inside the timed callable; inputs prepared and synchronised in `setup`, outside the timing;
warm-up rounds excluded), which records the shape, the hardware rate (GB/s for the logits path, with its
fraction of the measured device copy bandwidth; effective TFLOP/s = 6·N·d·V / time for the fused path), the
peak memory in total and beyond the inputs, and the baseline it competes with. Provenance heads the run.

Baselines: F.cross_entropy on materialised logits, eager and torch.compile; for the fused path also the bare
LM-head matmul forward + backward (logits = h Wᵀ, then dh, dW from a given dlogits), which is the floor.

On CUDA: N ∈ {4k, 8k, 16k, 32k} tokens, d ∈ {768, 2048, 4096}, V ∈ {50304, 131072}, bf16, skipping cases that
would not fit in memory. Without CUDA: one tiny shape per suite, the kernels in Triton's interpreter, so the
suites keep working; the times are then meaningless and no rate is recorded.
"""
import pytest
import torch
import torch.nn.functional as F
import triton

from bench.common import CUDA, DEVICE, fits, measure, skip_compile_on_cpu, sync
from kernels.cross_entropy import cross_entropy, cross_entropy_reference
from kernels.linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_reference

DTYPE = torch.bfloat16 if CUDA else torch.float32


# ----------------------------------------------------------------------------------------------------------
# What is counted
# ----------------------------------------------------------------------------------------------------------
def ce_bytes(N, V, elt):
    """Least HBM traffic of cross-entropy forward + backward: read the logits once, write dlogits once,
    plus per row the int64 target and the fp32 loss and lse."""
    return 2 * N * V * elt + N * (8 + 4 + 4)


def linear_ce_flops(N, d, V):
    """The three LM-head matmuls: logits (2·N·d·V), dh (2·N·d·V), dW (2·N·d·V)."""
    return 6 * N * d * V


def copy_bytes(nbytes):
    """A device-to-device copy reads and writes every byte."""
    return 2 * nbytes


def materialised_bytes(N, V, elt):
    """Rough peak of the materialised baselines: logits, log-softmax, dlogits and one spare (N, V) buffer."""
    return 4 * N * V * elt


# ----------------------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------------------
if CUDA:
    CE_SHAPES = [(N, V) for N in (4096, 8192, 16384, 32768) for V in (50304, 131072)]
    LCE_SHAPES = [(N, d, V) for N in (4096, 8192, 16384, 32768) for d in (768, 2048, 4096) for V in (50304, 131072)]
else:
    CE_SHAPES = [(16, 300)]
    LCE_SHAPES = [(16, 8, 300)]


@pytest.fixture(scope="module")
def copy_gbps():
    """Device-to-device copy bandwidth of 1 GiB, measured once per run (CUDA), in GB/s."""
    if not CUDA:
        return None
    nbytes = 2**30
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=200)
    return copy_bytes(nbytes) / (ms * 1e-3) / 1e9


def test_device_copy_bandwidth(benchmark, copy_gbps):
    nbytes = 2**30 if CUDA else 2**20
    src = torch.empty(nbytes, dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)

    def step():
        dst.copy_(src)
        sync()

    dst.copy_(src)
    assert torch.equal(dst, src)
    seconds = measure(benchmark, step, suite="device_copy", impl="copy", shape=f"{nbytes} bytes uint8",
                      nbytes=copy_bytes(nbytes), baseline="this is the baseline")
    if seconds:
        benchmark.extra_info["GB/s (do_bench)"] = round(copy_gbps, 1)


# ----------------------------------------------------------------------------------------------------------
# Cross-entropy on logits
# ----------------------------------------------------------------------------------------------------------
def _torch_ce(x, t):
    return F.cross_entropy(x, t)


CE_IMPLS = {
    "triton": lambda x, t: cross_entropy(x, t, backend="triton"),
    "triton_inplace": lambda x, t: cross_entropy(x, t, inplace_backward=True, backend="triton"),
    "torch_eager": _torch_ce,
    "torch_compile": None,  # built per shape below
}


@pytest.mark.parametrize("impl", list(CE_IMPLS))
@pytest.mark.parametrize("N,V", CE_SHAPES, ids=[f"N{n}-V{v}" for n, v in CE_SHAPES])
def test_cross_entropy_logits(benchmark, copy_gbps, N, V, impl):
    elt = torch.finfo(DTYPE).bits // 8
    if not fits(materialised_bytes(N, V, elt) + N * V * elt):
        pytest.skip(f"N={N} V={V} does not fit")
    skip_compile_on_cpu(impl)
    fn = CE_IMPLS[impl]
    if impl == "torch_compile":
        torch._dynamo.reset()  # a fresh compile per shape, not a dynamic-shape graph shared across shapes
        fn = torch.compile(_torch_ce, dynamic=False)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    base = (torch.randn(N, V, device=DEVICE, generator=g) * 2).to(DTYPE)
    target = torch.randint(0, V, (N,), device=DEVICE, generator=g)

    # 1. check: loss and dlogits of the first rows against the fp32 reference
    rows = min(N, 256)
    x = base[:rows].clone().requires_grad_()
    loss = fn(x, target[:rows])
    (grad,) = torch.autograd.grad(loss, x)
    xr = base[:rows].float().requires_grad_()
    want = cross_entropy_reference(xr, target[:rows])
    (want_grad,) = torch.autograd.grad(want, xr)
    tol = 1e-5 if DTYPE == torch.float32 else 2e-2
    assert abs(loss.item() - want.item()) <= tol * max(1.0, abs(want.item())), f"{impl}: loss {loss} vs {want}"
    assert (grad.float() - want_grad).abs().max().item() <= tol / rows * 4 + 1e-6, f"{impl}: dlogits differ"

    # 2. time forward + backward
    def setup():
        x = base.clone().requires_grad_()
        sync()
        return (x,), {}

    def step(x):
        (dx,) = torch.autograd.grad(fn(x, target), x)
        sync()
        return dx

    seconds = measure(benchmark, step, setup=setup, suite="cross_entropy", impl=impl,
                      shape=f"N={N} V={V} {str(DTYPE).removeprefix('torch.')}", nbytes=ce_bytes(N, V, elt),
                      N=N, V=V, baseline="F.cross_entropy on materialised logits (torch_eager, torch_compile)")
    if seconds:
        benchmark.extra_info["fraction_of_copy"] = round(ce_bytes(N, V, elt) / seconds / 1e9 / copy_gbps, 3)


# ----------------------------------------------------------------------------------------------------------
# Fused linear + cross-entropy
# ----------------------------------------------------------------------------------------------------------
def _torch_linear_ce(h, w, t):
    return F.cross_entropy(F.linear(h, w), t)


LCE_IMPLS = ["triton_fused", "torch_eager", "torch_compile", "matmul_floor"]


@pytest.mark.parametrize("impl", LCE_IMPLS)
@pytest.mark.parametrize("N,d,V", LCE_SHAPES, ids=[f"N{n}-d{d}-V{v}" for n, d, v in LCE_SHAPES])
def test_linear_cross_entropy(benchmark, N, d, V, impl):
    skip_compile_on_cpu(impl)
    elt = torch.finfo(DTYPE).bits // 8
    weights = V * d * (2 * elt + 4)  # W, dW and the fused path's fp32 dW accumulator
    if impl != "triton_fused" and not fits(materialised_bytes(N, V, elt) + weights):
        pytest.skip(f"N={N} d={d} V={V} materialised does not fit")
    g = torch.Generator(device=DEVICE).manual_seed(0)
    hidden = torch.randn(N, d, device=DEVICE, generator=g).to(DTYPE)
    weight = (torch.randn(V, d, device=DEVICE, generator=g) / d**0.5).to(DTYPE)
    target = torch.randint(0, V, (N,), device=DEVICE, generator=g)

    if impl == "matmul_floor":
        dlogits = torch.randn(N, V, device=DEVICE, generator=g).to(DTYPE)

        def fn(h, w):
            return torch.autograd.grad(F.linear(h, w), (h, w), dlogits)
    else:
        loss_fn = {"triton_fused": lambda h, w, t: linear_cross_entropy(h, w, t, backend="triton"),
                   "torch_eager": _torch_linear_ce}.get(impl)
        if impl == "torch_compile":
            torch._dynamo.reset()
            loss_fn = torch.compile(_torch_linear_ce, dynamic=False)

        def fn(h, w):
            return torch.autograd.grad(loss_fn(h, w, target), (h, w))

        # 1. check: the loss and dh against a reference (fp32 on CPU; torch's bf16 eager path on CUDA)
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss = loss_fn(h, w, target)
        dh, _ = torch.autograd.grad(loss, (h, w))
        ref = linear_cross_entropy_reference if not CUDA else _torch_linear_ce
        hr, wr = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        want = ref(hr, wr, target)
        dh_want, _ = torch.autograd.grad(want, (hr, wr))
        tol = 1e-5 if DTYPE == torch.float32 else 2e-2
        assert abs(loss.item() - want.item()) <= tol * max(1.0, abs(want.item())), f"{impl}: {loss} vs {want}"
        err = (dh.float() - dh_want.float()).abs().max().item()
        assert err <= tol * dh_want.float().abs().max().item() + 1e-6, f"{impl}: dhidden max |err| {err:.3g}"

    # 2. time forward + backward
    def setup():
        sync()
        return (hidden.detach().requires_grad_(), weight.detach().requires_grad_()), {}

    def step(h, w):
        out = fn(h, w)
        sync()
        return out

    measure(benchmark, step, setup=setup, suite="linear_cross_entropy", impl=impl,
            shape=f"N={N} d={d} V={V} {str(DTYPE).removeprefix('torch.')}", flops=linear_ce_flops(N, d, V),
            N=N, d=d, V=V, baseline="matmul_floor (LM head fwd+bwd); F.cross_entropy(F.linear) eager and compiled")
