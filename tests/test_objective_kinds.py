"""The objective registry: a kind registered from outside trains a phase of its own through the real run
(README, "Adding an objective"), and an unknown kind is a one-line error before anything runs."""
import json
import os
from dataclasses import dataclass

import pytest

from train import objectives
from train.cli import main
from train.config import ConfigError, PhaseConfig, apply_overrides, load_preset
from train.data import embedded_pretraining
from train.heads import next_token_losses
from train.kind import ObjectiveKind
from train.readers import read_documents
from train.run import run


@dataclass
class ScaledOptions:
    scale: float = 1.0  # the loss is scale × the next-token loss


class ScaledLoss:
    """scale × next-token cross-entropy over the step's supervised tokens."""

    def __init__(self, scale: float, backend: str):
        self.scale, self.backend = scale, backend

    def __call__(self, model, batch):
        loss = next_token_losses(model, batch, self.backend) / batch.normaliser
        return self.scale * loss, {"loss": self.scale * loss.detach(), "unscaled": loss.detach()}


def facts(p, ctx):
    """Embedded sentences about numbers; no held-out set of its own."""
    return embedded_pretraining(ctx.task, ctx.tok, "facts=1", ctx.seed, "train", ctx.seq_len, ctx.dist), {}


SCALED = ObjectiveKind(name="scaled", options=ScaledOptions, read=read_documents, texts=lambda doc: [doc],
                       sources=facts, objective=lambda p, ctx: ScaledLoss(p.options["scaled"].scale, ctx.kernels))


@pytest.fixture
def scaled_kind():
    objectives.register(SCALED)
    yield
    del objectives.KINDS["scaled"]


def test_a_registered_kind_trains_a_phase(tmp_path, scaled_kind):
    out = str(tmp_path / "run")
    cfg = load_preset("smoke")
    cfg.phases = [PhaseConfig(name="toy", objective="scaled", steps=3, batch_size=4, micro_batch_size=2,
                              warmup_steps=0)]
    run(apply_overrides(cfg, {"toy.scale": "2", "out": out, "log_every": "1", "task.eval_problems": "1",
                              "task.pass_k": "0"}))
    with open(os.path.join(out, "metrics.jsonl")) as f:
        steps = [r for r in map(json.loads, f) if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for r in steps:
        assert r["loss"] == pytest.approx(2 * r["unscaled"], rel=1e-6)
    assert steps[-1]["unscaled"] < steps[0]["unscaled"]  # it trains
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["config"]["phases"][0]["options"] == {"scaled": {"scale": 2.0}}


def test_a_registered_kind_owns_its_knobs(scaled_kind):
    cfg = apply_overrides(load_preset("smoke"), {"sft.aux": "scaled=0.5", "sft.scale": "3"})
    assert cfg.phase("sft").options["scaled"].scale == 3.0
    with pytest.raises(ConfigError, match="scale is an option of scaled objectives, and phase grpo trains grpo"):
        apply_overrides(load_preset("smoke"), {"grpo.scale": "3"})


def test_registering_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="an objective kind named 'sft' is registered already"):
        objectives.register(ObjectiveKind(name="sft", options=None, read=read_documents, texts=list,
                                          sources=facts, objective=lambda p, ctx: None))


def test_an_unknown_kind_is_a_one_line_error(tmp_path, capsys):
    assert main(["--preset=smoke", f"--out={tmp_path / 'r'}", "--sft.objective=dpo"]) == 2
    assert capsys.readouterr().err.strip() == "error: sft.objective='dpo': allowed values are pretrain, sft, grpo, rlp"
