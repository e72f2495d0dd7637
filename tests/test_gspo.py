"""GSPO: the sequence-level importance ratio of kernels.grpo (`importance="sequence"`) against TRL's published
formula written out here in float64, forward and gradients, on the reference and Triton (interpreter) paths.

TRL's sequence level, for completions (B, L) with mask m, log-probs logp and rollout log-probs old:
    log_s_i = Σ_t (logp − old)·m / max(Σ_t m, 1)          one value per completion, on each of its tokens
    coef    = exp(log_s_i);  per_token_loss = −min(coef·A, clamp(coef, 1 − eps_low, 1 + eps_high)·A) + beta·k3
and then the loss type's aggregation, here Σ w·per_token_loss with the weights of kernels.grpo_token_weights.
"""
import pytest
import torch

from kernels.grpo import grpo_loss, grpo_token_weights, linear_grpo_loss
from kernels.logprobs import linear_token_logprobs
from tests.helpers import assert_close

BACKENDS = ["reference", "triton"]
EPS_LOW, EPS_HIGH, BETA, TEMP = 0.2, 0.28, 0.05, 0.7


def trl_sequence_loss(logits, target, mask, old, ref, adv, w):
    """TRL's `importance_sampling_level="sequence"` loss in float64 over (B, L) rows; differentiable in logits."""
    z = logits.double() / TEMP
    logp = torch.log_softmax(z, -1).gather(-1, target.clamp_min(0)[..., None])[..., 0]  # (B, L)
    m = mask.double()
    log_s = ((logp - old.double()) * m).sum(-1) / m.sum(-1).clamp(min=1.0)  # (B,)
    coef = torch.exp(log_s)[:, None]                                        # (B, 1)
    a = adv.double()[:, None]
    per_token = -torch.min(coef * a, torch.clamp(coef, 1 - EPS_LOW, 1 + EPS_HIGH) * a)
    delta = ref.double() - logp
    per_token = per_token + BETA * (torch.exp(delta) - delta - 1)
    return (w.double() * per_token * m).sum(), coef[:, 0]


