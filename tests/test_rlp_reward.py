"""The rlp kind's numbers (train/rlp.py, train/thoughts.py): the information-gain reward on scripted thoughts
with a hand-built model, the EMA update against its formula, and the loss gradient against float64."""
import copy
import math
from types import SimpleNamespace

import pytest
import torch

from model.gpt import GPT, GPTConfig
from train.config import PhaseConfig
from train.data import IGNORE
from train.rlp import RLPObjective, RLPOptions
from train.rollout import RolloutBatch
from train.thoughts import ThoughtSource, ema_update, information_gain, pack_rows

from tests.helpers import assert_close

V, ASSISTANT, PAD = 8, 6, 7  # tokens 0..5 are text
TOK = SimpleNamespace(assistant=ASSISTANT, pad=PAD, end=5)


class Bigram(torch.nn.Module):
    """A hand-built language model: the next token's logits depend on the current token alone,
    logits(next | a) = table[a], through the same head interface as GPT (hidden = one-hot of the token)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.lm_head = torch.nn.Linear(V, V, bias=False)
        self.lm_head.weight.data = table.T.contiguous()  # logits = one_hot(a) @ Wᵀ = table[a]

    def forward(self, idx, doc_ids=None):
        return torch.nn.functional.one_hot(idx, V).float()  # (B, T, V)


def repeater(strength: float) -> Bigram:
    """A model that expects each token to be followed by itself: logit `strength` for it, 0 for the others."""
    return Bigram(strength * torch.eye(V))


def lse(s: float) -> float:
    return math.log(math.exp(s) + V - 1)  # log Σ exp over a row of repeater(s)


def test_a_thought_holding_the_next_token_scores_above_one_that_does_not():
    # text 1 2 | 3 3: the continuation x_t, x_{t+1} = 3, 3 after the context 1 2 (horizon k = 2)
    context, continuation = [1, 2], [3, 3]
    good, bad = [3], [4]  # the third thought is empty: x_t is scored right after <|assistant|>
    policy, baseline = repeater(5.0), repeater(2.0)
    r = information_gain(policy, baseline, [context] * 3, [good, bad, []], [continuation] * 3, tok=TOK,
                         micro_rows=2, backend="reference")
    # with a thought, x_t is scored after the thought's last token; x_{t+1} after x_t = 3 in both rows
    without = (0 - lse(2)) + (2 - lse(2))  # baseline: 3 after 2, then 3 after 3
    want = torch.tensor([(5 - lse(5)) + (5 - lse(5)) - without,   # 3 after 3: the thought said it
                         (0 - lse(5)) + (5 - lse(5)) - without,   # 3 after 4
                         (0 - lse(5)) + (5 - lse(5)) - without])  # 3 after <|assistant|>
    assert_close(r, want, torch.float32, "information gain", "rounding")
    assert r[0] > 0 > r[1] and r[0] > r[2]


def test_the_gain_is_zero_when_the_thought_changes_nothing():
    """Policy = baseline and a thought that leaves the next prediction where it was: r = 0 exactly."""
    m = repeater(3.0)
    r = information_gain(m, m, [[1, 2]], [[2]], [[4, 0]], tok=TOK, micro_rows=1, backend="reference")
    assert r.tolist() == [0.0]


def test_pack_rows_supervises_the_suffix_only():
    rows = pack_rows([[1, 2], [3]], [[4], [5, 0]], PAD, width=5)
    assert rows["idx"].tolist() == [[1, 2, 4, PAD], [3, 5, 0, PAD]]
    assert rows["targets"].tolist() == [[IGNORE, 4, IGNORE, IGNORE], [5, 0, IGNORE, IGNORE]]


def tiny_gpt(seed: int) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_kv_head=1, n_embd=16, seq_len=32, vocab_size=V))
    for q in model.parameters():  # away from the near-uniform init, so the log-probs are not all alike
        q.data.add_(0.3 * torch.randn_like(q))
    return model


def rlp_phase(**knobs) -> PhaseConfig:
    return PhaseConfig(name="rlp", objective="rlp", batch_size=4, micro_batch_size=2,
                       options={"rlp": RLPOptions(**knobs)})


def test_the_ema_follows_its_formula_step_by_step():
    d = 0.75
    source = ThoughtSource(rlp_phase(ema_decay=d), TOK, lambda i: [0, 1, 2, 3, 4], room=4)
    weights = [tiny_gpt(s) for s in range(4)]
    source._advance_ema(weights[0])  # the phase's first step: EMA_0 = θ_0
    want = {k: v.clone() for k, v in weights[0].state_dict().items()}
    for theta in weights[1:]:
        source._advance_ema(theta)
        want = {k: d * want[k] + (1 - d) * v if v.is_floating_point() else v for k, v in theta.state_dict().items()}
        for k, v in source.ema.state_dict().items():
            assert_close(v, want[k], torch.float32, f"EMA {k}", "rounding")
    assert source.ema_updates == 3
    assert not any(q.requires_grad for q in source.ema.parameters())
    assert source.ema.lm_head.weight.data_ptr() != weights[0].lm_head.weight.data_ptr()  # a copy, not an alias


def test_ema_update_is_one_lerp_per_parameter():
    a, b = tiny_gpt(0), tiny_gpt(1)
    want = [0.999 * p + 0.001 * q for p, q in zip(a.parameters(), b.parameters())]
    ema_update(a, b, 0.999)
    for got, w in zip(a.parameters(), want):
        assert_close(got, w, torch.float32, "ema", "rounding")


class Head(torch.nn.Module):
    """A model whose hidden states are a leaf tensor (B, T, C): the loss's gradient reaches them and the head
    weight, which is what the rlp loss adds to the model's own (tested) backward."""

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor):
        super().__init__()
        self.hidden = torch.nn.Parameter(hidden.clone())
        self.lm_head = torch.nn.Linear(weight.size(1), weight.size(0), bias=False)
        self.lm_head.weight.data = weight.clone()

    def forward(self, idx, doc_ids=None):
        return self.hidden


