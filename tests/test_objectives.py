"""SFT and GRPO objectives: masks, normalisation, micro-batch invariance, first-pass ratio, reference KL."""
import pytest
import torch

from model.gpt import GPT, GPTConfig
from train.config import PhaseConfig
from train.data import IGNORE, conversations
from train.grpo import GRPOObjective, GRPOOptions
from train.rollout import RolloutSource
from train.supervised import NextTokenLoss
from train.tasks import ArithmeticTask, RewardError, get_reward
from train.tokenizer import Tokenizer

TASK = ArithmeticTask(digits=2)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(TASK.corpus(200), vocab_size=300)


def make_model(tok, seed=0):
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=320, seq_len=96, n_layer=2, n_head=2, n_kv_head=1, n_embd=32, kernels="reference"))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m


def grads(model, objective, batches):
    model.zero_grad()
    total = 0.0
    for b in batches:
        loss, _ = objective(model, b)
        loss.backward()
        total += float(loss.detach())
    return total, [p.grad.clone() for p in model.parameters()]


def test_sft_supervises_assistant_tokens_only(tok):
    src = conversations(lambda i: TASK.conversation("train", i), tok, seq_len=64)
    (b,) = src.next_step(rows=3, micro_rows=3)
    sup = b.targets != IGNORE
    assert b.normaliser == int(sup.sum())
    for row in range(3):
        # the row starts with a whole conversation: its supervised targets are exactly the assistant's
        # answer and the <|end|> closing it, starting right after the <|assistant|> token
        first = src_doc_index(b, row, tok)
        answer = TASK.conversation("train", first)[1]["content"]
        start = int((b.idx[row] == tok.assistant).nonzero()[0])
        n = len(tok.encode(answer)) + 1
        assert b.targets[row, start : start + n].tolist() == tok.encode(answer) + [tok.end]
        assert not sup[row, :start].any()
        assert not torch.isin(b.targets[row][sup[row]], torch.tensor([tok.user, tok.assistant, tok.bos, tok.pad])).any()


def src_doc_index(b, row, tok):
    """Index of the conversation a packed row starts with: count the <|bos|> tokens in the rows before it."""
    return int((b.idx[:row] == tok.bos).sum())


def test_sft_loss_is_invariant_to_micro_batch_split(tok):
    model = make_model(tok)
    src = conversations(lambda i: TASK.conversation("train", i), tok, seq_len=64)
    whole = src.next_step(rows=4, micro_rows=4)
    src.cursor = 0
    split = src.next_step(rows=4, micro_rows=1)
    assert all(b.normaliser == whole[0].normaliser for b in split)  # the whole step's count, not the micro-batch's
    la, ga = grads(model, NextTokenLoss(), whole)
    lb, gb = grads(model, NextTokenLoss(), split)
    assert la == pytest.approx(lb, rel=1e-5)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def rollouts(tok, model, micro_rows, **kw):
    p = PhaseConfig(name="grpo", objective="grpo", batch_size=8, micro_batch_size=micro_rows,
                    options={"grpo": GRPOOptions(group_size=4, max_new_tokens=12, **kw)})
    src = RolloutSource(p, tok, lambda i: TASK.prompt("train", i), get_reward("arithmetic"), seed=3)
    return p, src, src.next_step(8, micro_rows, model)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_grpo_loss_is_invariant_to_micro_batch_split(tok, loss_type):
    model = make_model(tok)
    # rewards of a random model are all 0, so give the groups advantages by hand to exercise the loss
    p, _, whole = rollouts(tok, model, 8, loss_type=loss_type)
    _, _, split = rollouts(tok, model, 2, loss_type=loss_type)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0, 2.0, -1.0, -1.0])
    for batches, rows in ((whole, 8), (split, 2)):
        for i, b in enumerate(batches):
            b.advantages = adv[i * rows : (i + 1) * rows, None] * (b.targets != IGNORE)
    la, ga = grads(model, GRPOObjective(p), whole)
    lb, gb = grads(model, GRPOObjective(p), split)
    assert la == pytest.approx(lb, rel=1e-5, abs=1e-7)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_first_pass_has_ratio_one_and_zero_kl(tok):
    model = make_model(tok)
    p, src, batches = rollouts(tok, model, 4, beta=0.1)
    obj = GRPOObjective(p)
    for b in batches:
        _, m = obj(model, b)
        assert m["kl"] == 0.0 and m["clip"] == 0.0  # policy == reference == the rollout policy
        assert b.ref_logp is not None and torch.equal(b.ref_logp, b.old_logp)
    info = src.metrics()  # the source's own rollout metrics
    assert {"reward", "accuracy", "pass@4", "zero_std", "length"} <= set(info)
    assert 0.0 <= info["zero_std"] <= 1.0


def test_mu_reuses_each_rollout_batch(tok):
    model = make_model(tok)
    p = PhaseConfig(name="grpo", objective="grpo", batch_size=4, micro_batch_size=4,
                    options={"grpo": GRPOOptions(group_size=2, max_new_tokens=8, mu=2)})
    src = RolloutSource(p, tok, lambda i: TASK.prompt("train", i), get_reward("arithmetic"), seed=0)
    first, second, third = (src.next_step(4, 4, model) for _ in range(3))
    assert first is second and third is not first and src.cursor == 4  # 2 prompts per rollout batch


def test_bad_reward_value_is_a_clear_error(tok):
    model = make_model(tok)
    p = PhaseConfig(name="grpo", objective="grpo", batch_size=2, micro_batch_size=2,
                    options={"grpo": GRPOOptions(group_size=2, max_new_tokens=4)})
    src = RolloutSource(p, tok, lambda i: TASK.prompt("train", i), lambda c, a: None, seed=0)
    with pytest.raises(RewardError, match="reward function <lambda> returned None"):
        src.next_step(2, 2, model)
