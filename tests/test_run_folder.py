"""One process per run folder, unique default folders, and a folder never holding two runs' logs.

Ownership is a property of processes, so the lock tests run `python train.py` (and a process that only holds
the lock) in subprocesses and kill them for real.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from train import checkpoint, rundir
from train.cli import main
from train.config import apply_overrides, load_preset
from train.rundir import RunDirError
from train.run import run

from tests.helpers import QUICK, ROOT, cli, interrupt_at, options



def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def wait_for(predicate, proc, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------------ the lock
def test_a_running_run_owns_its_folder_until_it_dies(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(cli("--preset=base-smoke", f"--out={out}", "--pretrain.steps=400", *options(QUICK)),
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        metrics = out / "metrics.jsonl"
        wait_for(lambda: metrics.exists() and metrics.read_text().endswith("\n"), first, "the first logged step")
        others = [subprocess.Popen(cli(*argv), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for argv in (["--resume", str(out)], ["--preset=base-smoke", f"--out={out}"])]
        for proc in others:
            stdout, stderr = proc.communicate(timeout=120)
            error = one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
            assert f"run folder {out} is in use by another process (PID {first.pid})" in error, error
        assert first.poll() is None  # the first run went on, untouched
    finally:
        first.kill()  # SIGKILL: no handler runs, no cleanup; the kernel drops the lock
        first.wait(timeout=60)
    # the lock died with its process: the folder can be claimed at once (the killed run saved no checkpoint)
    after = subprocess.run(cli("--resume", str(out)), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert f"no checkpoint in {out}" in one_error_line(after)


def test_a_lock_names_its_holder_and_is_released_with_the_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from train.rundir import Lock; "
                               f"Lock({str(tmp_path)!r}); print('locked', flush=True); time.sleep(600)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=rf"in use by another process \(PID {holder.pid}\)"):
            rundir.Lock(str(tmp_path))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    rundir.Lock(str(tmp_path)).release()


def test_default_folder_names_are_unique_within_a_second(tmp_path):
    name = str(tmp_path / "runs" / "smoke-s0-20250101-120000")  # two runs started in the same second
    a, lock_a = rundir.claim_new("", name)
    b, lock_b = rundir.claim_new("", name)
    assert (a, b) == (name, name + "-2")
    lock_a.release()
    lock_b.release()


# ------------------------------------------------------------------------------------------------ reuse
def test_a_run_stopped_before_its_first_checkpoint_is_started_afresh_not_continued(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "run")
    cfg = apply_overrides(load_preset("base-smoke"), QUICK | {"out": out})
    with monkeypatch.context() as m:
        interrupt_at(m, 3)  # three steps logged, no checkpoint (the first is at the end of the phase)
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
    assert checkpoint.find(out) == [] and os.path.exists(os.path.join(out, "metrics.jsonl"))
    capsys.readouterr()
    run(cfg)
    assert f"note: {out} held a run stopped before its first checkpoint; removed its config.json" in \
        capsys.readouterr().out
    with open(os.path.join(out, "metrics.jsonl")) as f:
        steps = [r["step"] for r in map(json.loads, f) if r["kind"] == "train"]
    assert steps == list(range(1, 9))  # one run's lines, each once


def test_a_folder_with_results_but_no_checkpoint_is_refused(tmp_path, capsys):
    (tmp_path / "run.lock").write_text("123\n")  # a run's folder, whose checkpoints were removed
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text("")
    assert main(["--preset=smoke", f"--out={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {tmp_path} holds a finished run (metrics.jsonl, summary.json) without checkpoints; "
                   f"pick another --out, or remove those files to reuse the folder")
    assert (tmp_path / "summary.json").read_text() == "{}"


def test_a_folder_that_never_held_a_run_keeps_its_own_files(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"mine": true}')  # e.g. --out=. in a project
    assert main(["--preset=smoke", f"--out={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path} holds files a run would overwrite (config.json) "
                                               f"and no run; pick another --out")
    assert (tmp_path / "config.json").read_text() == '{"mine": true}'


def test_out_pointing_at_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["--preset=smoke", f"--out={target}"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --out={target} is a file; the run folder must be a folder "
                                               f"(give a new or empty one)")
    assert target.read_text() == "mine"


def test_an_unwritable_folder_is_one_error_line(tmp_path):
    """A read-only folder (simulated: tests may run as root, who can write anywhere)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    patch = ("import errno, os, sys; real = os.open\n"
             "def ro(path, *a, **k):\n"
             f"    if str(path).startswith({str(folder)!r}):\n"
             "        raise OSError(errno.EROFS, 'Read-only file system', path)\n"
             "    return real(path, *a, **k)\n"
             "os.open = ro\n"
             "from train.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", patch, "--preset=smoke", f"--out={folder}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert one_error_line(proc) == f"error: cannot use run folder {folder}: read-only file system ({folder}/run.lock)"


# ------------------------------------------------------------------------------------------------ Ctrl-C
def test_an_interrupt_before_the_first_checkpoint_says_to_rerun(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "run")
    interrupt_at(monkeypatch, 1)
    assert main(["--preset=base-smoke", f"--out={out}", *options(QUICK)]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "interrupted before the run's first checkpoint, so there is nothing to resume; rerun the command"
    assert "--resume" not in err


def test_an_interrupt_after_a_checkpoint_says_to_resume(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "run")
    interrupt_at(monkeypatch, 5)  # in pretrain2, after the checkpoint at the end of pretrain (step 4)
    assert main(["--preset=base-smoke", f"--out={out}", *options(QUICK)]) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"interrupted; continue from the last checkpoint with: python train.py --resume {out}"
