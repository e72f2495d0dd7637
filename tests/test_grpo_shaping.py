"""DAPO's rollout shaping in the GRPO source: the soft overlong penalty against its formula, overlong filtering
(truncated completions weigh 0), dynamic sampling (zero-variance groups replaced within a draw budget), and
their one-line config errors. The sampler is replaced by a function of each completion's seed."""
import random

import pytest
import torch

import train.rollout
from kernels import grpo_token_weights
from model.gpt import GPT, GPTConfig
from train.cli import main
from train.config import PhaseConfig
from train.grpo import GRPOOptions
from train.refill import length_penalty
from train.rollout import RolloutSource


def dapo_length_reward(y: int, l_max: int, l_cache: int) -> float:
    """DAPO's R_length, as the paper writes it."""
    if y <= l_max - l_cache:
        return 0.0
    if y <= l_max:
        return ((l_max - l_cache) - y) / l_cache
    return -1.0


@pytest.mark.parametrize("l_max,l_cache,factor", [(8, 3, 1.0), (8, 7, 0.5), (48, 16, 2.0), (5, 1, 1.0)])
def test_length_penalty_is_dapos_formula(l_max, l_cache, factor):
    for y in range(0, l_max + 3):
        assert length_penalty(y, l_max, l_cache, factor) == pytest.approx(factor * dapo_length_reward(y, l_max,
                                                                                                         l_cache))
    assert length_penalty(l_max, l_max, 0, factor) == 0.0  # buffer 0: off


def fake_generate(lengths):
    """A sampler whose completion of seed s has lengths(s) tokens and ends with <|end|> unless it is cut at
    max_new_tokens; its digits come from the seed too."""
    def generate(model, prompts, *, max_new_tokens, stop_id, seeds, **kw):
        out = []
        for s in seeds:
            n = lengths(s, max_new_tokens)
            body = [ord("0") + random.Random(s).randrange(10) for _ in range(n)]
            out.append(body if n == max_new_tokens else body[:n - 1] + [stop_id] if n else [])
        return out
    return generate


def source(monkeypatch, tok, lengths, reward, rows=8, **options):
    p = PhaseConfig(name="grpo", objective="grpo", batch_size=rows, micro_batch_size=rows,
                    options={"grpo": GRPOOptions(group_size=4, max_new_tokens=8, **options)})
    monkeypatch.setattr(train.rollout, "generate", fake_generate(lengths))
    prompt = lambda i: ([{"role": "user", "content": f"Say {i}"}], str(i))  # noqa: E731
    return RolloutSource(p, tok, prompt, reward, seed=1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=320, seq_len=64, n_layer=1, n_head=2, n_kv_head=1, n_embd=32))


def by_seed(s, max_new_tokens):
    return 1 + s % max_new_tokens  # lengths 1..max_new_tokens: some completions are cut


def row_lengths(b):
    return (b.targets != -100).sum(1)


def test_soft_overlong_penalty_shapes_the_advantages(monkeypatch, tok, model):
    src = source(monkeypatch, tok, by_seed, lambda c, a: 1.0, overlong_buffer=3, overlong_penalty=0.5)
    b = src.next_step(8, 8, model)[0]
    n = row_lengths(b)
    r = torch.tensor([1.0 + 0.5 * dapo_length_reward(int(y), 8, 3) for y in n], dtype=torch.float64).view(2, 4)
    want = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)  # unbiased std, as GRPO scales it
    got = b.advantages.double().gather(1, (b.targets != -100).int().argmax(1, keepdim=True))[:, 0]  # first token's
    assert torch.allclose(got.view(2, 4), want.float().double(), rtol=1e-5, atol=1e-6), (got, want)
    m = src.metrics()
    assert m["length_penalty"] == pytest.approx(0.5 * sum(dapo_length_reward(int(y), 8, 3) for y in n) / 8)
    assert m["reward"] == 1.0  # the task reward alone


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_overlong_filter_gives_truncated_completions_weight_zero(monkeypatch, tok, model, loss_type):
    src = source(monkeypatch, tok, by_seed, lambda c, a: float(len(c)), overlong_filter=True, loss_type=loss_type,
                 reward_max=100.0)
    b = src.next_step(8, 8, model)[0]
    mask = b.targets != -100
    cut = row_lengths(b) == 8  # the fake sampler ends every shorter completion with <|end|>
    assert 0 < int(cut.sum()) < 8, "the test needs both cut and finished completions"
    kept = mask & ~cut[:, None]
    want = grpo_token_weights(kept, loss_type, num_sequences=8, num_tokens=int(kept.sum()),
                              max_len=mask.shape[1])  # as _pack gives it: the longest row
    assert torch.equal(b.weights, want)
    assert (b.weights[cut] == 0).all() and b.normaliser == float(kept.sum())
    assert src.metrics()["overlong_masked"] == src.metrics()["truncated"] == int(cut.sum()) / 8
    # without the filter they weigh as every other completion
    plain = source(monkeypatch, tok, by_seed, lambda c, a: float(len(c)), loss_type=loss_type, reward_max=100.0)
    assert (plain.next_step(8, 8, model)[0].weights[cut] > 0).any() and "overlong_masked" not in plain.metrics()


