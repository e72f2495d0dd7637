"""`empty` in the GRPO log line: completions with no content before the stop (<|end|> first, or no token)."""
import pytest
import torch

import train.rollout
from model.gpt import GPT, GPTConfig
from train.config import PhaseConfig
from train.grpo import GRPOOptions
from train.rollout import RolloutSource
from train.tasks import REWARDS, ArithmeticTask
from train.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(ArithmeticTask(digits=2).corpus(100), vocab_size=300)


def empty_share(monkeypatch, tok, completion: list[int]) -> float:
    """The `empty` metric of a rollout batch of 2 prompts × 2 completions, every completion `completion`."""
    p = PhaseConfig(name="grpo", objective="grpo", batch_size=4, micro_batch_size=4,
                    options={"grpo": GRPOOptions(group_size=2, max_new_tokens=16)})
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=320, seq_len=64, n_layer=1, n_head=2, n_kv_head=1, n_embd=32))
    monkeypatch.setattr(train.rollout, "generate", lambda model, prompts, **kw: [list(completion) for _ in prompts])

    def prompt(i):
        return [{"role": "user", "content": f"What is {i}+1?"}], str(i + 1)

    source = RolloutSource(p, tok, prompt, REWARDS["exact"])
    source.next_step(4, 4, model)
    return source.metrics()["empty"]


def test_only_the_stop_token_is_empty(monkeypatch, tok):
    assert empty_share(monkeypatch, tok, [tok.end]) == 1.0


def test_a_long_completion_that_starts_with_another_special_token_is_not_empty(monkeypatch, tok):
    # 16 tokens with content after a stray <|user|>: its text (cut at the first special token) is "", but it
    # is not a completion with nothing before the stop
    assert empty_share(monkeypatch, tok, [tok.user] + tok.encode("12") * 7 + [tok.end]) == 0.0


def test_content_before_the_stop_is_not_empty(monkeypatch, tok):
    assert empty_share(monkeypatch, tok, tok.encode("12") + [tok.end]) == 0.0
