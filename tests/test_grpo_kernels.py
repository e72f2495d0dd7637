"""kernels.group_advantages, and kernels.grpo: token weights, the GRPO policy loss from logits and fused with the
LM head.

CPU: tiny shapes, Triton under the interpreter, against autograd on the references and hand-derived values.
GPU (marked): full shapes, bf16 judged three ways against fp32, and peak memory flat in N.
"""
import math

import numpy as np
import pytest
import torch

from kernels.group_advantages import group_advantages
from kernels.grpo import (
    LOSS_TYPES, GRPOStats, grpo_fwd, grpo_loss, grpo_loss_reference, grpo_token_weights, linear_grpo_loss,
)
from kernels.logprobs import linear_token_logprobs, token_logprobs, token_logprobs_reference
from tests.helpers import assert_close, assert_lowp



def assert_stats_close(got, want, name):
    for field in ("tokens", "kl_sum", "low_clipped", "high_clipped", "entropy_sum"):
        a, b = getattr(got, field), getattr(want, field)
        assert (a is None) == (b is None), f"{name}.{field}: {a} vs {b}"
        if a is not None:
            assert a.dtype == torch.float32 and not a.requires_grad, f"{name}.{field} must be detached fp32"
            assert_close(a, b, torch.float32, f"{name}.{field}")


# ------------------------------------------------------------------------------------------------------------
# Advantages
# ------------------------------------------------------------------------------------------------------------
BACKENDS = ["reference", "triton"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_advantages_equal_reward_groups_are_exactly_zero(backend):
    # 0.1·3 / 3 ≠ 0.1 in floating point: r − μ is a rounding residue that a tiny σ would blow up
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, -7.3, -7.3, -7.3])
    out = group_advantages(rewards, 3, backend=backend)
    assert torch.isfinite(out.advantages).all()
    assert (out.advantages.view(4, 3)[[0, 1, 3]] == 0).all(), out.advantages
    assert out.zero_var.tolist() == [True, True, False, True]
    assert out.std[0].item() < 1e-6 and out.advantages[7].item() > 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_advantages_hand_computed(backend):
    # group 0: r = [1, 0, 0, 1]; μ = 0.5; σ = sqrt(4·0.25 / 3) = sqrt(1/3); A = ±0.5 / (sqrt(1/3) + 1e-4)
    # group 1: r = [3, 1, 2, 2]; μ = 2;   σ = sqrt((1 + 1) / 3) = sqrt(2/3);  A = (r − 2) / (sqrt(2/3) + 1e-4)
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 1.0, 2.0, 2.0])
    mask = torch.tensor([[1, 1, 0]] * 4 + [[1, 0, 0]] * 3 + [[0, 0, 0]])
    out = group_advantages(rewards, 4, completion_mask=mask, backend=backend)
    a0, a1 = 0.5 / (math.sqrt(1 / 3) + 1e-4), 1.0 / (math.sqrt(2 / 3) + 1e-4)
    assert_close(out.advantages, torch.tensor([a0, -a0, -a0, a0, a1, -a1, 0.0, 0.0]), torch.float32, "A", "rounding")
    assert_close(out.mean, torch.tensor([0.5, 2.0]), torch.float32, "mean", "exact")
    assert_close(out.std, torch.tensor([math.sqrt(1 / 3), math.sqrt(2 / 3)]), torch.float32, "std", "rounding")
    want_tok = torch.tensor([[a0, a0, 0], [-a0, -a0, 0], [-a0, -a0, 0], [a0, a0, 0],
                             [a1, 0, 0], [-a1, 0, 0], [0, 0, 0], [0, 0, 0]])
    assert_close(out.token_advantages, want_tok, torch.float32, "token_advantages", "rounding")
    # Dr. GRPO: no std scaling
    out = group_advantages(rewards, 4, scale_std=False, backend=backend)
    want = torch.tensor([0.5, -0.5, -0.5, 0.5, 1.0, -1.0, 0.0, 0.0])  # exactly representable: r − μ is exact
    assert_close(out.advantages, want, torch.float32, "A no std", "exact")
    # std floor: group 0's σ ≈ 0.577 is below the floor 2, group 1's too
    out = group_advantages(rewards, 4, std_floor=2.0, eps=0.0, backend=backend)
    want = torch.tensor([0.25, -0.25, -0.25, 0.25, 0.5, -0.5, 0.0, 0.0])  # (r − μ) / 2, exactly
    assert_close(out.advantages, want, torch.float32, "floor", "exact")


