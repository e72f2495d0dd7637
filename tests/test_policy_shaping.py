"""LUFFY's policy shaping of demonstration tokens (kernels/policy_shaping.py) against a hand-written float64
formula, gradients included, on the reference and the Triton (interpreter) paths."""
import pytest
import torch

from kernels import linear_grpo_loss
from kernels.policy_shaping import linear_shaped_grpo_loss

N, D, V = 24, 8, 16
GAMMA, LO, HI = 0.1, 0.2, 0.28


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, D, generator=g)
    weight = torch.randn(V, D, generator=g)
    target = torch.randint(0, V, (N,), generator=g)
    old = torch.log_softmax(torch.randn(N, V, generator=g), -1).gather(1, target[:, None])[:, 0]
    adv = torch.randn(N, generator=g)
    w = torch.rand(N, generator=g) * (torch.arange(N) % 5 != 0)  # some tokens weigh 0
    demo = torch.arange(N) >= N // 2
    return hidden, weight, target, old, adv, w, demo


def by_hand(hidden, weight, target, old, adv, w, demo):
    """float64: on-policy tokens −min(r·A, clip(r)·A), demonstration tokens −p/(p+γ)·A, weighted."""
    logp = torch.log_softmax(hidden.double() @ weight.double().t(), -1).gather(1, target[:, None])[:, 0]
    total = 0.0
    for t in range(N):
        if w[t] == 0:
            continue
        if demo[t]:
            p = torch.exp(logp[t])
            total = total - w[t].double() * p / (p + GAMMA) * adv[t].double()
        else:
            r = torch.exp(logp[t] - old[t].double())
            a = adv[t].double()
            total = total - w[t].double() * torch.minimum(r * a, r.clamp(1 - LO, 1 + HI) * a)
    return total


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_shaped_loss_and_gradients_match_the_formula(backend):
    hidden, weight, target, old, adv, w, demo = inputs()
    h64, w64 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    want = by_hand(h64, w64, target, old, adv, w, demo)
    want.backward()
    h, W = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss, stats = linear_shaped_grpo_loss(h, W, target, old, None, adv, w, demo, gamma=GAMMA, eps_low=LO,
                                          eps_high=HI, backend=backend)
    loss.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)  # fp32 against fp64: a few eps
    torch.testing.assert_close(h.grad, h64.grad.float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(W.grad, w64.grad.float(), rtol=1e-4, atol=1e-6)
    assert stats.tokens.item() == int((w > 0).sum())


def test_demonstration_gradient_is_luffy_closed_form():
    """∂loss/∂logp_t = −w·A·γp/(p+γ)² on a demonstration token: checked through the logits of one token."""
    hidden, weight, target, old, adv, w, _ = inputs(1)
    demo = torch.ones(N, dtype=torch.bool)
    h = hidden.clone().requires_grad_()
    loss, _ = linear_shaped_grpo_loss(h, weight, target, old, None, adv, w, demo, gamma=GAMMA, backend="reference")
    loss.backward()
    logits = (hidden @ weight.t()).double()
    logp = torch.log_softmax(logits, -1).gather(1, target[:, None])[:, 0]
    p = logp.exp()
    g = -w.double() * adv.double() * GAMMA * p / (p + GAMMA) ** 2  # ∂loss/∂logp
    dlogits = g[:, None] * (torch.nn.functional.one_hot(target, V).double() - torch.softmax(logits, -1))
    torch.testing.assert_close(h.grad.double(), dlogits @ weight.double(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_no_demonstration_token_is_plain_grpo_and_first_pass_ratio_is_one(backend):
    hidden, weight, target, _, adv, w, demo = inputs(2)
    none = torch.zeros(N, dtype=torch.bool)
    plain, s0 = linear_grpo_loss(hidden, weight, target, None, None, adv, w, eps_low=LO, eps_high=HI, backend=backend)
    shaped, s1 = linear_shaped_grpo_loss(hidden, weight, target, None, None, adv, w, none, gamma=GAMMA, eps_low=LO,
                                         eps_high=HI, backend=backend)
    assert shaped.item() == pytest.approx(plain.item(), rel=1e-6, abs=1e-7)
    # with demonstrations, on-policy tokens scored by the same head have ratio exactly 1: nothing clipped,
    # and their part of the loss is −Σ w·A
    from kernels.logprobs import linear_token_logprobs
    old = linear_token_logprobs(hidden, weight, target, backend=backend)
    loss, st = linear_shaped_grpo_loss(hidden, weight, target, old, None, adv * 100, w, demo, gamma=GAMMA,
                                       eps_low=LO, eps_high=HI, backend=backend)
    assert st.low_clipped.item() == 0 and st.high_clipped.item() == 0
    p = old.double().exp()
    want = -(w * adv * 100 * ~demo).double().sum() - (w * adv * 100 * demo).double().mul(p / (p + GAMMA)).sum()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("bad, match", [({"gamma": 0.0}, "gamma"), ({"demo": torch.zeros(3, dtype=torch.bool)}, "demo"),
                                        ({"demo": torch.zeros(N)}, "demo")])
def test_bad_arguments_name_themselves(bad, match):
    hidden, weight, target, old, adv, w, demo = inputs()
    kw = {"demo": demo, "gamma": GAMMA} | bad
    with pytest.raises(ValueError, match=match):
        linear_shaped_grpo_loss(hidden, weight, target, old, None, adv, w, kw.pop("demo"), **kw)