def prompts_of(batches, tok):
    """The prompt text (its `Say i`) of each group of a rollout batch."""
    rows = torch.cat([b.idx for b in batches])
    return [tok.decode(r.tolist()).split("Say ")[1].split("<")[0].strip() for r in rows[::4]]


def test_dynamic_sampling_replaces_zero_variance_groups_from_the_prompt_order(monkeypatch, tok, model):
    # prompts 0, 2, 3 and 5 have groups whose rewards are all equal; the others vary
    flat = {"0", "2", "3", "5"}
    reward = lambda c, a: 0.5 if a in flat else len(c) / 8  # noqa: E731
    src = source(monkeypatch, tok, by_seed, reward, rows=8, dynamic_sampling=True, max_extra_draws=3)
    b = src.next_step(8, 8, model)
    # step 1: prompts 0 and 1; 0 is dropped; one extra draw, prompt 2, is flat too; then prompt 3, flat:
    # the budget of 3 is spent (2, 3, 4): prompt 4 varies and fills the batch
    assert prompts_of(b, tok) == ["1", "4"] and src.cursor == 5
    assert (src.metrics()["dropped_groups"], src.metrics()["extra_draws"]) == (3, 3)
    # step 2: prompts 5 and 6; 5 is flat, 7 replaces it
    b = src.next_step(8, 8, model)
    assert prompts_of(b, tok) == ["6", "7"] and src.cursor == 8 and src.metrics()["extra_draws"] == 1


def test_dynamic_sampling_fills_a_short_batch_with_the_last_dropped_groups(monkeypatch, tok, model):
    reward = lambda c, a: 1.0 if int(a) % 4 else len(c) / 8  # noqa: E731  only multiples of 4 vary
    src = source(monkeypatch, tok, by_seed, reward, rows=16, dynamic_sampling=True, max_extra_draws=2)
    b = src.next_step(16, 16, model)
    # prompts 0..3: only 0 is kept; extra draws 4 (kept) and 5 (dropped): still 2 short, so the last two
    # dropped groups (3, then 5) fill it, after the kept ones in draw order
    assert prompts_of(b, tok) == ["0", "4", "3", "5"]
    assert (src.metrics()["dropped_groups"], src.metrics()["extra_draws"], src.metrics()["zero_std"]) == (4, 2, 0.5)
    assert torch.cat([x.advantages for x in b])[8:].abs().sum() == 0  # the fillers change no policy gradient


@pytest.mark.parametrize("option,message", [
    (["--grpo.dynamic_sampling=true"], "error: grpo.max_extra_draws=0 must be > 0 with grpo.dynamic_sampling=true"),
    (["--grpo.overlong_buffer=48"], "error: grpo.overlong_buffer=48 must be < grpo.max_new_tokens=48"),
    (["--grpo.overlong_penalty=-1"], "error: grpo.overlong_penalty=-1.0 must be >= 0"),
    (["--grpo.max_extra_draws=-2"], "error: grpo.max_extra_draws=-2 must be >= 0"),
    (["--grpo.importance=seq"], "error: --grpo.importance='seq': allowed values are token, sequence"),
])
def test_bad_variant_options_are_one_line_errors(tmp_path, capsys, option, message):
    assert main(["--preset=smoke", f"--out={tmp_path / 'r'}", "--grpo.max_new_tokens=48", *option]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err, err