@pytest.mark.parametrize("G", [1, 2, 3, 5, 8, 16, 17, 33, 64, 100])
def test_advantages_group_sizes(G):
    gen = torch.Generator().manual_seed(G)
    P = 3
    rewards = torch.randint(0, 4, (P * G,), generator=gen).float() + 0.5 * torch.rand(P * G, generator=gen)
    rewards[G:2 * G] = 2.5  # one equal group
    r = rewards.double().view(P, G)
    mean = r.mean(1, keepdim=True)
    std = ((r - mean).pow(2).sum(1, keepdim=True) / max(G - 1, 1)).sqrt() if G > 1 else torch.zeros(P, 1).double()
    want = ((r - mean) / (std.clamp_min(0.05) + 1e-4)).view(-1)
    want.view(P, G)[1] = 0
    if G == 1:
        want.zero_()
    for backend in BACKENDS:
        out = group_advantages(rewards, G, std_floor=0.05, backend=backend)
        assert_close(out.advantages, want, torch.float32, f"A G={G} {backend}")
        assert_close(out.std, std.view(-1), torch.float32, f"std G={G} {backend}")
        assert out.zero_var.tolist() == ([True] * P if G == 1 else [False, True, False]), out.zero_var


def test_advantages_checks():
    with pytest.raises(ValueError, match=r"\(10,\)"):
        group_advantages(torch.zeros(10), 3)
    with pytest.raises(ValueError, match="completion_mask"):
        group_advantages(torch.zeros(6), 3, completion_mask=torch.ones(5, 4))


# ------------------------------------------------------------------------------------------------------------
# Token weights
# ------------------------------------------------------------------------------------------------------------
def test_token_weights_hand_computed():
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])  # a fully masked row weighs 0
    kw = dict(num_sequences=4, num_tokens=10, max_len=5)
    # grpo: m / (len_i · S): row 0: 1 / (2·4); row 1: 1 / (1·4)
    want = torch.tensor([[0.125, 0.125, 0, 0], [0.25, 0, 0, 0], [0, 0, 0, 0]])
    assert torch.equal(grpo_token_weights(mask, "grpo", **kw), want)
    # bnpo, dapo: m / T = m / 10
    for lt in ("bnpo", "dapo"):
        assert_close(grpo_token_weights(mask, lt, **kw), mask * 0.1, torch.float32, lt, "exact")
    # dr_grpo: m / (S · max_len) = m / 20
    assert torch.equal(grpo_token_weights(mask, "dr_grpo", **kw), mask * 0.05)
    # all-masked whole batch (zero totals): zeros, not NaN
    for lt in LOSS_TYPES:
        w = grpo_token_weights(torch.zeros(2, 3), lt, num_sequences=0, num_tokens=0, max_len=3)
        assert torch.equal(w, torch.zeros(2, 3)), lt
    with pytest.raises(ValueError, match="dr_grpo"):
        grpo_token_weights(mask, "token_mean", **kw)
    with pytest.raises(ValueError, match="max_len"):
        grpo_token_weights(mask, "dr_grpo", num_sequences=4, num_tokens=10, max_len=3)


def test_trl_loss_types_written_out():
    """TRL GRPOTrainer's loss types on 2 completions × 3 tokens, eps 0.2, beta 0.04 (ANCHORS.md formulas).

    ratio = exp(logp − old), surr = min(ratio·A, clamp(ratio, 0.8, 1.2)·A), kl = e^(ref−logp) − (ref−logp) − 1:
      i=0, A=+1:   t0 ratio 1          surr  1              kl e^−0.1 − 0.9 = 0.00483742   loss −0.99980650
                   t1 ratio e^0.2      surr  1.2 (clipped)  kl 0                           loss −1.2
                   t2 ratio e^−0.5     surr  0.60653066     kl 0                           loss −0.60653066
      i=1, A=−0.5: t0 ratio 1          surr −0.5            kl e^0.1 − 1.1 = 0.00517092    loss  0.50020684
                   t1 ratio e^−0.2     surr −0.40936538     kl 0                           loss  0.40936538
                   t2 masked
    Row sums: Σ_t m·loss = −2.80633716 (3 tokens) and 0.90957221 (2 tokens).
      grpo:    mean_i (row sum / row length) = (−2.80633716/3 + 0.90957221/2) / 2 = −0.24032981
      dr_grpo: Σ / (B · L) = (−2.80633716 + 0.90957221) / (2·3)           = −0.31612749
      dapo:    Σ / (tokens in the whole batch, 5)                           = −0.37935299
    """
    logp = torch.tensor([[-1.0, -0.5, -2.0], [-0.3, -1.2, -9.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -0.7, -1.5], [-0.3, -1.0, -9.0]])
    ref = torch.tensor([[-1.1, -0.5, -2.0], [-0.2, -1.2, -9.0]])
    adv = torch.tensor([[1.0] * 3, [-0.5] * 3])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    expected = {"grpo": -0.24032981, "dr_grpo": -0.31612749, "dapo": -0.37935299}
    for lt, value in expected.items():
        w = grpo_token_weights(mask, lt, num_sequences=2, num_tokens=5, max_len=3)
        loss, stats = grpo_loss_reference(logp.view(-1), old.view(-1), ref.view(-1), adv.view(-1), w.view(-1),
                                          eps_low=0.2, eps_high=0.2, beta=0.04)
        assert abs(loss.item() - value) < 1e-6, f"{lt}: {loss.item():.8f} != {value}"
        assert stats.tokens.item() == 5 and stats.high_clipped.item() == 1 and stats.low_clipped.item() == 0
        assert abs(stats.kl_sum.item() - (0.00483742 + 0.00517092)) < 1e-6


