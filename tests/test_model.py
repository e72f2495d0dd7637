import pytest
import torch

from model.gpt import GPT, GPTConfig
from model.sampler import generate


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(**({"vocab_size": 64, "seq_len": 32, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 32,
                        "kernels": "reference"} | kw))
    model = GPT(cfg)
    with torch.no_grad():  # zero-initialised projections would hide bugs in the attention path
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_shapes():
    m = tiny()
    h = m(torch.randint(0, 64, (3, 17)))
    assert h.shape == (3, 17, 32) and m.logits(h).shape == (3, 17, 64)


@pytest.mark.parametrize("kernels", ["reference", "sdpa"])
def test_causal(kernels):
    m = tiny(kernels=kernels)
    x = torch.randint(0, 64, (2, 20))
    y = x.clone()
    y[:, 12:] = torch.randint(0, 64, (2, 8))  # change only the future
    hx, hy = m(x), m(y)
    torch.testing.assert_close(hx[:, :12], hy[:, :12])
    assert not torch.allclose(hx[:, 12:], hy[:, 12:])


def test_documents_do_not_see_each_other():
    m = tiny()
    a, b = torch.randint(0, 64, (1, 7)), torch.randint(0, 64, (1, 9))
    packed = torch.cat([a, b], dim=1)
    doc = torch.tensor([[0] * 7 + [1] * 9])
    pos = torch.tensor([list(range(7)) + list(range(9))])
    h = m(packed, doc_ids=doc, positions=pos)
    torch.testing.assert_close(h[:, :7], m(a), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h[:, 7:], m(b), atol=1e-5, rtol=1e-5)


def test_gqa_config_checks():
    with pytest.raises(ValueError, match="n_kv_head"):
        GPTConfig(n_head=4, n_kv_head=3)
    with pytest.raises(ValueError, match="kernels"):
        GPTConfig(kernels="cuda")


def test_sequence_longer_than_context_is_a_clear_error():
    m = tiny()
    with pytest.raises(ValueError, match="past the model's context"):
        m(torch.zeros(1, 33, dtype=torch.long))


def test_flops_per_token_formula():
    m = tiny()
    c = m.cfg
    non_embedding = sum(p.numel() for n, p in m.named_parameters() if not n.startswith("wte"))
    assert m.flops_per_token() == 6 * non_embedding + 12 * c.n_layer * c.n_head * c.head_dim * c.seq_len


def full_recompute_greedy(m, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(m.logits(m(torch.tensor([ids])))[0, -1].argmax()))
    return ids[len(prompt):]


@torch.no_grad()
def test_kv_cache_sampling_equals_full_recompute():
    m = tiny()
    prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8], [5, 5, 5, 1]]  # different lengths: left padding is exercised
    out = generate(m, prompts, max_new_tokens=10, temperature=0.0, pad_id=0)
    for p, o in zip(prompts, out):
        assert o == full_recompute_greedy(m, p, 10)


@torch.no_grad()
def test_sampling_stops_and_is_reproducible():
    m = tiny()
    prompts = [[1, 2, 3]] * 4
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    a = generate(m, prompts, max_new_tokens=12, temperature=1.0, top_k=5, stop_id=3, generator=g())
    b = generate(m, prompts, max_new_tokens=12, temperature=1.0, top_k=5, stop_id=3, generator=g())
    assert a == b
    for o in a:
        assert 3 not in o[:-1] and (o[-1] == 3 or len(o) == 12)
    with pytest.raises(ValueError, match="exceeds the model context"):
        generate(m, prompts, max_new_tokens=40)
