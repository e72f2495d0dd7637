"""--help lists each phase's options: the common ones, and the knobs of the objective kinds it trains only."""
import dataclasses
import re

from train.cli import main
from train.config import all_keys, apply_overrides, load_preset
from train.grpo import GRPOOptions
from train.supervised import PretrainOptions

GRPO_KNOBS = [f.name for f in dataclasses.fields(GRPOOptions)]


def listed(capsys, argv) -> set[str]:
    assert main(argv + ["--help"]) == 0
    return set(re.findall(r"^  --([\w.-]+)=", capsys.readouterr().out, flags=re.M))


def test_grpo_options_appear_under_grpo_phases_only(capsys):
    keys = listed(capsys, ["--preset=smoke"])
    for name in GRPO_KNOBS:
        assert f"grpo.{name}" in keys
        assert f"pretrain.{name}" not in keys and f"sft.{name}" not in keys
    assert "pretrain.mix" in keys and "sft.mix" not in keys and "grpo.mix" not in keys
    for name in ("steps", "batch_size", "lr_scale", "data", "aux"):  # every phase has these
        assert {f"pretrain.{name}", f"sft.{name}", f"grpo.{name}"} <= keys
    assert not any(key.endswith(".options") for key in keys)


def test_an_aux_objective_brings_its_options_along():
    keys = {key for key, _, _ in all_keys(apply_overrides(load_preset("smoke"), {"sft.aux": "grpo=0.5", "sft.group_size": "2"}))}
    assert {"sft.group_size", "sft.beta"} <= keys and "pretrain.group_size" not in keys


def test_the_help_of_a_knob_is_its_comment(capsys):
    assert main(["--preset=smoke", "--help"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"--grpo.eps_high=0.28 +ratio clipped above at 1 \+ eps_high", out)
    assert re.search(r"--pretrain.mix=\S+ +embedded pretraining documents", out)
    assert re.search(r"--sft.objective=sft +what the phase optimises \[pretrain \| sft \| grpo \| rlp\]", out)


def test_config_holds_a_phase_only_its_kinds_options():
    cfg = apply_overrides(load_preset("smoke"), {"sft.aux": "pretrain=0.1"})
    assert {p.name: sorted(p.options) for p in cfg.phases} == {
        "pretrain": ["pretrain"], "sft": ["pretrain"], "grpo": ["grpo"]}
    assert isinstance(cfg.phase("sft").options["pretrain"], PretrainOptions)


def test_help_says_what_may_change_on_resume_and_how_to_import(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--optim.lr" in out.split("options of preset")[0] and "--import=MODULE" in out
