"""kernels.logprobs: per-token log-probs and entropy, from logits and fused with the LM head.

CPU: tiny shapes under Triton's interpreter in fp32, against torch.log_softmax and autograd on the reference.
GPU (marked): full shapes, bf16/fp16 judged three ways against fp32.
"""
import pytest
import torch

from kernels.logprobs import linear_token_logprobs, token_logprobs, token_logprobs_reference
from tests.helpers import assert_close, assert_lowp



def torch_logprobs(logits, target, temperature=1.0):
    """The built-in oracle: log_softmax then gather, entropy from softmax · log_softmax (fp32)."""
    lsm = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = lsm.gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1).masked_fill(target < 0, 0.0)
    return logp, -(lsm.exp() * lsm).sum(-1)


SHAPES = [(1, 1), (1, 257), (7, 50), (37, 300)]


@pytest.mark.parametrize("N,V", SHAPES)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_forward_and_gradients(N, V, temperature):
    gen = torch.Generator().manual_seed(N * 1000 + V)
    logits = (3 * torch.randn(N, V, generator=gen)).requires_grad_()
    target = torch.randint(0, V, (N,), generator=gen)
    if N > 3:
        target[2] = -100  # ignored row: logp 0, no gradient through logp
        target[3] = V - 1  # last column: the tail of the last tile
    logp, ent = token_logprobs(logits, target, temperature=temperature, return_entropy=True, backend="triton")
    want_logp, want_ent = torch_logprobs(logits, target, temperature)
    assert logp.dtype == torch.float32 and ent.dtype == torch.float32
    assert_close(logp, want_logp, torch.float32, "logp")
    assert_close(ent, want_ent, torch.float32, "entropy", "entropy")
    # gradients with non-uniform upstream gradients on both outputs
    g, h = torch.randn(N, generator=gen), torch.randn(N, generator=gen)
    ref_logp, ref_ent = token_logprobs_reference(logits, target, temperature=temperature, return_entropy=True)
    want, = torch.autograd.grad((ref_logp * g + ref_ent * h).sum(), logits, retain_graph=True)
    got, = torch.autograd.grad((logp * g + ent * h).sum(), logits)
    assert_close(got, want, torch.float32, "dlogits", "entropy_gradient")  # z − lse + H cancels: |z|, |lse| ~ 20
    # logp alone (entropy not requested): the HAS_ENTROPY=False kernels
    logp2 = token_logprobs(logits, target, temperature=temperature, backend="triton")
    assert torch.equal(logp2, logp), "logp must not depend on whether the entropy is asked for"
    got2, = torch.autograd.grad((logp2 * g).sum(), logits)
    want2, = torch.autograd.grad((ref_logp * g).sum(), logits)
    assert_close(got2, want2, torch.float32, "dlogits (logp only)")
    if N > 3:
        assert logp[2].item() == 0.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_token_logprobs_low_precision_cpu(dtype):
    gen = torch.Generator().manual_seed(3)
    x32 = 3 * torch.randn(9, 131, generator=gen)
    target = torch.randint(0, 131, (9,), generator=gen)
    x = x32.to(dtype).requires_grad_()
    logp = token_logprobs(x, target, backend="triton")
    assert logp.dtype == torch.float32
    # on its own (rounded) inputs the kernel is fp32-exact
    assert_close(logp, token_logprobs_reference(x, target), torch.float32, f"logp {dtype} same inputs")
    g = torch.randn(9, generator=gen)
    got, = torch.autograd.grad((logp * g).sum(), x)
    assert got.dtype == dtype
    # three ways against the fp32 truth: no worse than torch's own log_softmax in this dtype
    xt = x32.clone().requires_grad_()
    truth, = torch.autograd.grad((token_logprobs_reference(xt, target) * g).sum(), xt)
    xl = x32.to(dtype).requires_grad_()
    torch_logp = torch.log_softmax(xl, -1).gather(-1, target[:, None]).squeeze(-1)
    torch_grad, = torch.autograd.grad((torch_logp.float() * g).sum(), xl)
    assert_lowp(logp, torch_logp, token_logprobs_reference(x32, target), dtype, f"logp {dtype}")
    assert_lowp(got, torch_grad, truth, dtype, f"dlogits {dtype}")


