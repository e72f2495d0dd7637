"""--init_from: a new run from another run's checkpoint reproduces the parent's next phase step for step, on
one process and on two; what it records; and the checkpoints it refuses."""
import json
import os

import pytest

from tests.test_distributed import CFG, assert_same_run, dense_reward, metrics, two_ranks  # noqa: F401 (fixture)
from train.cli import main
from train.config import apply_overrides, load_preset
from train.run import run
from train.schedule import compose

TIMING = {"ms", "tok_s", "mfu", "rollout_s", "rollout_tok_s"}
SFT_END = "ckpt-000008-sft.pt"  # smoke: 4 steps of pretrain, 4 of sft, 4 of grpo


def grpo_steps(run_dir):
    """The GRPO phase's training lines, without their global step and timings."""
    return [{k: v for k, v in r.items() if k not in TIMING | {"step"}} for r in metrics(run_dir)
            if r["kind"] == "train" and r["phase"] == "grpo"]


def branch_config(out, parent, **extra):
    """The parent's settings (tests/test_distributed.py: a dense reward, a KL reference, two passes per rollout
    batch), GRPO only, from the parent's SFT phase-end checkpoint."""
    own = {k: v for k, v in CFG.items() if not k.startswith(("pretrain.", "sft."))}
    return apply_overrides(compose(load_preset("smoke"), "grpo:grpo"),
                           own | {"out": str(out), "init_from": os.path.join(parent, SFT_END)} | extra)


@pytest.fixture(scope="module")
def parent(tmp_path_factory, dense_reward):  # noqa: F811
    out = tmp_path_factory.mktemp("parent") / "run"
    run(apply_overrides(load_preset("smoke"), CFG | {"out": str(out)}))
    return str(out)


def test_a_branch_from_sft_reproduces_the_parents_grpo_steps(tmp_path, parent, dense_reward):  # noqa: F811
    out = tmp_path / "branch"
    run(branch_config(out, parent, init_optimizer="true"))
    want, got = grpo_steps(parent), grpo_steps(out)
    assert len(want) == 4 and any(abs(r["loss"]) > 1e-6 for r in want)  # GRPO moved the model
    assert got == want  # exactly: the same computation on the same weights, optimiser state and data
    with open(out / "tokenizer.json") as f, open(os.path.join(parent, "tokenizer.json")) as g:
        assert f.read() == g.read()  # the parent's tokenizer, not one trained again
    with open(out / "config.json") as f:
        saved = json.load(f)
    record = saved["parent"]
    assert (record["step"], record["phase"], record["run"], record["seed"]) == (8, "sft", parent, 0)
    assert record["path"] == os.path.join(parent, SFT_END) and len(record["config_sha256"]) == 16
    assert saved["config"]["init_from"] == record["path"] and saved["config"]["init_optimizer"] is True
    with open(out / "summary.json") as f, open(os.path.join(parent, "summary.json")) as g:
        mine, theirs = json.load(f)["phases"][0]["eval"], json.load(g)["phases"][2]["eval"]
    assert mine["drift/dist@grpo"] == 0.0 and mine["drift/dist@init"] == theirs["drift/dist@sft"] > 0


def test_without_the_optimiser_state_the_branch_trains_differently(tmp_path, parent, dense_reward):  # noqa: F811
    out = tmp_path / "fresh-moments"
    run(branch_config(out, parent))
    want, got = grpo_steps(parent), grpo_steps(out)
    assert got[0]["loss"] == want[0]["loss"]  # the same weights and rollouts before the first update
    assert got[1]["loss"] != want[1]["loss"]  # AdamW moments started afresh move it otherwise


def test_two_ranks_of_a_branch_match_one_process(tmp_path, parent, dense_reward):  # noqa: F811
    one, two = tmp_path / "one", tmp_path / "two"
    run(branch_config(one, parent, init_optimizer="true"))
    two_ranks(branch_config(two, parent, init_optimizer="true"))
    assert_same_run(metrics(one), metrics(two))


def test_a_run_folder_and_a_phase_name_the_same_checkpoint(tmp_path, parent, dense_reward):  # noqa: F811
    cfg = apply_overrides(branch_config(tmp_path / "b", parent), {"init_from": parent, "init_phase": "sft"})
    from train import branch

    assert branch.checkpoint_path(cfg) == os.path.join(parent, SFT_END)


@pytest.mark.parametrize("options, message", [
    (["--init_from={tmp}/nope.pt"], "error: --init_from={tmp}/nope.pt: no such file or folder"),
    (["--init_from={tmp}/junk.pt"], "error: {tmp}/junk.pt cannot be read as a checkpoint"),
    (["--init_from={parent}/" + SFT_END, "--model.n_embd=64"],
     "error: --init_from={parent}/" + SFT_END + " is for a different model: model.n_embd is 32 in the checkpoint but "
     "64 here"),
    (["--init_from={parent}"], "error: --init_from={parent} is a run folder: name the phase to start from with "
                               "--init_phase=NAME (phase-end checkpoints there: pretrain, sft, grpo), or give a "
                               "checkpoint file"),
    (["--init_from={parent}", "--init_phase=cpt"], "error: --init_from={parent} has no phase-end checkpoint of phase "
                                                   "'cpt' (phase-end checkpoints there: pretrain, sft, grpo)"),
    (["--init_optimizer=true"], "error: init_optimizer=True must be set only with --init_from"),
])
def test_unusable_checkpoints_are_one_line_errors_before_a_folder_is_made(tmp_path, capsys, parent, options,
                                                                         message):
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    out = tmp_path / "run"
    fill = {"tmp": tmp_path, "parent": parent}
    assert main(["--preset=smoke", f"--out={out}"] + [o.format(**fill) for o in options]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message.format(**fill)) and "\n" not in err, err
    assert not out.exists()
