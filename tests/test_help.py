"""--help lists each phase's options, a kind's own options only under phases of that kind."""
import re

import pytest

from train.cli import main
from train.config import KIND_OPTIONS, PhaseConfig, load_preset, shown_in_help


def listed(capsys, argv) -> set[str]:
    assert main(argv + ["--help"]) == 0
    return set(re.findall(r"^  --([\w.-]+)=", capsys.readouterr().out, flags=re.M))


def test_grpo_options_appear_under_grpo_phases_only(capsys):
    keys = listed(capsys, ["--preset=smoke"])
    for name in KIND_OPTIONS["grpo"]:
        assert f"grpo.{name}" in keys
        assert f"pretrain.{name}" not in keys and f"sft.{name}" not in keys
    assert "pretrain.mix" in keys and "sft.mix" not in keys and "grpo.mix" not in keys
    for name in ("steps", "batch_size", "lr_scale", "data", "aux"):  # every phase has these
        assert {f"pretrain.{name}", f"sft.{name}", f"grpo.{name}"} <= keys


def test_an_aux_objective_brings_its_options_along():
    cfg = load_preset("smoke")
    cfg.phase("sft").aux = "grpo=0.5"
    assert shown_in_help(cfg, "sft.group_size") and not shown_in_help(cfg, "pretrain.group_size")


@pytest.mark.parametrize("kind", sorted(KIND_OPTIONS))
def test_kind_options_are_phase_fields(kind):
    fields = set(PhaseConfig.__dataclass_fields__)
    assert set(KIND_OPTIONS[kind]) <= fields


def test_help_says_what_may_change_on_resume_and_how_to_import(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--optim.lr" in out.split("options of preset")[0] and "--import=MODULE" in out
