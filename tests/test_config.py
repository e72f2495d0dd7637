import pytest

from train.config import ConfigError, apply_overrides, from_dict, load_preset, to_dict


def test_overrides_are_typed():
    cfg = apply_overrides(load_preset("smoke"), {"seed": "3", "model.n_layer": "3", "optim.lr": "1e-3",
                                                 "wandb": "true", "pretrain.steps": "7", "sft.decay": "linear"})
    assert cfg.seed == 3 and cfg.model.n_layer == 3 and cfg.optim.lr == 1e-3 and cfg.wandb is True
    assert cfg.phase("pretrain").steps == 7 and cfg.phase("sft").decay == "linear"


def test_overrides_do_not_touch_the_preset():
    apply_overrides(load_preset("smoke"), {"seed": "5"})
    assert load_preset("smoke").seed == 0


@pytest.mark.parametrize("key,value,message", [
    ("model.n_layers", "3", "unknown config key --model.n_layers; did you mean --model.n_layer?"),
    ("nope", "1", "unknown config key --nope"),
    ("model.n_layer", "three", "--model.n_layer='three': expected an integer"),
    ("optim.lr", "fast", "expected a number"),
    ("wandb", "maybe", "expected true/false"),
    ("device", "tpu", "allowed values are auto, cpu, cuda"),
    ("pretrain.decay", "step", "allowed values are cosine, linear, constant"),
    ("pretrain.batch_size", "3", "must be a multiple of"),
    ("model.n_kv_head", "3", "must divide"),
    ("optim.lr", "-1", "lr=-1.0 must be > 0"),
    ("model", "x", "is a group of settings"),
    ("grpo.group_size", "3", "grpo.batch_size=4 (completions per step) must be a multiple of grpo.group_size=3"),
    ("grpo.loss_type", "mean", "allowed values are grpo, bnpo, dapo, dr_grpo"),
    ("sft.objective", "dpo", "allowed values are pretrain, sft, grpo"),
])
def test_bad_overrides_name_the_key_and_the_fix(key, value, message):
    with pytest.raises(ConfigError) as e:
        apply_overrides(load_preset("smoke"), {key: value})
    assert message in str(e.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="presets: default, smoke"):
        load_preset("huge")


@pytest.mark.parametrize("name", ["default", "smoke", "base", "base-smoke"])
def test_round_trip_through_dict(name):
    cfg = load_preset(name)
    assert from_dict(to_dict(cfg)) == cfg


def test_a_knob_is_set_through_its_phase_or_its_section():
    cfg = apply_overrides(load_preset("smoke"), {"grpo.eps_high": "0.3", "grpo.grpo.beta": "0.05"})
    assert cfg.phase("grpo").options["grpo"].eps_high == 0.3 and cfg.phase("grpo").options["grpo"].beta == 0.05


def test_a_knob_of_another_kind_is_an_error():
    with pytest.raises(ConfigError, match="--pretrain.eps_high: eps_high is an option of grpo and rlp objectives, and "
                                          "phase pretrain trains pretrain"):
        apply_overrides(load_preset("smoke"), {"pretrain.eps_high": "0.3"})
    cfg = load_preset("smoke")
    cfg.phase("pretrain").options["grpo"] = cfg.phase("grpo").options["grpo"]  # built in Python
    with pytest.raises(ConfigError, match="phase pretrain has options for grpo, which it does not train"):
        apply_overrides(cfg, {})


def test_a_changed_objective_brings_its_knobs_and_drops_the_old_ones():
    cfg = apply_overrides(load_preset("smoke"), {"pretrain.group_size": "2", "pretrain.objective": "grpo"})
    assert sorted(cfg.phase("pretrain").options) == ["grpo"] and cfg.phase("pretrain").options["grpo"].group_size == 2


def test_saved_options_round_trip_and_unknown_ones_are_refused():
    d = to_dict(load_preset("smoke"))
    assert d["phases"][2]["options"]["grpo"]["group_size"] == 2 and d["phases"][1]["options"] == {}
    d["phases"][0]["options"]["pretrain"]["nope"] = 1
    with pytest.raises(ConfigError, match="unknown config field pretrain.nope"):
        from_dict(d)