def rollout(seed, B=5, L=7, V=37, d=16):
    """A micro-batch of B completions of up to L tokens (one empty), with a policy that moved since scoring."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([L, 3, 1, 0, 6][:B])
    mask = torch.arange(L)[None, :] < lengths[:, None]                      # (B, L)
    hidden = torch.randn(B, L, d, generator=g)
    weight = torch.randn(V, d, generator=g) / d ** 0.5
    target = torch.where(mask, torch.randint(0, V, (B, L), generator=g), -100)
    with torch.no_grad():
        logp = linear_token_logprobs(hidden, weight, target, temperature=TEMP, backend="reference")
    # old and ref off the policy: row 0 clips above (A > 0, s ≈ e^0.4), row 1 below (A < 0, s ≈ e^−0.4)
    shift = torch.tensor([-0.4, 0.4, 0.0, 0.0, 0.1][:B])[:, None]
    old = torch.where(mask, logp + shift + 0.1 * torch.randn(B, L, generator=g), 0.0)
    ref = torch.where(mask, logp + 0.2 * torch.randn(B, L, generator=g), 0.0)
    adv = torch.tensor([1.0, -1.5, 0.7, 2.0, -0.4][:B])
    w = grpo_token_weights(mask, "grpo", num_sequences=B, num_tokens=int(mask.sum()), max_len=L)
    seq = torch.arange(B)[:, None].expand(B, L)                             # (B, L) sequence of each token
    return dict(hidden=hidden, weight=weight, target=target, mask=mask, old=old, ref=ref, adv=adv, w=w, seq=seq)


def flat_inputs(r):
    """The completion tokens only, as train/heads.py passes them: (N,) each, seq ids renumbered 0.. ."""
    sel = r["mask"]
    first = sel & (sel.cumsum(1) == 1)
    seq_ids = first[sel].cumsum(0) - 1
    adv_tok = r["adv"][:, None].expand_as(sel)
    return sel, dict(target=r["target"][sel], old_logp=r["old"][sel], ref_logp=r["ref"][sel],
                     advantages=adv_tok[sel], weights=r["w"][sel]), seq_ids


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_sequence_importance_matches_trl_formula_with_gradients(backend, fused, seed):
    r = rollout(seed)
    hidden = r["hidden"].clone().requires_grad_()
    weight = r["weight"].clone().requires_grad_()
    sel, tok, seq_ids = flat_inputs(r)
    kw = dict(temperature=TEMP, eps_low=EPS_LOW, eps_high=EPS_HIGH, beta=BETA, return_entropy=True,
              importance="sequence", seq_ids=seq_ids, backend=backend)
    if fused:
        loss, stats = linear_grpo_loss(hidden[sel], weight, tok["target"], tok["old_logp"], tok["ref_logp"],
                                       tok["advantages"], tok["weights"], chunk_size=4, **kw)
    else:
        loss, stats = grpo_loss(hidden[sel] @ weight.t(), tok["target"], tok["old_logp"], tok["ref_logp"],
                                tok["advantages"], tok["weights"], **kw)
    dh, dw = torch.autograd.grad(loss, (hidden, weight))

    h64, w64 = r["hidden"].double().requires_grad_(), r["weight"].double().requires_grad_()
    want, coef = trl_sequence_loss(h64 @ w64.t(), r["target"], r["mask"], r["old"], r["ref"], r["adv"], r["w"])
    want_dh, want_dw = torch.autograd.grad(want, (h64, w64))
    assert_close(loss, want, torch.float32, "loss")
    assert_close(dh, want_dh, torch.float32, "dhidden")
    assert_close(dw, want_dw, torch.float32, "dweight")
    # the stats count the tokens of clipped sequences: every token of a sequence shares its ratio
    a, n = r["adv"].double(), r["mask"].sum(1)
    low = ((coef < 1 - EPS_LOW) & (a < 0)).double() @ n.double()
    high = ((coef > 1 + EPS_HIGH) & (a > 0)).double() @ n.double()
    assert (low + high) > 0, "the inputs must clip some sequence for the test to mean something"
    assert stats.low_clipped.item() == low.item() and stats.high_clipped.item() == high.item()
    assert stats.tokens.item() == r["mask"].sum().item()


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_pass_sequence_ratio_is_exactly_one(backend):
    """old_logp scored by the function rollouts use: every sequence ratio is exactly 1, nothing clips and the
    loss is −Σ w·A (the policy gradient of plain GRPO on the first pass)."""
    r = rollout(3)
    sel, tok, seq_ids = flat_inputs(r)
    h = r["hidden"][sel]
    with torch.no_grad():
        old = linear_token_logprobs(h, r["weight"], tok["target"], temperature=TEMP, backend=backend)
    weight = r["weight"].clone().requires_grad_()
    loss, stats = linear_grpo_loss(h, weight, tok["target"], old, None, tok["advantages"], tok["weights"],
                                   temperature=TEMP, eps_low=EPS_LOW, eps_high=EPS_HIGH, importance="sequence",
                                   seq_ids=seq_ids, backend=backend)
    assert loss.item() == (-(tok["weights"] * tok["advantages"]).sum()).item()
    assert stats.low_clipped.item() == 0 and stats.high_clipped.item() == 0
    # and its gradient equals the token-level one's there: both are −Σ w·A·∇logp at ratio 1 (GSPO's paper)
    token, _ = linear_grpo_loss(h, weight, tok["target"], old, None, tok["advantages"], tok["weights"],
                                temperature=TEMP, eps_low=EPS_LOW, eps_high=EPS_HIGH, backend=backend)
    g_seq, = torch.autograd.grad(loss, weight)
    g_tok, = torch.autograd.grad(token, weight)
    # not equal token by token (a sequence's coefficient is its mean weight·A): equal only summed per row
    # when the weights are uniform within a row, as they are for loss_type grpo
    assert_close(g_seq, g_tok, torch.float32, "first-pass gradient")


def test_token_importance_is_unchanged_by_the_new_arguments():
    r = rollout(4)
    sel, tok, _ = flat_inputs(r)
    args = (r["hidden"][sel], r["weight"], tok["target"], tok["old_logp"], tok["ref_logp"], tok["advantages"],
            tok["weights"])
    kw = dict(temperature=TEMP, eps_low=EPS_LOW, eps_high=EPS_HIGH, beta=BETA, backend="triton")
    a, _ = linear_grpo_loss(*args, **kw)
    b, _ = linear_grpo_loss(*args, importance="token", **kw)
    assert a.item() == b.item()


def test_bad_importance_arguments_are_value_errors():
    r = rollout(5)
    sel, tok, seq_ids = flat_inputs(r)
    args = (r["hidden"][sel], r["weight"], tok["target"], tok["old_logp"], None, tok["advantages"], tok["weights"])
    with pytest.raises(ValueError, match=r"importance must be one of \('token', 'sequence'\), got 'seq'"):
        linear_grpo_loss(*args, importance="seq")
    with pytest.raises(ValueError, match='importance="sequence" needs seq_ids'):
        linear_grpo_loss(*args, importance="sequence")
    with pytest.raises(ValueError, match="seq_ids must be int64 of shape"):
        linear_grpo_loss(*args, importance="sequence", seq_ids=seq_ids[:-1])
    with pytest.raises(ValueError, match=r"seq_ids must lie in \[0, "):
        linear_grpo_loss(*args, importance="sequence", seq_ids=seq_ids + 100)
    with pytest.raises(ValueError, match='seq_ids is for importance="sequence"'):
        linear_grpo_loss(*args, seq_ids=seq_ids)
