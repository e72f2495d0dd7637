"""The SFT-RL blends in whole runs: off-policy demonstrations (LUFFY), demonstration prefixes (Prefix-RFT)
and a scheduled aux SFT weight. Two gloo processes stopped mid-phase train what one process trains, and one
process resuming their checkpoint finishes as the uninterrupted run; with no demonstration and a zero
prefix the guided modes are plain GRPO, loss for loss (the harness of tests/test_grpo_variant_runs.py)."""
import pytest

from train.config import apply_overrides, load_preset
from train.run import run

from tests.test_distributed import CFG, STOP_AFTER, assert_same_run, metrics
from tests.test_grpo_variant_runs import patched, two_ranks_stopped  # noqa: F401  (a fixture)

MODES = {
    "demos": {"grpo.demos": "1", "grpo.shaping_gamma": "0.1"},
    "prefix": {"grpo.prefix": "cosine:0.8:0", "grpo.prefix_rows": "1"},
    "aux_schedule": {"grpo.aux": "sft=0.5", "grpo.aux_schedule": "cosine:0.5:0.1"},
    "aux_entropy": {"grpo.aux": "sft=0.5", "grpo.aux_schedule": "srft:0.5"},
}


def config(out, extra):
    return apply_overrides(load_preset("smoke"), CFG | extra | {"out": str(out)})


def grpo_steps(run_dir):
    return [r for r in metrics(run_dir) if r.get("phase") == "grpo" and r["kind"] == "train"]


@pytest.mark.parametrize("mode", MODES)
def test_blend_on_two_ranks_equals_one_process_and_resumes(tmp_path, patched, mode):  # noqa: F811
    run(config(tmp_path / "one", MODES[mode]))
    want = metrics(tmp_path / "one")
    grpo = grpo_steps(tmp_path / "one")
    assert any(abs(r["loss"]) > 1e-6 for r in grpo), "the mode's steps must move the model"
    if mode == "demos":
        assert all(r["demo_fraction"] == 0.5 and r["demo_reward"] > 0 for r in grpo)  # G = 2, k = 1
    if mode == "prefix":
        given = [r["prefix_tokens"] for r in grpo]
        assert given[0] > 0 and given == sorted(given, reverse=True)  # the cosine goes down to 0
    if mode.startswith("aux"):
        weights = [r["aux_weight/sft"] for r in grpo]
        assert all(0 < w <= 0.5 for w in weights) and len(set(weights)) > 1
    out = tmp_path / "two"
    two_ranks_stopped(config(out, MODES[mode]), STOP_AFTER)  # mid-phase: between the two passes over a batch
    got = metrics(out)
    assert got[-1]["step"] == STOP_AFTER
    assert_same_run(want[: len(got)], got)
    run(resume=str(out))  # one process takes the two ranks' checkpoint and finishes the phase
    assert_same_run(want, metrics(out))


def test_no_demonstration_and_zero_prefix_are_plain_grpo(tmp_path, patched):  # noqa: F811
    runs = {name: config(tmp_path / name, extra) for name, extra in {
        "plain": {}, "demos0": {"grpo.demos": "0"},
        "prefix0": {"grpo.prefix": "const:0", "grpo.prefix_rows": "2"}}.items()}
    for cfg in runs.values():
        run(cfg)
    plain = grpo_steps(tmp_path / "plain")
    assert any(abs(r["loss"]) > 1e-6 for r in plain)
    for name in ("demos0", "prefix0"):
        got = grpo_steps(tmp_path / name)
        assert [r["loss"] for r in got] == [r["loss"] for r in plain], name  # exactly, not approximately
        assert [r["reward"] for r in got] == [r["reward"] for r in plain], name