# ------------------------------------------------------------------------------------------------------------
# Policy loss from logits
# ------------------------------------------------------------------------------------------------------------
def _batch(B=6, L=7, V=50, seed=0, temperature=1.0):
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(B * L, V, generator=gen)
    target = torch.randint(0, V, (B * L,), generator=gen)
    mask = (torch.rand(B, L, generator=gen) < 0.8).long()
    mask[2] = 0  # a fully masked completion
    with torch.no_grad():
        logp = token_logprobs_reference(logits, target, temperature=temperature)
    old = logp + 0.4 * torch.randn(B * L, generator=gen)  # ratios on both sides of both bounds
    ref = logp + 0.3 * torch.randn(B * L, generator=gen)
    # both signs, and a zero-variance group's completion (A = 0)
    adv = torch.tensor([0.9, 0.0, 1.3, -0.7, -1.1, 0.4] * B)[:B].repeat_interleave(L)
    old[mask.view(-1) == 0] = float("-inf")  # garbage under the mask must not leak (inf · 0)
    return logits, target, mask, old, ref, adv


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_grpo_loss_matches_reference(loss_type, beta):
    logits, target, mask, old, ref, adv = _batch(seed=len(loss_type), temperature=0.8)
    w = grpo_token_weights(mask, loss_type, num_sequences=6, num_tokens=int(mask.sum()), max_len=9).view(-1)
    ref_in = ref if beta > 0 else None
    kw = dict(temperature=0.8, eps_low=0.2, eps_high=0.28, beta=beta, return_entropy=True)
    x_ref = logits.clone().requires_grad_()
    want, want_stats = grpo_loss(x_ref, target, old, ref_in, adv, w, backend="reference", **kw)
    x = logits.clone().requires_grad_()
    got, got_stats = grpo_loss(x, target, old, ref_in, adv, w, backend="triton", **kw)
    assert torch.isfinite(want) and torch.isfinite(got)
    assert_close(got, want, torch.float32, f"loss {loss_type}")
    assert_stats_close(got_stats, want_stats, "stats")
    assert 0 < got_stats.low_clipped.item() + got_stats.high_clipped.item() < got_stats.tokens.item()
    c = torch.tensor(-1.7)  # a non-unit upstream gradient
    want_g, = torch.autograd.grad(want, x_ref, c)
    got_g, = torch.autograd.grad(got, x, c)
    assert torch.isfinite(got_g).all()
    assert_close(got_g, want_g, torch.float32, f"dlogits {loss_type} beta={beta}")
    assert (got_g.view(6, 7, -1)[2] == 0).all(), "a fully masked completion has no gradient"


def _find_exact_log(bound):
    """logp with exp(logp) == fp32(bound) exactly in torch and numpy (the interpreter's exp)."""
    target, d = np.float32(bound), np.float32(math.log(bound))
    for direction in (np.inf, -np.inf):
        dd = d
        for _ in range(20):
            if np.exp(dd) == target and torch.exp(torch.tensor(dd)).item() == float(target):
                return float(dd)
            dd = np.nextafter(dd, np.float32(direction))
    raise AssertionError(f"no fp32 logp with exp(logp) == {bound} exactly")


