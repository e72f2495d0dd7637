"""Task accuracy's arithmetic, on scripted completions (the sampler is replaced, so the counts are exact);
the pass@k estimator against enumeration; the sampler's entropies against the model's distribution."""
import itertools
import math

import pytest
import torch

import train.evaluate as evaluate
from model.gpt import GPT, GPTConfig
from model.sampler import generate
from train.tasks import ArithmeticTask, arithmetic_reward
from train.tokenizer import Tokenizer

TOK = Tokenizer.train(ArithmeticTask(digits=2).corpus(100), vocab_size=300)


def test_accuracy_pass_k_sampled_and_length(monkeypatch):
    """Two problems; greedy answers the first right with the worked reply and the second wrong with the short
    one; of the 3 samples at temperature 1, problem 0 gets 0 right and problem 1 gets 2.
    accuracy = 1/2, length = (len(worked) + len(short)) / 2 tokens, sampled = 2/6; pass@1 = (0 + 2/3) / 2,
    pass@2 = (0 + 1 − C(1,2)/C(3,2)) / 2 = 1/2, pass@3 = 1/2; entropy: the greedy tokens' mean."""
    problems = [([{"role": "user", "content": "What is 12+9?"}], "21"),
                ([{"role": "user", "content": "What is 40-3?"}], "37")]
    worked = TOK.encode("2+9=11, 1+0+1=2. Answer: 21") + [TOK.end]
    short = TOK.encode("Answer: 36") + [TOK.end]
    right = TOK.encode("Answer: 37") + [TOK.end]
    script = {0.0: [worked, short], 1.0: [short, short, short, right, short, right]}  # prompt-major rows

    def fake_generate(model, prompts, *, temperature, entropy=False, **kw):
        assert len(prompts) == len(script[temperature]) and entropy == (temperature == 0)
        outs = script[temperature]
        return (outs, [[0.5] * (len(o) - 1) + [3.0] for o in outs]) if entropy else outs  # 3 nats at each stop

    monkeypatch.setattr(evaluate, "generate", fake_generate)
    model = torch.nn.Module()
    model.wte = torch.nn.Embedding(1, 1)
    out = evaluate.task_accuracy(model, TOK, problems, arithmetic_reward, max_new_tokens=32, pass_k=3)
    tokens = len(worked) + len(short)
    assert out == {"accuracy": 0.5, "length": tokens / 2, "entropy": (0.5 * (tokens - 2) + 3.0 * 2) / tokens,
                   "pass@1": pytest.approx(1 / 3), "pass@2": 0.5, "pass@3": 0.5, "sampled": 2 / 6}


def test_pass_at_k_is_the_share_of_k_subsets_holding_a_correct_sample():
    for n in range(1, 7):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                want = sum(any(s) for s in subsets) / len(subsets)
                assert math.isclose(evaluate.pass_at_k(n, c, k), want, rel_tol=1e-12, abs_tol=1e-15), (n, c, k)
    with pytest.raises(ValueError, match="k=5 must be in"):
        evaluate.pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c=5 must be in"):
        evaluate.pass_at_k(4, 5, 1)


def test_pass_ks_are_powers_of_two_below_n_and_n():
    assert evaluate.pass_ks(4) == [1, 2, 4]
    assert evaluate.pass_ks(6) == [1, 2, 4, 6]
    assert evaluate.pass_ks(1) == [1]


def test_the_sampler_returns_the_entropy_of_each_generated_tokens_distribution():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, seq_len=32, n_layer=1, n_head=2, n_kv_head=1, n_embd=16)).eval()
    prompts = [[1, 2, 3], [4, 5]]
    outs, entropies = generate(model, prompts, max_new_tokens=5, temperature=0.0, entropy=True)
    assert outs == generate(model, prompts, max_new_tokens=5, temperature=0.0)
    for prompt, out, h in zip(prompts, outs, entropies):
        assert len(h) == len(out) == 5
        for t in range(len(out)):  # the full forward over prompt + the tokens before t
            with torch.no_grad():
                logits = model.logits(model(torch.tensor([prompt + out[:t]]))[:, -1]).float()
            p = torch.softmax(logits, dim=-1)
            want = float(-(p * p.log()).sum())
            # the KV-cache and full forwards round differently in fp32 (~1e-7 relative); an entropy of the
            # wrong row or step, or at another temperature, is off by percents
            assert math.isclose(h[t], want, rel_tol=1e-5), (t, h[t], want)
