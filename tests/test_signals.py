"""Interrupted runs lose nothing: SIGTERM/SIGINT finish the step, save a checkpoint and exit 128 + signum, and
a resumed run matches the uninterrupted one exactly; a second signal stops at once.

The first test runs `python train.py` in a subprocess, as a user would: exit codes, stderr and the absence of
a traceback are properties of the process, not of a function.
"""
import os
import re
import signal
import subprocess
import time

import pytest

import train.loop
from tests.helpers import PHASE_ENDS, PRETRAIN_END, QUICK, ROOT, RUN, assert_same_run, cli, options
from train import checkpoint
from train.cli import main
from train.config import apply_overrides, load_preset
from train.loop import Interrupted
from train.rollout import RolloutSource
from train.run import run


def test_sigterm_mid_phase_saves_and_resume_matches_the_uninterrupted_run(tmp_path, straight):
    out = tmp_path / "run"
    proc = subprocess.Popen(cli("--preset=smoke", f"--out={out}", *options(RUN)), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    metrics = out / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text().endswith("\n")):  # a step is logged: training is on
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "the run never logged a step"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    m = re.fullmatch(rf"interrupted at step (\d+) \(phase \w+\); continue with: python train\.py --resume "
                     rf"{re.escape(str(out))}", err.strip().splitlines()[-1])
    assert m, err
    step = int(m.group(1))
    assert step not in PHASE_ENDS  # mid-phase (it stops a step or two after the first one logged)
    assert checkpoint.find(str(out))[0] == str(out / f"ckpt-{step:06d}.pt")

    resumed = subprocess.run(cli("--resume", str(out)), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(straight, str(out))


def test_sigterm_during_a_grpo_rollout_finishes_the_step_then_saves(tmp_path, monkeypatch, straight):
    out = str(tmp_path / "run")
    rollout = RolloutSource.rollout

    def signalled_rollout(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the rollout runs; the handler only takes note
        return rollout(self, *args, **kwargs)

    before = signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as m:
        m.setattr(RolloutSource, "rollout", signalled_rollout)
        with pytest.raises(Interrupted) as e:
            run(apply_overrides(load_preset("smoke"), RUN | {"out": out}))
    first_grpo_step = PRETRAIN_END + 4 + 1  # after sft
    assert e.value.signum == signal.SIGTERM
    assert str(e.value) == (f"interrupted at step {first_grpo_step} (phase grpo); continue with: "
                            f"python train.py --resume {out}")
    assert signal.getsignal(signal.SIGTERM) is before  # handlers are only ours while training
    state = checkpoint.load(out)  # between the two passes over the rollout batch: the batch is saved
    assert state["step"] == first_grpo_step and state["sources"]["grpo"]["passes_left"] == 1
    run(resume=out)
    assert_same_run(straight, out)


def test_sigint_saves_and_exits_130(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    train_step = train.loop.Trainer.train_step

    def interrupted_step(self, phase):
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during step 3
        return train_step(self, phase)

    monkeypatch.setattr(train.loop.Trainer, "train_step", interrupted_step)
    assert main(["--preset=base-smoke", f"--out={out}", *options(QUICK)]) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"interrupted at step 3 (phase pretrain); continue with: python train.py --resume {out}"
    assert checkpoint.load(out)["step"] == 3


@pytest.fixture
def interactive_sigint():
    """SIGINT handled as in a terminal: a job started in the background (nohup, `cmd &` in a script) inherits
    SIGINT ignored, and the handler the run restores is the one it found."""
    found = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, found)


def test_a_second_signal_stops_at_once(tmp_path, capsys, monkeypatch, interactive_sigint):
    out = str(tmp_path / "run")
    train_step = train.loop.Trainer.train_step

    def impatient_step(self, phase):
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # noted, and the previous handler is back ...
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
            os.kill(os.getpid(), signal.SIGINT)  # ... so Ctrl-C twice is a KeyboardInterrupt at once
            raise AssertionError("the second signal should have stopped the step")
        return train_step(self, phase)

    monkeypatch.setattr(train.loop.Trainer, "train_step", impatient_step)
    assert main(["--preset=base-smoke", f"--out={out}", *options(QUICK)]) == 130
    assert capsys.readouterr().err.strip().startswith("interrupted before the run's first checkpoint, so there")
    assert checkpoint.find(out) == []  # no phase had ended and none was asked for
