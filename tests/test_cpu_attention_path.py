"""The CPU attention path: `kernels=auto` runs SDPA off CUDA, in training and in the KV-cache sampler, builds
its document mask once per forward, and the default train step holds no (B, H, T, T) tensor.

The reference attention materialises fp32 scores and probabilities (B, H, Tq, Tk) and repeats K/V to every
head; it stays the oracle these tests compare with and runs only as `kernels=reference`.
"""
import sys

import pytest
import torch

from bench.cpu_step import default_run
from kernels import attention
from kernels.attention import attention_reference
from model.gpt import GPT, GPTConfig
from model.sampler import generate
from tests.helpers import LargestAllocation, assert_close

ATTN = sys.modules["kernels.attention"]  # the module (the package exports its function under the same name)


def inputs(B, H, Hkv, Tq, Tk, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=g) for shape in ((B, H, Tq, D), (B, Hkv, Tk, D), (B, Hkv, Tk, D)))


LAYOUTS = {  # name -> (Tq, Tk, doc_ids (B=2, Tk) or None)
    "causal": (19, 19, None),
    "packed": (19, 19, torch.tensor([[0] * 7 + [1] * 12, [0] * 1 + [1] * 9 + [2] * 9])),
    "decode, left-padded": (1, 19, torch.tensor([[-1] * 4 + [0] * 15, [0] * 19])),
    "cache, no documents": (3, 19, None),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_auto_on_cpu_is_sdpa_and_matches_the_reference(layout):
    Tq, Tk, docs = LAYOUTS[layout]
    q, k, v = inputs(2, 4, 2, Tq, Tk)
    auto = attention(q, k, v, doc_ids=docs)
    assert torch.equal(auto, attention(q, k, v, doc_ids=docs, backend="sdpa")), f"{layout}: auto is not SDPA"
    # fp32 both ways; SDPA's blocked softmax sums in another order than the reference's
    assert_close(auto, attention_reference(q, k, v, doc_ids=docs), torch.float32, f"{layout}: SDPA vs reference")


def test_reference_runs_only_when_named(monkeypatch):
    calls = []
    monkeypatch.setattr(ATTN, "attention_reference", lambda *a, **kw: calls.append(1) or attention_reference(*a, **kw))
    q, k, v = inputs(1, 2, 1, 5, 5)
    attention(q, k, v)
    attention(q, k, v, backend="sdpa")
    assert not calls
    attention(q, k, v, backend="reference")
    assert calls == [1]


def tiny(kernels: str, n_layer: int = 3) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, seq_len=48, n_layer=n_layer, n_head=4, n_kv_head=2, n_embd=32,
                          kernels=kernels))
    with torch.no_grad():  # the init zeroes the output projections, which would hide the attention path
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_document_mask_is_built_once_per_forward(monkeypatch):
    built = []
    real = ATTN.sdpa_mask
    monkeypatch.setattr(ATTN, "sdpa_mask", lambda *a: built.append(a[:2]) or real(*a))
    model = tiny("auto", n_layer=3)
    idx = torch.randint(0, 64, (2, 20))
    docs = torch.tensor([[0] * 8 + [1] * 12, [0] * 20])
    hidden = model(idx, doc_ids=docs)
    assert built == [(20, 20)], f"{len(built)} masks for one forward of 3 layers"
    # and sharing it changes nothing: the same as the reference model, layer by layer
    ref = tiny("reference", n_layer=3)
    assert_close(hidden, ref(idx, doc_ids=docs), torch.float32, "model with a shared SDPA mask vs reference")
    built.clear()
    model(idx)  # one document per row: SDPA's own is_causal, no mask at all
    assert built == []


def test_sampler_on_cpu_decodes_through_sdpa(monkeypatch):
    calls = []
    monkeypatch.setattr(ATTN, "attention_reference", lambda *a, **kw: calls.append(1) or attention_reference(*a, **kw))
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11]]  # left-padded into one batch
    got = generate(tiny("auto"), prompts, max_new_tokens=8, temperature=0.0)
    assert not calls, "the KV-cache sampler ran the reference attention under kernels=auto"
    want = generate(tiny("reference"), prompts, max_new_tokens=8, temperature=0.0)
    assert got == want


# --------------------------------------------------------------------------------- the default train step
def default_step(kernels: str, rows: int):
    cfg, trainer = default_run({"model.kernels": kernels, "pretrain.batch_size": str(rows),
                                "pretrain.micro_batch_size": str(rows)})
    return cfg.model, lambda: trainer.train_step(trainer.phases[0])


def test_default_cpu_step_holds_no_scores_tensor():
    """A whole pretraining step of the default model (documents packed, so the attention is masked), run
    under a dispatch-mode probe that sees every tensor any op produces: none is as large as one layer's fp32
    scores, 4·B·H·T·T bytes. At these dims the largest left is half of it (the MLP's (B·T, 4C) activations)
    and the (B, 1, T, T) document mask a quarter; the same step with `kernels=reference` must reach the
    bound, or the probe proves nothing."""
    rows = 2
    m, step = default_step("auto", rows)
    bound = 4 * rows * m.n_head * m.seq_len * m.seq_len
    step()  # the optimiser's state is allocated on the first step; probe a later one
    with LargestAllocation() as probe:
        step()
    assert probe.largest < bound, f"{probe.where}: {probe.largest} bytes, as large as (B, H, T, T) fp32 ({bound})"
    m, step = default_step("reference", rows)
    with LargestAllocation() as probe:
        step()
    assert probe.largest >= bound, f"the probe missed the reference's scores: largest {probe.where}"


def test_memory_estimate_counts_attention_scores_only_where_they_exist():
    """train/startup.py refuses runs that cannot fit; on a CPU with `auto` the scores no longer exist."""
    from train import startup
    from train.config import apply_overrides, load_preset

    cpu = torch.device("cpu")
    auto = startup.memory_estimate(apply_overrides(load_preset("default"), {}), cpu)
    ref = startup.memory_estimate(apply_overrides(load_preset("default"), {"model.kernels": "reference"}), cpu)
    m, rows = load_preset("default").model, auto["rows"]
    scores = 4.0 * m.n_layer * rows * m.seq_len * 2 * m.n_head * m.seq_len
    mask = 4.0 * rows * m.seq_len * m.seq_len
    assert ref["activations"] - auto["activations"] == scores - mask