@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_clip_boundaries(beta):
    """ratio exactly 1 − eps_low and 1 + eps_high, and 1e-4 either side, with A of both signs."""
    lo, hi = _find_exact_log(0.8), _find_exact_log(1.2)
    d = [lo, hi, math.log(0.8 * (1 - 1e-4)), math.log(0.8 * (1 + 1e-4)),
         math.log(1.2 * (1 - 1e-4)), math.log(1.2 * (1 + 1e-4)), 0.0]
    logp = torch.tensor(d * 2, dtype=torch.float32)  # old = 0, so ratio = exp(logp)
    adv = torch.tensor([1.0] * 7 + [-1.0] * 7)
    old = torch.zeros(14)
    ref = logp - 0.05
    w = torch.full((14,), 0.5)
    ratio = logp.exp()
    assert ratio[0].item() == np.float32(0.8) and ratio[1].item() == np.float32(1.2)
    # the clipped branch is the strict min (no gradient) only past a bound in the advantage's direction:
    # A > 0 and ratio > 1.2 (index 5); A < 0 and ratio < 0.8 (index 7 + 2). On a bound the gradient is full.
    clipped = torch.zeros(14, dtype=torch.bool)
    clipped[5] = clipped[9] = True
    want_dlogp = 0.5 * (torch.where(clipped, 0.0, -adv * ratio) + beta * (1 - torch.exp(ref - logp)))
    # 1. autograd on the reference agrees with the rule
    lp = logp.clone().requires_grad_()
    loss, stats = grpo_loss_reference(lp, old, ref, adv, w, eps_low=0.2, eps_high=0.2, beta=beta)
    g, = torch.autograd.grad(loss, lp)
    assert_close(g, want_dlogp, torch.float32, "reference dlogp at the bounds", "rounding")
    assert stats.low_clipped.item() == 1 and stats.high_clipped.item() == 1
    # 2. the Triton per-token kernel takes the same branches
    got_loss, got_dlogp, sums = grpo_fwd(logp, old, ref, adv, w, 0.2, 0.2, beta)
    assert_close(got_dlogp, want_dlogp, torch.float32, "kernel dlogp at the bounds", "rounding")
    assert_close(got_loss, loss, torch.float32, "kernel loss at the bounds")
    assert sums[3].item() == 1 and sums[4].item() == 1


def test_ratio_one_at_zero_eps_from_logits():
    """ratio exactly 1 (old = the kernel's own logp) on bounds 1 ± 0: nothing clipped, gradient −w·A."""
    logits, target, mask, _, _, adv = _batch(seed=3)
    w = mask.view(-1).float() / 5
    old = token_logprobs(logits, target, backend="triton")
    x = logits.clone().requires_grad_()
    loss, stats = grpo_loss(x, target, old, old, adv, w, eps_low=0.0, eps_high=0.0, beta=0.1, backend="triton")
    assert stats.low_clipped.item() == 0 and stats.high_clipped.item() == 0
    assert stats.kl_sum.item() == 0.0, "KL must vanish when the policy equals the reference"
    assert_close(loss, -(w * adv).sum(), torch.float32, "loss at ratio 1", "rounding")
    got, = torch.autograd.grad(loss, x)
    xr = logits.clone().requires_grad_()
    want, = torch.autograd.grad((token_logprobs_reference(xr, target) * (-w * adv)).sum(), xr)
    assert_close(got, want, torch.float32, "dlogits at ratio 1")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_invariant_to_micro_batch_split(backend, loss_type):
    logits, target, mask, old, ref, adv = _batch(seed=5)
    S, T = 6, int(mask.sum())
    kw = dict(eps_low=0.2, eps_high=0.28, beta=0.04, backend=backend)
    x = logits.clone().requires_grad_()
    w = grpo_token_weights(mask, loss_type, num_sequences=S, num_tokens=T, max_len=7).view(-1)
    whole, whole_stats = grpo_loss(x, target, old, ref, adv, w, **kw)
    g_whole, = torch.autograd.grad(whole, x)
    parts, g_parts, tokens = [], [], 0.0
    for rows in (slice(0, 2), slice(2, 6)):  # uneven micro-batches, whole-batch totals
        r = slice(rows.start * 7, rows.stop * 7)
        xp = logits[r].clone().requires_grad_()
        wp = grpo_token_weights(mask[rows], loss_type, num_sequences=S, num_tokens=T, max_len=7).view(-1)
        lp, sp = grpo_loss(xp, target[r], old[r], ref[r], adv[r], wp, **kw)
        parts.append(lp)
        g_parts.append(torch.autograd.grad(lp, xp)[0])
        tokens += sp.tokens.item()
    assert_close(sum(parts), whole, torch.float32, f"Σ micro-batch losses vs whole ({loss_type})", "rounding")
    assert_close(torch.cat(g_parts), g_whole, torch.float32, "gradients", "rounding")
    assert tokens == whole_stats.tokens.item()


