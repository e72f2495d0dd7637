"""A full disk: one error line naming the folder, no partial file left holding the space, the earlier
checkpoints intact, and a resume that writes nothing before it must.

The disk is full in a subprocess only (a simulated `OSError(ENOSPC)`, as a small tmpfs would give): what is
checked is what the process prints, its exit code and the files it leaves.
"""
import os
import subprocess
import sys

from train import checkpoint

from tests import helpers
from tests.helpers import ROOT, options

QUICK = options(helpers.QUICK)

# torch.save of the third checkpoint writes part of the file, then fails as torch does on a full disk: a
# RuntimeError from its zip writer, raised from the OSError of the write
FULL_AT_THIRD_SAVE = """
import errno, sys, torch
real, calls = torch.save, [0]
def save(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] < 3:
        return real(obj, f, *args, **kwargs)
    f.write(b"partial" * 1000)
    raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 7000 vs 6912") from OSError(
        errno.ENOSPC, "No space left on device")
torch.save = save
"""

# every file opened for writing in the run folder fails: the disk is still full
STILL_FULL = """
import builtins, errno, os, sys
folder, real = os.path.abspath(sys.argv[-1]), builtins.open
def full_open(path, mode="r", *args, **kwargs):
    if isinstance(path, str) and os.path.abspath(path).startswith(folder) and set(mode) & set("wax+"):
        raise OSError(errno.ENOSPC, "No space left on device", path)
    return real(path, mode, *args, **kwargs)
builtins.open = full_open
"""

MAIN = "from train.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def train_py(patch: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", patch + MAIN, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_a_full_disk_while_checkpointing_is_one_line_and_loses_nothing_saved(tmp_path):
    out = tmp_path / "run"
    proc = train_py(FULL_AT_THIRD_SAVE, "--preset=base-smoke", f"--out={out}", "--ckpt_every=2", *QUICK)
    # checkpoints at step 2 and at the end of pretrain (4); the one at step 6 meets the full disk
    assert one_error_line(proc) == (f"error: no space left on {out} while writing {out}/ckpt-000006.pt; free some "
                                    f"space, then continue with: python train.py --resume {out}")
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]  # the partial file does not hold the space
    assert [os.path.basename(p) for p in checkpoint.find(str(out))] == ["ckpt-000004-pretrain.pt", "ckpt-000002.pt"]
    assert checkpoint.load(str(out))["step"] == 4  # whole

    # resumed while the disk is still full: it writes nothing before the first line it must log
    before = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out) if f != "run.lock"}
    again = train_py(STILL_FULL, "--resume", str(out))
    assert one_error_line(again) == (f"error: no space left on {out} while writing {out}/metrics.jsonl; free some "
                                     f"space, then continue with: python train.py --resume {out}")
    after = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out) if f != "run.lock"}
    changed = {f for f in before if before[f] != after.get(f)} | (set(after) - set(before))
    assert changed <= {"metrics.jsonl"}, changed  # cut back to the checkpoint in place (which frees space) at most

    # with space again, the run continues from its last checkpoint
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--resume", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert checkpoint.find(str(out))[0].endswith("ckpt-000008-pretrain2.pt")


def test_a_partial_metrics_line_left_by_a_full_disk_is_dropped_on_resume(tmp_path):
    from train.report import _keep_until

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1}\n{"kind": "train", "step": 2}\n{"kind": "train", "st')
    assert _keep_until(str(path), 2) == [{"kind": "train", "step": 1}, {"kind": "train", "step": 2}]
    assert path.read_text() == '{"kind": "train", "step": 1}\n{"kind": "train", "step": 2}\n'
    _keep_until(str(path), 1)
    assert path.read_text() == '{"kind": "train", "step": 1}\n'
