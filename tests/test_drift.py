"""Drift after every phase: exactly 0 right after phase k, then measured against k's phase-end checkpoint;
the KL and the distance against direct computations."""
import json
import os

import pytest
import torch

from model.gpt import GPT, GPTConfig
from train import checkpoint
from train.config import apply_overrides, load_preset
from train.drift import mean_kl, relative_distance
from train.run import run

from tests import helpers

QUICK = helpers.QUICK | {"eval_rows": "4"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("drift") / "run")
    run(apply_overrides(load_preset("smoke"), QUICK | {"out": out}))
    with open(os.path.join(out, "summary.json")) as f:
        return out, {p["name"]: p["eval"] for p in json.load(f)["phases"]}


def test_drift_from_the_phase_just_ended_is_exactly_zero(smoke):
    _, evals = smoke
    for k in ("pretrain", "sft", "grpo"):
        assert [evals[k][f"drift/{m}@{k}"] for m in ("kl_text", "kl_chat", "dist")] == [0.0, 0.0, 0.0]
    assert not any(key.endswith("@sft") or key.endswith("@grpo") for key in evals["pretrain"])  # not ended yet
    assert evals["sft"]["drift/kl_text@pretrain"] > 0 and evals["sft"]["drift/kl_chat@pretrain"] > 0
    assert evals["grpo"]["drift/dist@pretrain"] > evals["grpo"]["drift/dist@sft"] > 0


def test_later_drift_is_measured_against_the_phase_end_checkpoint(smoke):
    out, evals = smoke
    models = {}
    for path in checkpoint.find(out):
        name = checkpoint.phase_end(path)
        if name:
            state = checkpoint.read(path)
            cfg = GPTConfig(**{k: v for k, v in state["identity"]["model"].items()})
            models[name] = GPT(cfg)
            models[name].load_state_dict(state["model"])
    # the evaluation after sft ran on the model its checkpoint holds; pretrain's checkpoint is the reference
    assert evals["sft"]["drift/dist@pretrain"] == pytest.approx(
        relative_distance(models["sft"], models["pretrain"]), rel=1e-12)
    assert evals["grpo"]["drift/dist@sft"] == pytest.approx(relative_distance(models["grpo"], models["sft"]), rel=1e-12)


def test_mean_kl_against_torch_kl_div_and_zero_for_the_same_model():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=64, seq_len=16, n_layer=1, n_head=2, n_kv_head=1, n_embd=16)
    a, b = GPT(cfg).eval(), GPT(cfg).eval()
    idx = torch.randint(0, 64, (3, 16))
    with torch.no_grad():
        ha, hb = a(idx).flatten(0, 1), b(idx).flatten(0, 1)
        want = torch.nn.functional.kl_div(b.logits(hb).log_softmax(-1), a.logits(ha).log_softmax(-1),
                                          log_target=True, reduction="batchmean")
        # two chunks of positions, as the evaluator splits them
        assert mean_kl(a, [ha[:20], ha[20:]], b, [hb[:20], hb[20:]]) == pytest.approx(float(want), rel=1e-5)
        assert mean_kl(a, [ha], a, [ha]) == 0.0


def test_relative_distance_is_the_norm_of_the_difference_over_all_parameters():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=64, seq_len=16, n_layer=1, n_head=2, n_kv_head=1, n_embd=16)
    a, b = GPT(cfg), GPT(cfg)
    diff = torch.cat([(p.double() - q.double()).flatten() for p, q in zip(a.parameters(), b.parameters())])
    ref = torch.cat([q.double().flatten() for q in b.parameters()])
    assert relative_distance(a, b) == pytest.approx(float(diff.norm() / ref.norm()), rel=1e-12)
    assert relative_distance(b, b) == 0.0
