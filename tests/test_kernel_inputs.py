"""The public kernel functions refuse bad arguments, and both paths refuse them the same way.

Every public function checks its arguments before it chooses a path (kernels/_checks.py), so the Triton path
(interpreted on a CPU) and the reference raise the same exception with the same message: TypeError for a wrong
type or dtype, ValueError for a wrong shape, device, empty dimension or value, each naming the argument. A
second device is the "meta" device, which exists on every machine and whose tensors hold no data.
Nearly every case raises before any kernel runs, so the file stays quick under the interpreter; the cases
that run kernels use a handful of rows.
"""
import pytest
import torch

from kernels import (
    attention, cross_entropy, grpo_loss, grpo_token_weights, group_advantages, linear_cross_entropy,
    linear_grpo_loss, linear_token_logprobs, token_logprobs,
)
from tests.helpers import assert_close

BACKENDS = ("triton", "reference")
N, V, D = 3, 8, 4  # rows, vocabulary, hidden size
META = torch.device("meta")


def _call(fn, args: dict, over: dict, backend):
    """fn(**args) with some arguments replaced, and the backend (None: fn takes no backend)."""
    kw = args | over
    return fn(**kw) if backend is None else fn(**kw, backend=backend)


def ce(b, **over):
    return _call(cross_entropy, dict(logits=torch.randn(N, V), target=torch.arange(N)), over, b)


def lce(b, **over):
    args = dict(hidden=torch.randn(N, D), weight=torch.randn(V, D), target=torch.arange(N))
    return _call(linear_cross_entropy, args, over, b)


def tlp(b, **over):  # leading dims (2, N): the log-prob ops take logits (..., V)
    return _call(token_logprobs, dict(logits=torch.randn(2, N, V), target=torch.ones(2, N, dtype=torch.long)), over, b)


def ltlp(b, **over):
    args = dict(hidden=torch.randn(2, N, D), weight=torch.randn(V, D), target=torch.ones(2, N, dtype=torch.long))
    return _call(linear_token_logprobs, args, over, b)


def _grpo_terms():
    return dict(target=torch.arange(N), old_logp=torch.zeros(N), ref_logp=None, advantages=torch.ones(N),
                weights=torch.ones(N))


def grpo(b, **over):
    return _call(grpo_loss, dict(logits=torch.randn(N, V), **_grpo_terms()), over, b)


def lgrpo(b, **over):
    return _call(linear_grpo_loss, dict(hidden=torch.randn(N, D), weight=torch.randn(V, D), **_grpo_terms()), over, b)


def adv(b, **over):
    return _call(group_advantages, dict(rewards=torch.tensor([1.0, 0.0, 1.0, 1.0]), group_size=2), over, b)


def tw(b, **over):  # grpo_token_weights has no backend: both parametrisations run the same call
    args = dict(mask=torch.ones(2, 3), loss_type="grpo", num_sequences=2, num_tokens=6, max_len=3)
    return _call(grpo_token_weights, args, over, None)


def attn(b, **over):
    args = dict(q=torch.randn(1, 2, 2, 16), k=torch.randn(1, 1, 4, 16), v=torch.randn(1, 1, 4, 16))
    return _call(attention, args, over, b)


def _on_meta(shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device=META)