def test_token_logprobs_leading_dims_and_unused_output():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 70, generator=gen, requires_grad=True)
    target = torch.randint(0, 70, (2, 3), generator=gen)
    logp, ent = token_logprobs(logits, target, return_entropy=True, backend="triton")
    assert logp.shape == (2, 3) and ent.shape == (2, 3)
    assert_close(logp, torch_logprobs(logits, target)[0], torch.float32, "logp (B, L)")
    # only the entropy reaches the loss: the logp gradient is None inside backward
    got, = torch.autograd.grad(ent.sum(), logits)
    want, = torch.autograd.grad(token_logprobs_reference(logits, target, return_entropy=True)[1].sum(), logits)
    assert_close(got, want, torch.float32, "dlogits from entropy only")


def test_no_grad_scoring_saves_nothing():
    logits = torch.randn(5, 40, requires_grad=True)
    hidden, weight = torch.randn(5, 8, requires_grad=True), torch.randn(40, 8, requires_grad=True)
    target = torch.randint(0, 40, (5,))
    with torch.no_grad():
        a = token_logprobs(logits, target, backend="triton")
        b, e = linear_token_logprobs(hidden, weight, target, return_entropy=True, backend="triton")
    assert a.grad_fn is None and b.grad_fn is None and e.grad_fn is None
    assert not a.requires_grad and not b.requires_grad


@pytest.mark.parametrize("N,V,d,chunk", [(1, 33, 8, None), (13, 97, 16, 4), (37, 300, 24, None), (20, 64, 8, 1)])
@pytest.mark.parametrize("temperature", [1.0, 1.3])
def test_linear_token_logprobs_matches_logits_path(N, V, d, chunk, temperature):
    gen = torch.Generator().manual_seed(N + V + d)
    hidden = torch.randn(N, d, generator=gen).requires_grad_()
    weight = (torch.randn(V, d, generator=gen) / d ** 0.5).requires_grad_()
    target = torch.randint(0, V, (N,), generator=gen)
    target[0] = -100
    logp, ent = linear_token_logprobs(hidden, weight, target, temperature=temperature, return_entropy=True,
                                      chunk_size=chunk, backend="triton")
    ref_logp, ref_ent = token_logprobs_reference(hidden @ weight.t(), target, temperature=temperature,
                                                 return_entropy=True)
    assert_close(logp, ref_logp, torch.float32, "logp")
    assert_close(ent, ref_ent, torch.float32, "entropy")
    g, h = torch.randn(N, generator=gen), torch.randn(N, generator=gen)
    got = torch.autograd.grad((logp * g + ent * h).sum(), (hidden, weight))
    want = torch.autograd.grad((ref_logp * g + ref_ent * h).sum(), (hidden, weight))
    assert_close(got[0], want[0], torch.float32, "dhidden")
    assert_close(got[1], want[1], torch.float32, "dweight")


def test_linear_token_logprobs_weight_only_grad():
    gen = torch.Generator().manual_seed(7)
    hidden = torch.randn(9, 8, generator=gen)
    weight = torch.randn(50, 8, generator=gen, requires_grad=True)
    target = torch.randint(0, 50, (9,), generator=gen)
    got, = torch.autograd.grad(linear_token_logprobs(hidden, weight, target, chunk_size=4, backend="triton").sum(),
                               weight)
    want, = torch.autograd.grad(token_logprobs_reference(hidden @ weight.t(), target).sum(), weight)
    assert_close(got, want, torch.float32, "dweight")


def test_reference_backend_and_checks():
    logits, target = torch.randn(4, 10), torch.randint(0, 10, (4,))
    assert torch.equal(token_logprobs(logits, target), token_logprobs_reference(logits, target))  # auto on CPU
    with pytest.raises(ValueError, match=r"\(4,\)"):
        token_logprobs(logits, target[:3], backend="triton")
    with pytest.raises(ValueError, match="backend"):
        token_logprobs(logits, target, backend="cuda")