def test_ref_none_and_checks():
    logits, target, mask, old, ref, adv = _batch(seed=6)
    w = mask.view(-1).float()
    loss, stats = grpo_loss(logits, target, old, None, adv, w, backend="triton")
    assert stats.kl_sum is None and stats.entropy_sum is None and torch.isfinite(loss)
    for backend in BACKENDS:
        with pytest.raises(ValueError, match="ref_logp"):
            grpo_loss(logits, target, old, None, adv, w, beta=0.1, backend=backend)
    with pytest.raises(ValueError, match=r"\(41,\)"):
        grpo_loss(logits, target, old[:-1], None, adv, w, backend="triton")
    assert isinstance(stats, GRPOStats)


# ------------------------------------------------------------------------------------------------------------
# Fused with the LM head
# ------------------------------------------------------------------------------------------------------------
def _lm_head_inputs(N, V, d, seed, device="cpu"):
    """A seeded generator and hidden (N, d), weight (V, d) / √d, target (N,); draw further inputs from gen."""
    gen = torch.Generator(device=device).manual_seed(seed)
    hidden = torch.randn(N, d, device=device, generator=gen)
    weight = torch.randn(V, d, device=device, generator=gen) / d ** 0.5
    target = torch.randint(0, V, (N,), device=device, generator=gen)
    return gen, hidden, weight, target


@pytest.mark.parametrize("chunk", [None, 5])
@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_linear_grpo_loss_equals_logits_path(chunk, beta):
    N, V, d = 23, 70, 16
    gen, hidden, weight, target = _lm_head_inputs(N, V, d, seed=11)
    with torch.no_grad():
        logp = token_logprobs_reference(hidden @ weight.t(), target, temperature=0.9)
    old = logp + 0.3 * torch.randn(N, generator=gen)
    ref = (logp + 0.3 * torch.randn(N, generator=gen)) if beta > 0 else None
    adv = torch.randn(N, generator=gen)
    w = torch.rand(N, generator=gen) * (torch.rand(N, generator=gen) < 0.8)
    kw = dict(temperature=0.9, eps_low=0.2, eps_high=0.28, beta=beta, return_entropy=True)
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    want, want_stats = grpo_loss(h1 @ w1.t(), target, old, ref, adv, w, backend="reference", **kw)
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    got, got_stats = linear_grpo_loss(h2, w2, target, old, ref, adv, w, chunk_size=chunk, backend="triton", **kw)
    assert_close(got, want, torch.float32, "loss")
    assert_stats_close(got_stats, want_stats, "stats")
    c = torch.tensor(0.6)
    want_g = torch.autograd.grad(want, (h1, w1), c)
    got_g = torch.autograd.grad(got, (h2, w2), c)
    assert_close(got_g[0], want_g[0], torch.float32, "dhidden")
    assert_close(got_g[1], want_g[1], torch.float32, "dweight")
    # the reference backend of the fused function is the logits path
    h3, w3 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    ref_loss, _ = linear_grpo_loss(h3, w3, target, old, ref, adv, w, backend="reference", **kw)
    assert_close(ref_loss, want, torch.float32, "reference backend", "exact")


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_pass_ratio_is_exactly_one(backend):
    """Rollout scoring (no grad) and the training pass compute logp bitwise alike: with old = ref = scored
    logp, eps 0 and A = ±1, any ratio ≠ 1 would be clipped (counted), change the loss, or give kl ≠ 0."""
    N, V, d = 19, 90, 16
    _, hidden, weight, target = _lm_head_inputs(N, V, d, seed=12)
    with torch.no_grad():
        scored = linear_token_logprobs(hidden, weight, target, temperature=0.7, backend=backend)
    adv = torch.tensor([1.0, -1.0] * 9 + [1.0])
    w = torch.ones(N)
    h, wt = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss, stats = linear_grpo_loss(h, wt, target, scored, scored, adv, w, temperature=0.7, eps_low=0.0,
                                   eps_high=0.0, beta=0.1, backend=backend)
    assert loss.item() == -1.0, f"loss {loss.item()!r}: some ratio is not exactly 1"
    assert stats.kl_sum.item() == 0.0 and stats.low_clipped.item() == 0 and stats.high_clipped.item() == 0
    with torch.no_grad():  # the no-grad training-pass path too
        loss2, _ = linear_grpo_loss(hidden, weight, target, scored, scored, adv, w, temperature=0.7,
                                    eps_low=0.0, eps_high=0.0, beta=0.1, backend=backend)
    assert loss2.item() == -1.0


