"""Cross-entropy on logits and fused linear + cross-entropy, against their references and F.cross_entropy.

CPU (Triton interpreter): small shapes, fp32 everywhere plus a bf16/fp16 spot check. CUDA (`gpu` marker):
full shapes, every dtype, low precision judged three ways against fp32, and peak memory.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from kernels.cross_entropy import cross_entropy, cross_entropy_fwd, cross_entropy_reference
from kernels.linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_reference
from tests.helpers import LargestAllocation, assert_close, assert_lowp

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def make_case(N, V, *, dtype=torch.float32, ignored=(), seed=0, scale=3.0, device=DEV):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(N, V, generator=g) * scale).to(device=device, dtype=dtype)
    target = torch.randint(0, V, (N,), generator=g).to(device)
    for i in ignored:
        target[i] = -100
    return logits, target


def upstream(reduction, N, seed=1, device=DEV):
    """A random upstream gradient: (N,) non-uniform for "none", a scalar other than 1 otherwise."""
    g = torch.Generator().manual_seed(seed)
    if reduction == "none":
        return torch.randn(N, generator=g).to(device)
    return torch.tensor(0.37).to(device)


def run_ce(fn, logits, target, dloss, inplace=False, **kw):
    """loss, lse and d(loss·dloss)/dlogits for one cross-entropy implementation."""
    leaf = logits.detach().clone().requires_grad_()
    x = leaf * 1.0 if inplace else leaf  # in place: give the kernel a buffer of its own to overwrite
    loss, lse = fn(x, target, return_lse=True, **({"inplace_backward": True} if inplace else {}), **kw)
    (loss * dloss).sum().backward()
    return loss.detach(), lse, leaf.grad


def ce_triton(*a, **kw):
    return cross_entropy(*a, backend="triton", **kw)


# ----------------------------------------------------------------------------------------------------------
# Cross-entropy on logits (interpreter on CPU)
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("N,V", [(5, 1), (5, 2), (6, 7), (7, 1000), (3, 50257)])
def test_matches_reference_and_torch(N, V, reduction):
    logits, target = make_case(N, V, ignored=(1,))
    dloss = upstream(reduction, N)
    loss, lse, grad = run_ce(ce_triton, logits, target, dloss, reduction=reduction)
    loss_r, lse_r, grad_r = run_ce(cross_entropy_reference, logits, target, dloss, reduction=reduction)
    assert_close(loss, loss_r, torch.float32, f"loss V={V} {reduction}")
    assert_close(lse, lse_r, torch.float32, f"lse V={V}")
    assert_close(grad, grad_r, torch.float32, f"dlogits V={V} {reduction}")
    # the reference itself against torch's built-in (which agrees with it when no target is all-ignored)
    leaf = logits.clone().requires_grad_()
    loss_t = F.cross_entropy(leaf, target, ignore_index=-100, reduction=reduction)
    (loss_t * dloss).sum().backward()
    assert_close(loss, loss_t, torch.float32, f"loss vs F.cross_entropy V={V} {reduction}")
    assert_close(grad, leaf.grad, torch.float32, f"dlogits vs F.cross_entropy V={V} {reduction}")
    assert_close(lse, torch.logsumexp(logits, -1), torch.float32, f"lse vs torch.logsumexp V={V}")


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("V", [7, 1000])
def test_softcap_and_z_loss(V, reduction):
    N, c, w = 6, 2.5, 1e-2
    logits, target = make_case(N, V, ignored=(2,), scale=6.0)  # scale ≫ c so the cap bends the logits
    dloss = upstream(reduction, N)
    kw = dict(reduction=reduction, softcap=c, z_loss=w)
    loss, lse, grad = run_ce(ce_triton, logits, target, dloss, **kw)
    loss_r, lse_r, grad_r = run_ce(cross_entropy_reference, logits, target, dloss, **kw)
    assert_close(loss, loss_r, torch.float32, "loss softcap+z_loss")
    assert_close(lse, lse_r, torch.float32, "lse softcap")
    assert_close(grad, grad_r, torch.float32, "dlogits softcap+z_loss")
    # the reference written another way: F.cross_entropy on capped logits plus w·lse² on kept tokens
    leaf = logits.clone().requires_grad_()
    z = c * torch.tanh(leaf / c)
    keep = (target != -100).float()
    per_token = F.cross_entropy(z, target, reduction="none") + w * torch.logsumexp(z, -1) ** 2 * keep
    want = per_token if reduction == "none" else per_token.sum() / keep.sum()
    (want * dloss).sum().backward()
    assert_close(loss, want, torch.float32, "loss vs capped F.cross_entropy + z-loss")
    assert_close(grad, leaf.grad, torch.float32, "dlogits vs capped F.cross_entropy + z-loss")


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_inplace_backward(reduction):
    N, V = 5, 1000
    logits, target = make_case(N, V, ignored=(0,))
    dloss = upstream(reduction, N)
    _, _, grad_r = run_ce(cross_entropy_reference, logits, target, dloss, reduction=reduction)
    _, _, grad = run_ce(ce_triton, logits, target, dloss, inplace=True, reduction=reduction)
    assert_close(grad, grad_r, torch.float32, f"dlogits in place {reduction}")
    # and the logits buffer itself holds the gradient after the forward (for a scalar loss, before g)
    buf = logits.clone().requires_grad_()
    x = buf * 1.0
    loss = cross_entropy(x, target, reduction=reduction, inplace_backward=True, backend="triton")
    if reduction != "none":
        _, _, want = run_ce(cross_entropy_reference, logits, target, torch.tensor(1.0), reduction=reduction)
        assert_close(x.detach(), want, torch.float32, f"logits buffer holds dlogits ({reduction})")
    (loss * dloss).sum().backward()
    assert_close(buf.grad, grad_r, torch.float32, f"dlogits through the overwritten buffer ({reduction})")


def test_ignored_rows_and_batches():
    N, V = 4, 300
    logits, target = make_case(N, V)
    all_ignored = torch.full_like(target, -100)
    for reduction in ("none", "sum", "mean"):
        for fn in (ce_triton, cross_entropy_reference):
            loss, lse, grad = run_ce(fn, logits, all_ignored, upstream(reduction, N), reduction=reduction)
            assert torch.isfinite(loss).all() and (loss == 0).all(), f"{fn.__name__} {reduction}: loss {loss}"
            assert (grad == 0).all(), f"{fn.__name__} {reduction}: {int((grad != 0).sum())} nonzero gradients"
            assert_close(lse, torch.logsumexp(logits, -1), torch.float32, "lse of ignored rows, still computed")
    # partly ignored: the mean divides by the kept tokens only; ignored rows get exactly 0 loss and gradient
    target[1] = target[3] = -100
    loss, _, grad = run_ce(ce_triton, logits, target, torch.tensor(1.0), reduction="mean")
    assert_close(loss, F.cross_entropy(logits, target), torch.float32, "mean over kept tokens")
    assert (grad[[1, 3]] == 0).all(), "ignored rows must have a zero gradient"
    per_token = cross_entropy(logits, target, reduction="none", backend="triton")
    assert (per_token[[1, 3]] == 0).all(), f"ignored rows must have 0 loss, got {per_token}"


def test_ignore_index_that_is_a_real_class():
    # a pad id that is also a vocabulary entry (pad == EOS): only rows whose target equals it are dropped
    N, V, pad = 6, 50, 3
    logits, target = make_case(N, V)
    target[[0, 4]] = pad
    loss, _, grad = run_ce(ce_triton, logits, target, torch.tensor(1.0), reduction="mean", ignore_index=pad)
    leaf = logits.clone().requires_grad_()
    F.cross_entropy(leaf, target, ignore_index=pad).backward()
    want = F.cross_entropy(logits, target, ignore_index=pad)
    assert_close(loss, want, torch.float32, "loss with ignore_index=3")
    assert_close(grad, leaf.grad, torch.float32, "dlogits with ignore_index=3")


def test_split_invariance_of_normalisation():
    # gradient accumulation: Σ over micro-batches of sum-losses / total kept tokens == the full-batch mean
    N, V = 8, 100
    logits, target = make_case(N, V, ignored=(2, 5))
    full = cross_entropy(logits, target, reduction="mean", backend="triton")
    n_kept = (target != -100).sum()
    parts = sum(cross_entropy(logits[s:s + 3], target[s:s + 3], reduction="sum", backend="triton")
                for s in range(0, N, 3)) / n_kept
    assert_close(parts, full, torch.float32, "micro-batched sum / kept tokens vs full mean")


def test_bad_target_raises_and_the_kernel_alone_writes_nan():
    logits, target = make_case(3, 10)
    target[1] = 10  # out of [0, V) and not ignore_index
    for backend in ("triton", "reference"):  # refused before either path runs (kernels/_checks.py)
        with pytest.raises(ValueError, match=r"target holds 10, outside \[0, V=10\)"):
            cross_entropy(logits, target, reduction="none", backend=backend)
    loss, _ = cross_entropy_fwd(logits, target)  # the launcher does not check values: the row reads NaN
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all(), f"want NaN only at row 1, got {loss}"
    target[1] = 0
    with pytest.raises(ValueError, match=r"\(2, 3, 10\)"):
        cross_entropy(logits.reshape(1, 3, 10).expand(2, 3, 10), target, backend="triton")
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(logits, target, reduction="avg")
    with pytest.raises(ValueError, match="backend"):
        cross_entropy(logits, target, backend="cuda")


def test_auto_backend_on_cpu_is_the_reference_and_backward_runs_once():
    logits, target = make_case(3, 10)
    if not logits.is_cuda:
        assert torch.equal(cross_entropy(logits, target), cross_entropy_reference(logits, target))
    x = logits.clone().requires_grad_()
    loss = cross_entropy(x, target, backend="triton")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


def test_no_grad_computes_no_gradient():
    # eval under torch.no_grad: the loss only; in particular inplace_backward must leave the logits alone
    logits, target = make_case(4, 100)
    x = logits.clone().requires_grad_()
    with torch.no_grad():
        loss = cross_entropy(x, target, inplace_backward=True, backend="triton")
        h, w, t = make_linear_case(9, 8, 40)
        lin = linear_cross_entropy(h.requires_grad_(), w.requires_grad_(), t, chunk_size=4, backend="triton")
    assert torch.equal(x.detach(), logits), "logits were overwritten under torch.no_grad"
    assert_close(loss, F.cross_entropy(logits, target), torch.float32, "loss under no_grad")
    assert_close(lin, linear_cross_entropy_reference(h.detach(), w.detach(), t), torch.float32,
                 "linear loss under no_grad")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_small(dtype):
    # the interpreter runs bf16/fp16 too: judged three ways against fp32
    N, V = 6, 777
    logits, target = make_case(N, V, dtype=dtype, ignored=(4,))
    dloss = upstream("none", N)
    loss, lse, grad = run_ce(ce_triton, logits, target, dloss, reduction="none")
    want_loss, want_lse, want_grad = run_ce(cross_entropy_reference, logits.float(), target, dloss, reduction="none")
    leaf = logits.clone().requires_grad_()
    torch_loss = F.cross_entropy(leaf, target, reduction="none")
    (torch_loss * dloss.to(dtype)).sum().backward()
    assert grad.dtype == dtype and loss.dtype == torch.float32
    assert_lowp(loss, torch_loss, want_loss, dtype, f"loss {dtype}")
    assert_close(lse, want_lse, torch.float32, f"lse {dtype}")  # the same rounded logits, fp32 math on both
    assert_lowp(grad, leaf.grad, want_grad, dtype, f"dlogits {dtype}")


# ----------------------------------------------------------------------------------------------------------
# Fused linear + cross-entropy (interpreter on CPU)
# ----------------------------------------------------------------------------------------------------------
def make_linear_case(N, d, V, *, dtype=torch.float32, w_dtype=None, ignored=(), seed=0, device=DEV):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, d, generator=g).to(device=device, dtype=dtype)
    weight = (torch.randn(V, d, generator=g) / math.sqrt(d) * 2).to(device=device, dtype=w_dtype or dtype)
    target = torch.randint(0, V, (N,), generator=g).to(device)
    for i in ignored:
        target[i] = -100
    return hidden, weight, target


def run_lce(fn, hidden, weight, target, dloss, **kw):
    h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    loss = fn(h, w, target, **kw)
    (loss * dloss).sum().backward()
    return loss.detach(), h.grad, w.grad


def lce_triton(*a, **kw):
    return linear_cross_entropy(*a, backend="triton", **kw)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("extras", [{}, {"softcap": 3.0, "z_loss": 1e-3}], ids=["plain", "softcap+zloss"])
def test_linear_matches_reference(reduction, extras):
    N, d, V, C = 37, 16, 300, 8  # 37 = 4 full chunks of 8 + a tail of 5
    hidden, weight, target = make_linear_case(N, d, V, ignored=(3, 4, 30))
    dloss = upstream(reduction, N)
    kw = dict(reduction=reduction, **extras)
    loss, dh, dw = run_lce(lce_triton, hidden, weight, target, dloss, chunk_size=C, **kw)
    loss_r, dh_r, dw_r = run_lce(linear_cross_entropy_reference, hidden, weight, target, dloss, **kw)
    assert_close(loss, loss_r, torch.float32, f"loss {reduction}")
    assert_close(dh, dh_r, torch.float32, f"dhidden {reduction}")
    assert_close(dw, dw_r, torch.float32, f"dweight {reduction}")
    if not extras:
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss_t = F.cross_entropy(F.linear(h, w), target, reduction=reduction)
        (loss_t * dloss).sum().backward()
        assert_close(loss, loss_t, torch.float32, f"loss vs F.cross_entropy(F.linear) {reduction}")
        assert_close(dw, w.grad, torch.float32, f"dweight vs F.cross_entropy(F.linear) {reduction}")


def test_linear_chunk_size_invariance_and_all_ignored():
    N, d, V = 13, 8, 50
    hidden, weight, target = make_linear_case(N, d, V, ignored=(0,))
    dloss = upstream("mean", N)
    ref = run_lce(lce_triton, hidden, weight, target, dloss, chunk_size=N)
    for C in (1, 5, 64):
        for got, want, name in zip(run_lce(lce_triton, hidden, weight, target, dloss, chunk_size=C), ref,
                                   ("loss", "dhidden", "dweight")):
            assert_close(got, want, torch.float32, f"{name} chunk_size={C} vs one chunk")
    none = torch.full_like(target, -100)
    for reduction in ("mean", "sum", "none"):
        loss, dh, dw = run_lce(lce_triton, hidden, weight, none, upstream(reduction, N), chunk_size=4,
                               reduction=reduction)
        assert (loss == 0).all() and (dh == 0).all() and (dw == 0).all(), f"all ignored, {reduction}: not 0"


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_never_materialises_logits(reduction):
    N, d, V, C = 40, 8, 200, 8
    hidden, weight, target = make_linear_case(N, d, V)
    bound = 4 * max(C * V, V * d, N * d)  # bytes of one fp32 chunk of logits, of dW, of dh
    assert bound < 4 * N * V
    with LargestAllocation() as mode:
        run_lce(lce_triton, hidden, weight, target, upstream(reduction, N), chunk_size=C, reduction=reduction)
    assert mode.largest <= bound, f"a tensor of {mode.largest} bytes exists; bound {bound}, (N, V) {4 * N * V}"
    with LargestAllocation() as mode:
        run_lce(linear_cross_entropy_reference, hidden, weight, target, upstream(reduction, N),
                reduction=reduction)
    assert mode.largest >= 4 * N * V, "the probe must see the reference's (N, V) logits"


def test_linear_autocast_fp32_weight():
    # under autocast the matmuls run in bf16 while the gradients come back in each input's dtype
    N, d, V = 19, 16, 100
    hidden, weight, target = make_linear_case(N, d, V)
    dloss = torch.tensor(1.0)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    with torch.autocast(device_type=DEV, dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, w, target, chunk_size=8, backend="triton")
    loss.backward()
    loss_r, dh_r, dw_r = run_lce(linear_cross_entropy_reference, hidden, weight, target, dloss)
    assert h.grad.dtype == torch.float32 and w.grad.dtype == torch.float32 and loss.dtype == torch.float32
    hb, wb = hidden.bfloat16().requires_grad_(), weight.bfloat16().requires_grad_()
    loss_t = F.cross_entropy(F.linear(hb, wb).float(), target)
    loss_t.backward()
    assert_lowp(loss, loss_t, loss_r, torch.bfloat16, "autocast loss")
    assert_lowp(h.grad, hb.grad, dh_r, torch.bfloat16, "autocast dhidden")
    assert_lowp(w.grad, wb.grad, dw_r, torch.bfloat16, "autocast dweight")


# ----------------------------------------------------------------------------------------------------------
# CUDA: full shapes, every dtype, peak memory
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("V", [50257, 131072])
def test_gpu_full_shapes(V, inplace, reduction, dtype):
    N = 4096
    logits, target = make_case(N, V, dtype=dtype, ignored=range(0, N, 7), device="cuda")
    dloss = upstream(reduction, N, device="cuda")
    loss, lse, grad = run_ce(ce_triton, logits, target, dloss, inplace=inplace, reduction=reduction)
    want_loss, want_lse, want_grad = run_ce(cross_entropy_reference, logits.float(), target, dloss,
                                            reduction=reduction)
    if dtype == torch.float32:
        assert_close(loss, want_loss, torch.float32, "loss fp32", "cross_entropy")
        assert_close(grad, want_grad, torch.float32, "dlogits fp32", "cross_entropy")
    else:
        leaf = logits.clone().requires_grad_()
        torch_loss = F.cross_entropy(leaf, target, reduction=reduction)
        (torch_loss * dloss.to(dtype)).sum().backward()
        assert_lowp(loss, torch_loss, want_loss, dtype, f"loss {dtype}")
        assert_lowp(grad, leaf.grad, want_grad, dtype, f"dlogits {dtype}")
    assert_close(lse, want_lse, torch.float32, f"lse {dtype}", "cross_entropy")


@pytest.mark.gpu
@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("w_dtype", [torch.bfloat16, torch.float32], ids=["bf16-weight", "fp32-weight"])
def test_gpu_linear_bf16(w_dtype, reduction):
    N, d, V = 8192, 2048, 50304
    hidden, weight, target = make_linear_case(N, d, V, dtype=torch.bfloat16, w_dtype=w_dtype,
                                              ignored=range(0, N, 5), device="cuda")
    dloss = upstream(reduction, N, device="cuda")
    loss, dh, dw = run_lce(lce_triton, hidden, weight, target, dloss, reduction=reduction, chunk_size=3000)
    assert dh.dtype == torch.bfloat16 and dw.dtype == w_dtype
    want = run_lce(linear_cross_entropy_reference, hidden.float(), weight.float(), target, dloss,
                   reduction=reduction)
    h, w = hidden.clone().requires_grad_(), weight.to(torch.bfloat16).requires_grad_()
    loss_t = F.cross_entropy(F.linear(h, w), target, reduction=reduction)
    (loss_t * dloss.to(loss_t.dtype)).sum().backward()
    for got, tb, ref, name in zip((loss, dh, dw), (loss_t, h.grad, w.grad), want, ("loss", "dhidden", "dweight")):
        assert_lowp(got, tb, ref, torch.bfloat16, f"{name} bf16 hidden, {w_dtype} weight, {reduction}")


@pytest.mark.gpu
def test_gpu_linear_autocast_and_flat_memory():
    d, V = 2048, 131072
    weight = (torch.randn(V, d, device="cuda") / math.sqrt(d)).requires_grad_()  # fp32 master weight
    peaks = {}
    for N in (4096, 16384):
        hidden = torch.randn(N, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        target = torch.randint(0, V, (N,), device="cuda")
        weight.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = linear_cross_entropy(hidden, weight, target, chunk_size=2048)
        loss.backward()
        torch.cuda.synchronize()
        peaks[N] = torch.cuda.max_memory_allocated() - base
        assert torch.isfinite(loss) and weight.grad.dtype == torch.float32 and hidden.grad.dtype == torch.bfloat16
    # 12k more tokens may add O(N·d) memory (dh, casts), never O(N·V): 12288·V bf16 logits would be 3 GiB
    grown = peaks[16384] - peaks[4096]
    assert grown < 12288 * d * 2 * 4, f"peak memory grew by {grown / 2**20:.0f} MiB from 4k to 16k tokens"