# ------------------------------------------------------------------------------------------------------------
# GPU: full shapes, low precision judged three ways against fp32
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("N,V", [(4096, 50304), (1027, 131072), (3, 50257)])
def test_token_logprobs_gpu(N, V, dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    x32 = 4 * torch.randn(N, V, device="cuda", generator=gen)
    target = torch.randint(0, V, (N,), device="cuda", generator=gen)
    x = x32.to(dtype).requires_grad_()
    logp, ent = token_logprobs(x, target, temperature=0.9, return_entropy=True)
    # exact on its own inputs: the fp32 reference on the same (rounded) logits
    ref_logp, ref_ent = token_logprobs_reference(x, target, temperature=0.9, return_entropy=True)
    assert_close(logp, ref_logp, torch.float32, "logp vs fp32 reference on same inputs", "logprobs_full_vocab")
    assert_close(ent, ref_ent, torch.float32, "entropy vs fp32 reference on same inputs", "entropy_full_vocab")
    g = torch.randn(N, device="cuda", generator=gen)
    got, = torch.autograd.grad((logp * g).sum(), x)
    truth_x = x32.clone().requires_grad_()
    truth_logp = token_logprobs_reference(truth_x, target, temperature=0.9)
    truth, = torch.autograd.grad((truth_logp * g).sum(), truth_x)
    if dtype == torch.float32:
        assert_close(got, truth, torch.float32, "dlogits fp32", "gradient_full_vocab")
        return
    # three ways: the kernel's error vs the fp32 truth is no worse than torch's own in this dtype
    xt = x32.to(dtype).requires_grad_()
    lsm = torch.log_softmax(xt / 0.9, dim=-1)
    torch_logp = lsm.gather(-1, target[:, None]).squeeze(-1)
    torch_grad, = torch.autograd.grad((torch_logp.float() * g).sum(), xt)
    truth_logp_v = token_logprobs_reference(x32, target, temperature=0.9)
    assert_lowp(logp, torch_logp, truth_logp_v, dtype, f"logp {dtype}")
    assert_lowp(got, torch_grad, truth, dtype, f"dlogits {dtype}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("N,V,d", [(4096, 50304, 2048), (999, 131072, 1024)])
def test_linear_token_logprobs_gpu(N, V, d, dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    h32 = torch.randn(N, d, device="cuda", generator=gen)
    w32 = torch.randn(V, d, device="cuda", generator=gen) / d ** 0.5
    target = torch.randint(0, V, (N,), device="cuda", generator=gen)
    hidden, weight = h32.to(dtype).requires_grad_(), w32.to(dtype).requires_grad_()
    logp = linear_token_logprobs(hidden, weight, target)
    g = torch.randn(N, device="cuda", generator=gen)
    got = torch.autograd.grad((logp * g).sum(), (hidden, weight))
    th, tw = h32.clone().requires_grad_(), w32.clone().requires_grad_()
    truth_logp = token_logprobs_reference(th @ tw.t(), target)
    truth = torch.autograd.grad((truth_logp * g).sum(), (th, tw))
    if dtype == torch.float32:
        assert_close(logp, truth_logp, torch.float32, "logp fp32 (TF32 matmuls off by default)", "head_matmul")
        assert_close(got[0], truth[0], torch.float32, "dhidden fp32", "head_matmul_gradient")
        assert_close(got[1], truth[1], torch.float32, "dweight fp32", "head_matmul_gradient")
        return
    # torch in bf16: materialised logits and log_softmax in bf16, autograd
    bh, bw = h32.to(dtype).requires_grad_(), w32.to(dtype).requires_grad_()
    lsm = torch.log_softmax(bh @ bw.t(), dim=-1)
    torch_logp = lsm.gather(-1, target[:, None]).squeeze(-1)
    torch_grads = torch.autograd.grad((torch_logp.float() * g).sum(), (bh, bw))
    assert_lowp(logp, torch_logp, truth_logp, dtype, f"logp {dtype}")
    assert_lowp(got[0], torch_grads[0], truth[0], dtype, f"dhidden {dtype}")
    assert_lowp(got[1], torch_grads[1], truth[1], dtype, f"dweight {dtype}")


def test_linear_token_logprobs_under_autocast():
    """An fp32 hidden and master weight under autocast run the head in the autocast dtype; gradients come
    back in fp32, and match the plain autocast head + reference."""
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(6, 16, generator=gen, requires_grad=True)
    weight = torch.randn(40, 16, generator=gen, requires_grad=True)
    target = torch.randint(0, 40, (6,), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_token_logprobs(hidden, weight, target, chunk_size=4, backend="triton")
        want = linear_token_logprobs(hidden, weight, target, backend="reference")
    assert_close(got, want, torch.float32, "logp under autocast")
    g_got = torch.autograd.grad(got.sum(), (hidden, weight))
    g_want = torch.autograd.grad(want.sum(), (hidden, weight))
    assert g_got[0].dtype == torch.float32 and g_got[1].dtype == torch.float32
    assert_close(g_got[0], g_want[0], torch.bfloat16, "dhidden under autocast (bf16 matmuls)")
    assert_close(g_got[1], g_want[1], torch.bfloat16, "dweight under autocast (bf16 matmuls)")
