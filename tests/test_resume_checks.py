"""What `--resume` checks (data files unchanged, the run's own modules given again), which options it lets
change, and the time it adds up."""
import json
import os
import subprocess
import sys
import time

import pytest

import train.loop
from train.optim import lr_factor
from train import checkpoint
from train.cli import main
from train.config import apply_overrides, load_preset
from train.resume import RESUMABLE
from train.run import run

from tests.helpers import QUICK, interrupt_at

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def error_of(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.fixture
def stopped_text_run(tmp_path, monkeypatch):
    """A base-smoke run on a user .txt, stopped at step 3 after a checkpoint at step 2: (folder, data file)."""
    text = tmp_path / "corpus.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 400)
    out = str(tmp_path / "run")
    cfg = apply_overrides(load_preset("base-smoke"), QUICK | {"out": out, "ckpt_every": "2",
                                                              "pretrain.data": str(text)})
    with monkeypatch.context() as m:
        interrupt_at(m, 3)
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
    return out, text


# ------------------------------------------------------------------------------------------------ data
def test_a_data_file_changed_before_resume_is_refused_naming_it(stopped_text_run, capsys):
    out, text = stopped_text_run
    text.write_text(text.read_text()[:5000])  # truncated, as by an editor or a failed copy
    err = error_of(capsys, ["--resume", out])
    assert err.startswith(f"error: {text} (data of phase pretrain) changed since the run started (18000 → 5000 "
                          f"bytes, sha256 "), err
    assert err.endswith("restore it, or add --accept_changed_data to continue on the new contents")
    assert checkpoint.load(out)["step"] == 2  # nothing was written


def test_a_changed_data_file_can_be_accepted(stopped_text_run, capsys):
    out, text = stopped_text_run
    text.write_text("A different text about other things entirely. " * 400)
    assert main(["--resume", out, "--accept_changed_data"]) == 0
    assert f"warning: {text} (data of phase pretrain) changed since the run started" in capsys.readouterr().err
    with open(os.path.join(out, "config.json")) as f:  # the new contents are what a later resume checks against
        assert json.load(f)["data_files"][str(text)]["bytes"] == len(text.read_bytes())


def test_a_pretraining_text_deleted_before_resume_is_one_error_line(stopped_text_run, capsys):
    out, text = stopped_text_run
    text.unlink()
    assert error_of(capsys, ["--resume", out]) == (f"error: {text} (data of phase pretrain) is gone since the run "
                                                   f"started; put it back to resume")


def test_data_paths_are_recorded_absolute_so_resume_works_from_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("Some plain text to learn from, over and over. " * 400)
    out = str(tmp_path / "run")
    run(apply_overrides(load_preset("base-smoke"), QUICK | {"out": out, "pretrain.data": "corpus.txt"}))
    with open(os.path.join(out, "config.json")) as f:
        saved = json.load(f)
    assert saved["config"]["phases"][0]["data"] == str(tmp_path / "corpus.txt")
    assert set(saved["data_files"]) == {str(tmp_path / "corpus.txt")}


# ------------------------------------------------------------------------------------------------ overrides
def test_safe_options_may_change_on_resume_and_are_recorded(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "run")
    cfg = apply_overrides(load_preset("base-smoke"), QUICK | {"out": out, "ckpt_every": "2"})
    with monkeypatch.context() as m:
        interrupt_at(m, 3)
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
    assert main(["--resume", out, "--optim.lr=1e-3", "--pretrain2.steps=6", "--log_every=2"]) == 0
    with open(os.path.join(out, "config.json")) as f:
        saved = json.load(f)
    assert saved["config"]["optim"]["lr"] == 1e-3 and saved["config"]["phases"][1]["steps"] == 6
    assert saved["resumes"] == [{"step": 2, "options": {"optim.lr": "1e-3", "pretrain2.steps": "6",
                                                        "log_every": "2"}}]
    assert checkpoint.find(out)[0].endswith("ckpt-000010-pretrain2.pt")  # 4 + the 6 steps asked for
    with open(os.path.join(out, "metrics.jsonl")) as f:
        lrs = {r["step"]: r["lr"] for r in map(json.loads, f) if r["kind"] == "train"}
    assert lrs[2] == pytest.approx(3e-3 * lr_factor(cfg.phases[0], 1))  # the preset's peak before the resume
    assert lrs[4] == pytest.approx(1e-3 * lr_factor(cfg.phases[0], 3))  # the new one after it


@pytest.mark.parametrize("option,message", [
    ("--model.n_layer=3", "--model.n_layer cannot change on --resume (the checkpoint's model, data or state depend "
                          f"on it); options that may: {RESUMABLE}"),
    ("--pretrain.batch_size=2", "--pretrain.batch_size cannot change on --resume"),
    ("--pretrain.steps=6", "--pretrain.steps: phase pretrain finished at step 4; only the steps of phases not yet "
                           "finished may change"),
    ("--model.n_layerz=3", "unknown config key --model.n_layerz"),
    ("--optim.lr=-1", "optim.lr=-1.0 must be > 0"),
])
def test_other_options_on_resume_are_one_error_line(tmp_path, monkeypatch, capsys, option, message):
    out = str(tmp_path / "run")
    with monkeypatch.context() as m:
        interrupt_at(m, 5)  # in pretrain2, after the checkpoint at the end of pretrain
        with pytest.raises(KeyboardInterrupt):
            run(apply_overrides(load_preset("base-smoke"), QUICK | {"out": out}))
    assert message in error_of(capsys, ["--resume", out, option])


def test_a_phase_cannot_be_shortened_below_the_steps_it_has_run(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "run")
    with monkeypatch.context() as m:
        interrupt_at(m, 3)
        with pytest.raises(KeyboardInterrupt):
            run(apply_overrides(load_preset("base-smoke"), QUICK | {"out": out, "ckpt_every": "3"}))
    assert "--pretrain.steps=2: phase pretrain has already run 3 steps; give more than that" in \
        error_of(capsys, ["--resume", out, "--pretrain.steps=2"])


# ------------------------------------------------------------------------------------------------ time
def test_the_total_time_adds_up_over_resumes(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    original = train.loop.Trainer.train_step

    def slow_step(self, phase):  # the first process spends at least 3 × 0.5 s training
        time.sleep(0.5)
        return original(self, phase)

    with monkeypatch.context() as m:
        m.setattr(train.loop.Trainer, "train_step", slow_step)
        interrupt_at(m, 3)
        with pytest.raises(KeyboardInterrupt):
            run(apply_overrides(load_preset("base-smoke"), QUICK | {"out": out, "ckpt_every": "3"}))
    before = checkpoint.load(out)["elapsed"]
    assert before >= 1.5
    summary = run(resume=out)
    assert summary["seconds"] > before
    again = run(resume=out)  # a finished run: nothing to train, and the total stays (the time of its last
    assert again["seconds"] == pytest.approx(summary["seconds"], abs=0.5)  # checkpoint, a save's time short)


# ------------------------------------------------------------------------------------------------ --import
def test_a_run_with_its_own_reward_resumes_with_import(tmp_path, capsys):
    module = tmp_path / "my_rewards.py"
    module.write_text("from train.tasks import register_reward\n\n"
                      "@register_reward('short')\n"
                      "def short(completion, answer):\n"
                      "    return float(len(completion) < 5)\n")
    out = tmp_path / "run"
    steps = ["--pretrain.steps=1", "--sft.steps=1", "--grpo.steps=1", "--task.evaluate=never", "--eval_rows=2"]
    assert main([f"--import={module}", "--preset=smoke", f"--out={out}", "--grpo.reward=short", *steps]) == 0
    # a new process, where only the module would register the reward
    bare = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--resume", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert bare.returncode == 2 and bare.stderr.strip() == (
        f"error: this run was started with --import={module}, which registers what its config names; resume it "
        f"with: python train.py --import={module} --resume {out}")
    assert main([f"--import={module}", "--resume", str(out)]) == 0
