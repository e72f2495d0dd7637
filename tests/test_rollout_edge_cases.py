"""GRPO rollouts at their edges: empty completions give loss 0 (not NaN), truncation and out-of-range rewards
are counted, and a reward that is not one finite number is a one-line error."""
import pytest
import torch

import train.rollout
from model.gpt import GPT, GPTConfig
from train.config import PhaseConfig
from train.grpo import GRPOObjective, GRPOOptions
from train.rollout import RolloutSource
from train.tasks import REWARDS, RewardError


def rollout(monkeypatch, tok, completion: list[int], reward, **phase):
    """One rollout batch of 2 prompts × 2 completions, every completion `completion`; (loss, metrics)."""
    p = PhaseConfig(name="grpo", objective="grpo", batch_size=4, micro_batch_size=4,
                    options={"grpo": GRPOOptions(group_size=2, max_new_tokens=6, **phase)})
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=320, seq_len=64, n_layer=1, n_head=2, n_kv_head=1, n_embd=32))
    monkeypatch.setattr(train.rollout, "generate", lambda model, prompts, **kw: [list(completion) for _ in prompts])
    prompt = lambda i: ([{"role": "user", "content": f"What is {i}+1?"}], str(i + 1))  # noqa: E731
    source = RolloutSource(p, tok, prompt, reward)
    batches = source.next_step(4, 4, model)
    loss, metrics = GRPOObjective(p)(model, batches[0])
    loss.backward()
    assert all(torch.isfinite(q.grad).all() for q in model.parameters() if q.grad is not None)
    return float(loss.detach()), {k: float(v) for k, v in metrics.items()} | source.metrics()


@pytest.mark.parametrize("empty", [[], "end"], ids=["no-tokens", "only-the-stop-token"])
def test_a_batch_of_empty_completions_gives_loss_zero_not_nan(monkeypatch, tok, empty):
    loss, m = rollout(monkeypatch, tok, [tok.end] if empty == "end" else [], REWARDS["exact"], beta=0.1)
    assert loss == 0.0 and m["kl"] == 0.0
    assert (m["empty"], m["truncated"], m["zero_std"], m["reward"]) == (1.0, 0.0, 1.0, 0.0)


def test_completions_cut_at_max_new_tokens_are_counted(monkeypatch, tok):
    loss, m = rollout(monkeypatch, tok, tok.encode("123456"), REWARDS["arithmetic"])
    assert (m["truncated"], m["empty"], m["length"]) == (1.0, 0.0, 6.0)
    loss, m = rollout(monkeypatch, tok, tok.encode("12345") + [tok.end], REWARDS["arithmetic"])
    assert m["truncated"] == 0.0  # stopped on the last allowed token


@pytest.mark.parametrize("value,clamped", [(7.5, 1.0), (-3, 0.0)])
def test_rewards_outside_the_range_are_clamped_and_counted(monkeypatch, tok, value, clamped):
    _, m = rollout(monkeypatch, tok, [tok.end], lambda c, a: value)
    assert m["reward_out_of_range"] == 1.0 and m["reward"] == clamped
    _, m = rollout(monkeypatch, tok, [tok.end], lambda c, a: value, reward_min=-5.0, reward_max=10.0)
    assert m["reward_out_of_range"] == 0.0 and m["reward"] == value


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "1", None, [1.0]])
def test_a_reward_that_is_not_one_finite_number_is_a_one_line_error(monkeypatch, tok, value):
    def shaky(completion, answer):
        return value

    with pytest.raises(RewardError, match=r"reward function shaky returned .* for completion '12'; it must return "
                                          r"one finite number"):
        rollout(monkeypatch, tok, tok.encode("12") + [tok.end], shaky)