# ------------------------------------------------------------------------------------------------------------
# GPU: full shapes, bf16 three ways, memory
# ------------------------------------------------------------------------------------------------------------
def _gpu_problem(N, V, d, seed=0):
    gen, h32, w32, target = _lm_head_inputs(N, V, d, seed, device="cuda")
    with torch.no_grad():
        logp = linear_token_logprobs(h32.bfloat16(), w32.bfloat16(), target)
    old = logp + 0.2 * torch.randn(N, device="cuda", generator=gen)
    ref = logp + 0.2 * torch.randn(N, device="cuda", generator=gen)
    adv = torch.randn(N, device="cuda", generator=gen)
    w = (torch.rand(N, device="cuda", generator=gen) < 0.9).float() / N
    return h32, w32, target, old, ref, adv, w


@pytest.mark.gpu
@pytest.mark.parametrize("N,V,d", [(4096, 50304, 2048), (2049, 131072, 1024)])
def test_linear_grpo_loss_bf16_gpu(N, V, d):
    h32, w32, target, old, ref, adv, w = _gpu_problem(N, V, d)
    kw = dict(eps_low=0.2, eps_high=0.28, beta=0.04)
    th, tw = h32.clone().requires_grad_(), w32.clone().requires_grad_()
    truth, _ = grpo_loss_reference(token_logprobs_reference(th @ tw.t(), target), old, ref, adv, w, **kw)
    truth_g = torch.autograd.grad(truth, (th, tw))
    bh, bw = h32.bfloat16().requires_grad_(), w32.bfloat16().requires_grad_()
    got, stats = linear_grpo_loss(bh, bw, target, old, ref, adv, w, **kw)
    got_g = torch.autograd.grad(got, (bh, bw))
    # torch in bf16: materialised bf16 logits, bf16 log_softmax
    ch, cw = h32.bfloat16().requires_grad_(), w32.bfloat16().requires_grad_()
    lsm = torch.log_softmax(ch @ cw.t(), dim=-1).gather(-1, target[:, None]).squeeze(-1)
    torch_loss, _ = grpo_loss_reference(lsm, old, ref, adv, w, **kw)
    torch_g = torch.autograd.grad(torch_loss, (ch, cw))
    for name, a, b, t in (("loss", got, torch_loss, truth), ("dhidden", got_g[0], torch_g[0], truth_g[0]),
                          ("dweight", got_g[1], torch_g[1], truth_g[1])):
        assert_lowp(a, b, t, torch.bfloat16, name)
    # the Triton logits path on the same bf16 logits agrees with the fused one
    x = (bh.detach() @ bw.detach().t()).requires_grad_()
    loss_l, stats_l = grpo_loss(x, target, old, ref, adv, w, **kw)
    assert_close(got, loss_l, torch.bfloat16, "fused vs logits path")
    assert stats.tokens.item() == stats_l.tokens.item()


@pytest.mark.gpu
def test_linear_grpo_loss_peak_memory_flat_in_n_gpu():
    V, d = 131072, 2048
    peaks = {}
    for N in (4096, 16384):
        h32, w32, target, old, ref, adv, w = _gpu_problem(N, V, d)
        bh, bw = h32.bfloat16().requires_grad_(), w32.bfloat16().requires_grad_()
        del h32, w32
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        loss, _ = linear_grpo_loss(bh, bw, target, old, ref, adv, w, beta=0.04, chunk_size=1024)
        loss.backward()
        torch.cuda.synchronize()
        peaks[N] = torch.cuda.max_memory_allocated() - base
    # the only N-proportional extra is ∂hidden (N·d·2 bytes): the logits chunk and ∂W do not grow
    growth = peaks[16384] - peaks[4096]
    allowed = (16384 - 4096) * d * 2 * 1.5 + 64 * 2 ** 20
    assert growth <= allowed, f"peak grew {growth / 2**20:.0f} MiB from N=4k to 16k (allowed {allowed / 2**20:.0f})"
