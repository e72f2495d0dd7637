"""--phases=NAME:OBJECTIVE,...: the schedule composed on the command line, its errors, and its resume."""
import json
import os

import pytest

import train.run
from tests.helpers import QUICK as QUICK_OPTIONS, interrupt_at, options
from train.cli import main
from train.config import load_preset
from train.grpo import GRPOOptions
from train.kind import PhaseConfig
from train.schedule import compose

QUICK = options(QUICK_OPTIONS)


@pytest.fixture
def configs(monkeypatch):
    """The configs main() would train, recorded instead of trained."""
    seen = []
    monkeypatch.setattr(train.run, "run", lambda cfg=None, resume=None, **kw: seen.append(cfg))
    return seen


def test_zero_rl_keeps_the_preset_phases_settings():
    smoke = load_preset("smoke")
    cfg = compose(smoke, "pretrain:pretrain,grpo:grpo")
    assert [(p.name, p.objective) for p in cfg.phases] == [("pretrain", "pretrain"), ("grpo", "grpo")]
    assert cfg.phases[0] == smoke.phase("pretrain") and cfg.phases[1] == smoke.phase("grpo")
    assert cfg.phases[1].options["grpo"].group_size == 2  # smoke's, not GRPOOptions' default of 8


def test_new_names_get_phase_defaults_and_later_options_find_them(configs):
    args = ["--preset=smoke", "--phases=pretrain:pretrain,cpt:pretrain,sft:sft,rl:grpo", "--cpt.steps=50",
            "--rl.group_size=4", "--cpt.mix=facts=1"]
    assert main(args) == 0
    (cfg,) = configs
    assert [(p.name, p.objective) for p in cfg.phases] == [("pretrain", "pretrain"), ("cpt", "pretrain"),
                                                           ("sft", "sft"), ("rl", "grpo")]
    cpt, rl = cfg.phase("cpt"), cfg.phase("rl")
    assert cpt.steps == 50 and cpt.options["pretrain"].mix == "facts=1"
    assert (cpt.batch_size, cpt.lr_scale) == (PhaseConfig().batch_size, PhaseConfig().lr_scale)
    assert rl.options["grpo"] == GRPOOptions(group_size=4) and rl.steps == PhaseConfig().steps
    assert cfg.phase("sft") == load_preset("smoke").phase("sft")


def test_a_preset_phase_given_another_objective_swaps_its_options():
    cfg = compose(load_preset("smoke"), "pretrain:sft,grpo:pretrain")
    p, q = cfg.phase("pretrain"), cfg.phase("grpo")
    assert p.objective == "sft" and p.options == {} and p.steps == 4 and p.batch_size == 4  # smoke's kept
    assert q.objective == "pretrain" and set(q.options) == {"pretrain"} and q.lr_scale == 0.02


def test_a_kind_may_repeat_and_phases_may_reorder():
    cfg = compose(load_preset("smoke"), "sft:sft,pretrain:pretrain,sft2:sft")
    assert [p.name for p in cfg.phases] == ["sft", "pretrain", "sft2"]


@pytest.mark.parametrize("spec, message", [
    ("pretrain:dpo", "error: --phases item 'pretrain:dpo': unknown objective 'dpo'; objectives: pretrain, sft, grpo, rlp"),
    ("a:sft,a:grpo", "error: --phases names phase 'a' twice; each phase needs its own name (e.g. cpt:pretrain "
                     "for a second pretraining phase)"),
    (":sft", "error: --phases item ':sft' has an empty phase name; e.g. --phases=pretrain:pretrain,sft:sft,grpo:grpo"),
    ("pretrain", "error: --phases item 'pretrain' must be NAME:OBJECTIVE, e.g. "
                 "--phases=pretrain:pretrain,sft:sft,grpo:grpo"),
    ("a:sft:grpo", "error: --phases item 'a:sft:grpo' must be NAME:OBJECTIVE, e.g. "
                   "--phases=pretrain:pretrain,sft:sft,grpo:grpo"),
    ("a:sft,,b:sft", "error: --phases item '' must be NAME:OBJECTIVE, e.g. --phases=pretrain:pretrain,sft:sft,grpo:grpo"),
    ("", "error: --phases is empty; give NAME:OBJECTIVE items, e.g. --phases=pretrain:pretrain,sft:sft,grpo:grpo"),
])
def test_bad_schedules_are_one_line_errors_before_training(capsys, configs, spec, message):
    assert main(["--preset=smoke", f"--phases={spec}"]) == 2
    assert capsys.readouterr().err.strip() == message
    assert configs == []


def test_phases_cannot_change_on_resume(capsys, configs, tmp_path):
    assert main(["--resume", str(tmp_path), "--phases=pretrain:pretrain"]) == 2
    assert "--phases cannot change on --resume" in capsys.readouterr().err


def test_a_composed_schedule_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch):
    args = ["--preset=smoke", "--phases=pretrain:pretrain,cpt:pretrain", "--cpt.steps=2", *QUICK]
    straight, broken = str(tmp_path / "straight"), str(tmp_path / "broken")
    assert main(args + [f"--out={straight}"]) == 0
    with monkeypatch.context() as m:
        interrupt_at(m, 5)  # in cpt, after the checkpoint at the end of pretrain (step 4)
        assert main(args + [f"--out={broken}"]) == 130
    assert main(["--resume", broken]) == 0

    def lines(d):
        with open(os.path.join(d, "metrics.jsonl")) as f:
            return [{k: v for k, v in json.loads(x).items() if k not in ("ms", "tok_s", "mfu")} for x in f]

    assert lines(broken) == lines(straight)
    assert [r["step"] for r in lines(straight) if r["kind"] == "train"] == list(range(1, 7))
    with open(os.path.join(broken, "config.json")) as f:
        assert [p["name"] for p in json.load(f)["config"]["phases"]] == ["pretrain", "cpt"]