# (id, call(backend), exception type, a fragment of the message)
CASES = [
    ("ce-logits-list", lambda b: ce(b, logits=[[0.0] * V] * N), TypeError, "logits must be a torch.Tensor, got list"),
    ("ce-logits-int", lambda b: ce(b, logits=torch.zeros(N, V, dtype=torch.long)), TypeError,
     "logits must be fp32, fp16 or bf16, got torch.int64"),
    ("ce-logits-fp64", lambda b: ce(b, logits=torch.zeros(N, V, dtype=torch.float64)), TypeError,
     "logits must be fp32, fp16 or bf16, got torch.float64"),
    ("ce-logits-3d", lambda b: ce(b, logits=torch.randn(1, N, V)),
     ValueError, "logits must be (N, V), got shape (1, 3, 8)"),
    ("ce-empty-vocab", lambda b: ce(b, logits=torch.randn(N, 0)), ValueError, "logits has an empty vocabulary"),
    ("ce-target-float", lambda b: ce(b, target=torch.zeros(N)),
     TypeError, "target must be int64 or int32, got torch.float32"),
    ("ce-target-shape", lambda b: ce(b, target=torch.arange(N + 1)),
     ValueError, "target must be (N,) = (3,), got shape (4,)"),
    ("ce-target-device", lambda b: ce(b, target=_on_meta(N, torch.long)), ValueError, "target is on meta but logits"),
    ("ce-target-too-big", lambda b: ce(b, target=torch.tensor([0, V, 1])), ValueError,
     "target holds 8, outside [0, V=8) and not ignore_index=-100"),
    ("ce-target-negative", lambda b: ce(b, target=torch.tensor([0, -1, 1])), ValueError, "target holds -1"),
    ("ce-reduction", lambda b: ce(b, reduction="avg"), ValueError, "reduction='avg' is not one of"),
    ("ce-softcap", lambda b: ce(b, softcap=0.0), ValueError, "softcap must be positive or None, got 0.0"),

    ("lce-hidden-int", lambda b: lce(b, hidden=torch.ones(N, D, dtype=torch.long)), TypeError, "hidden must be fp32"),
    ("lce-weight-fp64", lambda b: lce(b, weight=torch.ones(V, D, dtype=torch.float64)),
     TypeError, "weight must be fp32"),
    ("lce-hidden-3d", lambda b: lce(b, hidden=torch.randn(1, N, D)),
     ValueError, "hidden must be (N, d), got shape (1, 3, 4)"),
    ("lce-weight-d", lambda b: lce(b, weight=torch.randn(V, D + 1)), ValueError, "weight must be (V, d) with d = 4"),
    ("lce-empty-vocab", lambda b: lce(b, weight=torch.randn(0, D)), ValueError, "weight has an empty vocabulary"),
    ("lce-empty-d", lambda b: lce(b, hidden=torch.randn(N, 0), weight=torch.randn(V, 0)), ValueError,
     "hidden has an empty hidden size"),
    ("lce-target-float", lambda b: lce(b, target=torch.zeros(N)), TypeError, "target must be int64 or int32"),
    ("lce-target-too-big", lambda b: lce(b, target=torch.tensor([V + 3, 0, 1])), ValueError, "target holds 11"),
    ("lce-weight-device", lambda b: lce(b, weight=_on_meta((V, D))), ValueError, "weight is on meta but hidden"),
    ("lce-chunk-zero", lambda b: lce(b, chunk_size=0), ValueError, "chunk_size must be a positive number"),
    ("lce-chunk-float", lambda b: lce(b, chunk_size=2.0), TypeError, "chunk_size must be an int"),

    ("tlp-logits-int", lambda b: tlp(b, logits=torch.ones(2, N, V, dtype=torch.int32)),
     TypeError, "logits must be fp32"),
    ("tlp-logits-0d", lambda b: tlp(b, logits=torch.tensor(1.0), target=torch.tensor(0)), ValueError,
     "logits must be (..., V)"),
    ("tlp-empty-vocab", lambda b: tlp(b, logits=torch.randn(2, N, 0)), ValueError, "logits has an empty vocabulary"),
    ("tlp-target-float", lambda b: tlp(b, target=torch.ones(2, N)), TypeError, "target must be int64 or int32"),
    ("tlp-target-shape", lambda b: tlp(b, target=torch.ones(N, dtype=torch.long)), ValueError,
     "target must be logits' leading shape (2, 3), got shape (3,)"),
    ("tlp-target-device", lambda b: tlp(b, target=_on_meta((2, N), torch.long)), ValueError, "target is on meta"),
    ("tlp-target-too-big", lambda b: tlp(b, target=torch.full((2, N), V)), ValueError,
     "target holds 8, not below V=8 (a negative target is ignored)"),
    ("tlp-temperature", lambda b: tlp(b, temperature=0.0),
     ValueError, "temperature must be a positive number, got 0.0"),

    ("ltlp-hidden-int", lambda b: ltlp(b, hidden=torch.ones(2, N, D, dtype=torch.long)),
     TypeError, "hidden must be fp32"),
    ("ltlp-weight-1d", lambda b: ltlp(b, weight=torch.randn(D)), ValueError, "weight must be (V, d), got shape (4,)"),
    ("ltlp-weight-d", lambda b: ltlp(b, weight=torch.randn(V, D - 1)), ValueError, "weight must be (V, d) with d = 4"),
    ("ltlp-empty-vocab", lambda b: ltlp(b, weight=torch.randn(0, D)), ValueError, "weight has an empty vocabulary"),
    ("ltlp-target-float", lambda b: ltlp(b, target=torch.ones(2, N)), TypeError, "target must be int64 or int32"),
    ("ltlp-target-shape", lambda b: ltlp(b, target=torch.ones(2, N + 1, dtype=torch.long)), ValueError,
     "target must be hidden's leading shape (2, 3)"),
    ("ltlp-target-too-big", lambda b: ltlp(b, target=torch.full((2, N), V)),
     ValueError, "target holds 8, not below V=8"),
    ("ltlp-chunk-zero", lambda b: ltlp(b, chunk_size=0), ValueError, "chunk_size"),
    ("ltlp-temperature", lambda b: ltlp(b, temperature=-1.0), ValueError, "temperature"),

    ("grpo-logits-int", lambda b: grpo(b, logits=torch.ones(N, V, dtype=torch.long)), TypeError, "logits must be fp32"),
    ("grpo-empty-vocab", lambda b: grpo(b, logits=torch.randn(N, 0)), ValueError, "logits has an empty vocabulary"),
    ("grpo-target-float", lambda b: grpo(b, target=torch.zeros(N)), TypeError, "target must be int64 or int32"),
    ("grpo-target-too-big", lambda b: grpo(b, target=torch.tensor([1, 2, V])), ValueError, "target holds 8"),
    ("grpo-old-shape", lambda b: grpo(b, old_logp=torch.zeros(N - 1)), ValueError,
     "old_logp must have target's shape (3,), got shape (2,)"),
    ("grpo-old-int", lambda b: grpo(b, old_logp=torch.zeros(N, dtype=torch.long)), TypeError,
     "old_logp must be a floating-point tensor, got torch.int64"),
    ("grpo-ref-shape", lambda b: grpo(b, ref_logp=torch.zeros(N, 1), beta=0.1), ValueError, "ref_logp must have"),
    ("grpo-beta-no-ref", lambda b: grpo(b, beta=0.1), ValueError, "beta=0.1 needs ref_logp"),
    ("grpo-adv-device", lambda b: grpo(b, advantages=_on_meta(N)), ValueError, "advantages is on meta"),
    ("grpo-weights-bool", lambda b: grpo(b, weights=torch.ones(N, dtype=torch.bool)), TypeError,
     "weights must be a floating-point tensor, got torch.bool"),
    ("grpo-weights-list", lambda b: grpo(b, weights=[1.0] * N), TypeError, "weights must be a torch.Tensor, got list"),
    ("grpo-eps-low", lambda b: grpo(b, eps_low=-0.1), ValueError, "eps_low must be a number >= 0, got -0.1"),
    ("grpo-temperature", lambda b: grpo(b, temperature=0), ValueError, "temperature"),

    ("lgrpo-hidden-int", lambda b: lgrpo(b, hidden=torch.ones(N, D, dtype=torch.long)),
     TypeError, "hidden must be fp32"),
    ("lgrpo-weight-d", lambda b: lgrpo(b, weight=torch.randn(V, D + 2)),
     ValueError, "weight must be (V, d) with d = 4"),
    ("lgrpo-empty-vocab", lambda b: lgrpo(b, weight=torch.randn(0, D)), ValueError, "weight has an empty vocabulary"),
    ("lgrpo-target-float", lambda b: lgrpo(b, target=torch.zeros(N)), TypeError, "target must be int64 or int32"),
    ("lgrpo-target-too-big", lambda b: lgrpo(b, target=torch.tensor([V, 0, 0])), ValueError, "target holds 8"),
    ("lgrpo-weights-shape", lambda b: lgrpo(b, weights=torch.ones(N + 1)),
     ValueError, "weights must have target's shape"),
    ("lgrpo-adv-int", lambda b: lgrpo(b, advantages=torch.ones(N, dtype=torch.long)), TypeError, "advantages must be"),
    ("lgrpo-chunk-zero", lambda b: lgrpo(b, chunk_size=0), ValueError, "chunk_size"),

    ("adv-rewards-list", lambda b: adv(b, rewards=[1.0, 0.0]), TypeError, "rewards must be a torch.Tensor"),
    ("adv-rewards-complex", lambda b: adv(b, rewards=torch.ones(4, dtype=torch.complex64)), TypeError,
     "rewards must be a real tensor"),
    ("adv-rewards-2d", lambda b: adv(b, rewards=torch.ones(2, 2)), ValueError, "rewards must be (P·G,)"),
    ("adv-not-divisible", lambda b: adv(b, group_size=3), ValueError, "got shape (4,)"),
    ("adv-group-zero", lambda b: adv(b, group_size=0), ValueError, "group_size must be >= 1, got 0"),
    ("adv-group-float", lambda b: adv(b, group_size=2.0), TypeError, "group_size must be an int"),
    ("adv-mask-shape", lambda b: adv(b, completion_mask=torch.ones(3, 5)),
     ValueError, "completion_mask must be (P·G, L)"),
    ("adv-mask-device", lambda b: adv(b, completion_mask=_on_meta((4, 5))), ValueError, "completion_mask is on meta"),

    ("tw-mask-list", lambda b: tw(b, mask=[[1, 1]]), TypeError, "mask must be a torch.Tensor"),
    ("tw-mask-1d", lambda b: tw(b, mask=torch.ones(3)), ValueError, "mask must be (B, L), got shape (3,)"),
    ("tw-loss-type", lambda b: tw(b, loss_type="token_mean"), ValueError, "loss_type='token_mean' is not one of"),
    ("tw-max-len", lambda b: tw(b, max_len=2), ValueError, "max_len=2 is shorter than the mask's length 3"),
    ("tw-negative-total", lambda b: tw(b, num_tokens=-1), ValueError, "num_tokens must be >= 0, got -1"),

    ("attn-q-int", lambda b: attn(b, q=torch.ones(1, 2, 2, 16, dtype=torch.long)), TypeError, "q must be fp32"),
    ("attn-fp64", lambda b: attn(b, **{n: torch.randn(s, dtype=torch.float64) for n, s in
                                       (("q", (1, 2, 2, 16)), ("k", (1, 1, 4, 16)), ("v", (1, 1, 4, 16)))}),
     TypeError, "q must be fp32, fp16 or bf16, got torch.float64"),
    ("attn-dtypes-differ", lambda b: attn(b, k=torch.randn(1, 1, 4, 16, dtype=torch.float16)), TypeError,
     "q, k, v dtypes differ: torch.float32, torch.float16, torch.float32"),
    ("attn-q-3d", lambda b: attn(b, q=torch.randn(2, 2, 16)), ValueError, "attention expects 4-D q, k, v"),
    ("attn-heads", lambda b: attn(b, q=torch.randn(1, 3, 2, 16), k=torch.randn(1, 2, 4, 16),
                                  v=torch.randn(1, 2, 4, 16)),
     ValueError, "query heads H=3 must be a multiple of kv heads Hkv=2"),
    ("attn-empty-head-dim", lambda b: attn(b, q=torch.randn(1, 2, 2, 0), k=torch.randn(1, 1, 4, 0),
                                           v=torch.randn(1, 1, 4, 0)), ValueError, "q has an empty head dimension"),
    ("attn-tq-gt-tk", lambda b: attn(b, q=torch.randn(1, 2, 5, 16)), ValueError, "need 1 <= Tq <= Tk"),
    ("attn-k-device", lambda b: attn(b, k=_on_meta((1, 1, 4, 16))), ValueError, "k is on meta but q"),
    ("attn-doc-float", lambda b: attn(b, doc_ids=torch.zeros(1, 4)), TypeError, "doc_ids must be an integer tensor"),
    ("attn-doc-shape", lambda b: attn(b, doc_ids=torch.zeros(1, 5, dtype=torch.long)), ValueError,
     "doc_ids must be (B, Tk) = (1, 4), got shape (1, 5)"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("call, exc, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_argument_raises(call, exc, fragment, backend):
    with pytest.raises(Exception) as e:
        call(backend)
    assert type(e.value) is exc, f"want {exc.__name__}, got {type(e.value).__name__}: {e.value}"
    assert fragment in str(e.value), f"{fragment!r} not in {str(e.value)!r}"


@pytest.mark.parametrize("call", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_both_paths_raise_the_same_error(call):
    raised = []
    for backend in BACKENDS:
        try:
            call(backend)
            raised.append(None)
        except Exception as e:  # noqa: BLE001 - any exception is compared, whatever its type
            raised.append((type(e), str(e)))
    assert raised[0] == raised[1], f"triton: {raised[0]}\nreference: {raised[1]}"


# ------------------------------------------------------------------------------------------------------------
# Inputs that must be accepted
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_on_the_decode_path(backend):
    """B = 0 with a few query rows and no gradient takes the decode launcher, which used to divide by B."""
    q, k, v = torch.randn(0, 2, 1, 16), torch.randn(0, 1, 4, 16), torch.randn(0, 1, 4, 16)
    out = attention(q, k, v, backend=backend)
    assert out.shape == (0, 2, 1, 16) and out.dtype == q.dtype


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_is_an_empty_result(backend):
    """N = 0 rows: per-row outputs are empty and every sum or mean is 0 (never NaN), on both paths."""
    h, w, t, z = torch.randn(0, D), torch.randn(V, D), torch.zeros(0, dtype=torch.long), torch.zeros(0)
    assert cross_entropy(torch.randn(0, V), t, backend=backend).item() == 0.0
    assert linear_cross_entropy(h, w, t, reduction="none", backend=backend).shape == (0,)
    assert token_logprobs(torch.randn(0, V), t, backend=backend).shape == (0,)
    assert linear_token_logprobs(h, w, t, backend=backend).shape == (0,)
    assert grpo_loss(torch.randn(0, V), t, z, None, z, z, backend=backend)[0].item() == 0.0
    assert linear_grpo_loss(h, w, t, z, None, z, z, backend=backend)[0].item() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignored_targets_are_not_out_of_range(backend):
    """The range check refuses only what the op does not ignore: ignore_index for cross-entropy, any
    negative target for the log-prob and GRPO ops (log-prob 0)."""
    logits = torch.randn(N, V)
    loss = cross_entropy(logits, torch.tensor([-1, 2, V - 1]), ignore_index=-1, reduction="none", backend=backend)
    assert loss[0] == 0 and torch.isfinite(loss).all()
    logp = token_logprobs(logits, torch.tensor([-100, -1, 0]), backend=backend)
    assert logp[:2].tolist() == [0.0, 0.0] and logp[2] < 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fused", [False, True], ids=["logits", "fused"])
def test_old_logp_none_is_on_policy(fused, backend):
    """old_logp=None means on-policy (as in TRL with one pass per batch): ratio 1, i.e. the loss and the
    gradient of old_logp = the path's own log-probs, detached."""
    gen = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(N, D, generator=gen), torch.randn(V, D, generator=gen)
    target, adv, w = torch.tensor([1, 5, 7]), torch.tensor([1.0, -0.5, 2.0]), torch.full((N,), 1 / N)
    x = (hidden if fused else hidden @ weight.t()).requires_grad_()
    if fused:
        old = linear_token_logprobs(x, weight, target, backend=backend).detach()
        loss = lambda o: linear_grpo_loss(x, weight, target, o, None, adv, w, backend=backend)  # noqa: E731
    else:
        old = token_logprobs(x, target, backend=backend).detach()
        loss = lambda o: grpo_loss(x, target, o, None, adv, w, backend=backend)  # noqa: E731
    got, got_stats = loss(None)
    want, _ = loss(old)
    assert_close(got, want, torch.float32, "loss with old_logp=None vs the detached log-probs", "exact")
    assert_close(got, -(w * adv).sum(), torch.float32, "on-policy loss = −Σ w·A")
    assert got_stats.low_clipped.item() == got_stats.high_clipped.item() == 0
    g_got, = torch.autograd.grad(got, x)
    g_want, = torch.autograd.grad(want, x)
    assert_close(g_got, g_want, torch.float32, "gradient with old_logp=None", "exact")


@pytest.mark.parametrize("backend", BACKENDS)
def test_head_weight_in_another_dtype(backend):
    """An fp32 master weight with a bf16 hidden (what the trainer passes under autocast) runs the head in
    hidden's dtype on both paths; the reference used to refuse the matmul."""
    hidden, weight, target = torch.randn(N, D).bfloat16(), torch.randn(V, D), torch.tensor([1, 5, 7])
    logp = linear_token_logprobs(hidden, weight, target, backend=backend)
    want = token_logprobs(hidden @ weight.bfloat16().t(), target, backend="reference")
    # fp32 softmax math over the same bf16 logits on both paths; only the summation order differs
    assert_close(logp, want, torch.float32, "log-probs of the bf16 head")
    loss, _ = linear_grpo_loss(hidden, weight, target, None, None, torch.ones(N), torch.ones(N), backend=backend)
    assert torch.isfinite(loss)