def reference_loss(model: Head, b: RolloutBatch, temperature: float, eps_low: float, eps_high: float):
    """The clipped surrogate in plain float64 PyTorch: Σ_thought tokens w·−min(ratio·A, clip(ratio)·A)."""
    logp = torch.log_softmax(model.lm_head(model.hidden) / temperature, dim=-1)  # (B, T, V)
    sel = b.targets != IGNORE
    logp = logp[sel].gather(1, b.targets[sel][:, None])[:, 0]
    ratio = torch.exp(logp - b.old_logp[sel].double())
    adv = b.advantages[sel].double()
    surr = torch.minimum(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    return (b.weights[sel].double() * -surr).sum()


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_the_loss_gradient_matches_a_float64_reference(backend):
    torch.manual_seed(0)
    prompts, thoughts = [[1, 2, ASSISTANT], [3, ASSISTANT], [0, 4, 1, ASSISTANT]], [[4, 4, 5], [2], [1, 3]]
    rows = pack_rows(prompts, thoughts, PAD)
    mask = rows["targets"] != IGNORE
    model = Head(torch.randn(*mask.shape, 16), torch.randn(V, 16) / 2)
    # old log-probs off the current ones by up to ±0.5, so ratios fall on both sides of the clip
    with torch.no_grad():
        logp = torch.log_softmax(model.lm_head(model.hidden) / 0.8, -1).gather(2, rows["targets"].clamp(min=0)[..., None])
    old = (logp[..., 0] + (torch.rand(mask.shape) - 0.5)) * mask
    b = RolloutBatch(**rows, old_logp=old, advantages=torch.tensor([[1.3], [-0.7], [0.4]]).expand(mask.shape) * mask,
                     weights=mask / mask.sum(), normaliser=float(mask.sum()))
    loss, metrics = RLPObjective(rlp_phase(temperature=0.8, eps_low=0.2, eps_high=0.28), backend)(model, b)
    loss.backward()
    assert 0 < metrics["clip"] < 1  # some tokens were clipped, some not: both branches are tested
    model64 = copy.deepcopy(model).double()
    model64.zero_grad()
    want = reference_loss(model64, b, 0.8, 0.2, 0.28)
    want.backward()
    assert_close(loss, want, torch.float32, "loss")
    assert_close(model.hidden.grad, model64.hidden.grad, torch.float32, "d loss / d hidden")
    assert_close(model.lm_head.weight.grad, model64.lm_head.weight.grad, torch.float32, "d loss / d W")
