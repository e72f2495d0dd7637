"""The run folder: one process at a time, never two runs' files mixed, and failed writes as one line.

Ownership: a run holds an OS lock (`fcntl.flock`) on `run.lock` in its folder for as long as it runs, and
writes its PID there. The kernel drops the lock when the process ends, however it ends (a `kill -9`
included), so a dead run never leaves a stale lock; the file itself stays (deleting it would let a second
process lock a new file while the first still holds the old one). A second process that wants the folder,
for a new run or a `--resume`, gets a one-line error naming the folder and the PID that holds it.

A new run in a folder that already holds files of a run:
    a checkpoint           refused: continue that run with --resume, or pick another --out
    summary.json, but no   refused: a finished run whose checkpoints were removed; its results stay
    checkpoint
    only files of a run    started afresh: that run stopped before its first checkpoint, so there was nothing
    stopped before its     to resume; its files (listed in a printed note) are removed first, so the new
    first checkpoint       run's logs never continue the old ones
A folder is taken for a run's when it has a `run.lock` or a config.json written by a run; files with a run
file's name in any other folder (`--out=.` in a project with its own config.json) are refused, never removed
or overwritten. Token shards (data/) are named by their text and tokenizer, so they are never stale and stay.
Default folder names (runs/<preset>-s<seed>-<time>) are made unique by creating the folder atomically and
adding -2, -3, ... when the name is taken.

Writes that fail for want of space or permission (`OSError` ENOSPC, EDQUOT, EROFS, EACCES, EPERM) become
`RunDirError`, one line naming the folder, through `write_error`.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import time

from train import checkpoint

LOCK = "run.lock"
# what a run writes in its folder, besides checkpoints and the lock (train/report.py, train/run.py)
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "tokenizer.json", "loss.png", "eval.png")
WRITE_ERRNOS = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted"}


class RunDirError(ValueError):
    """The run folder cannot be used or written (printed as one line by the CLI)."""


class Stopped(KeyboardInterrupt):
    """Ctrl-C where the loop does not catch it (start-up, or a second Ctrl-C): the message says how to go on."""


class Lock:
    """An exclusive lock on `run.lock` in `folder`, held until `release` or until the process ends."""

    def __init__(self, folder: str):
        self.folder, self.path = folder, os.path.join(folder, LOCK)
        self.existed = os.path.exists(self.path)  # the folder has held a run before
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(f"cannot use run folder {folder}: {e.strerror.lower()} ({self.path})") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            os.close(self.fd)
            raise RunDirError(f"run folder {folder} is in use by another process ({holder}); one process at a time "
                              f"writes a run folder: wait for it to end, stop it, or pick another folder") from None
        except OSError as e:  # a file system without locks (some network mounts)
            print(f"warning: cannot lock {self.path} ({e.strerror}); make sure no other process writes to "
                  f"{folder}", file=sys.stderr)
        self._write_pid()

    def _holder(self) -> str:
        for _ in range(20):  # the holder writes its PID just after locking: give it a moment
            try:
                pid = os.pread(self.fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                pid = ""
            if pid.isdigit():
                return f"PID {pid}"
            time.sleep(0.05)
        return "PID unknown"

    def _write_pid(self) -> None:
        """Overwrite the PID in place, padded to a fixed width, so a resume on a full disk needs no new block."""
        try:
            os.pwrite(self.fd, f"{os.getpid():<20}\n".encode(), 0)
            os.ftruncate(self.fd, 21)
        except OSError:
            pass  # the lock is what matters; the PID only makes the other process's message clearer

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def claim_new(out: str, default_name: str | None) -> tuple[str, Lock]:
    """Create (or reuse) the folder of a new run, lock it and make sure no other run's files are in it.

    `default_name` (no --out given): a fresh folder is created under that name, or that name with -2, -3, ...
    """
    folder = _create_unique(default_name) if default_name else _create(out)
    lock = Lock(folder)
    try:
        _check_empty_of_runs(folder, lock.existed)
    except BaseException:
        lock.release()
        raise
    return folder, lock


def claim_existing(folder: str) -> Lock:
    """Lock the folder of a run being resumed."""
    if not os.path.isdir(folder):
        raise RunDirError(f"no run folder {folder} to resume" + (" (it is a file)" if os.path.exists(folder) else ""))
    return Lock(folder)


def _create(out: str) -> str:
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunDirError(f"--out={out} is a file; the run folder must be a folder (give a new or empty one)")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create run folder {out}: {e.strerror.lower()}") from None
    return out


def _create_unique(name: str) -> str:
    parent = os.path.dirname(name)
    if parent:
        _create(parent)
    for n in range(1, 1000):
        candidate = name if n == 1 else f"{name}-{n}"
        try:
            os.mkdir(candidate)  # atomic: of two runs started in the same second, one gets each name
            return candidate
        except FileExistsError:
            continue
        except OSError as e:
            raise RunDirError(f"cannot create run folder {candidate}: {e.strerror.lower()}") from None
    raise RunDirError(f"cannot find a free run folder name like {name}; pick one with --out")


def _check_empty_of_runs(folder: str, held_a_run: bool) -> None:
    if checkpoint.find(folder):
        raise RunDirError(f"{folder} already holds a run; continue it with --resume {folder} or pick another --out")
    present = [f for f in RUN_FILES if os.path.exists(os.path.join(folder, f))]
    if present and not (held_a_run or _run_config(os.path.join(folder, "config.json"))):
        raise RunDirError(f"{folder} holds files a run would overwrite ({', '.join(present)}) and no run; pick "
                          f"another --out")
    if "summary.json" in present:
        raise RunDirError(f"{folder} holds a finished run ({', '.join(present)}) without checkpoints; pick another "
                          f"--out, or remove those files to reuse the folder")
    if present:
        for f in present:
            os.remove(os.path.join(folder, f))
        print(f"note: {folder} held a run stopped before its first checkpoint; removed its "
              f"{', '.join(present)} and starting afresh")


def _run_config(path: str) -> bool:
    """Whether `path` is a config.json written by a run."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and {"config", "provenance"} <= set(saved)


# ------------------------------------------------------------------------------------------------ writes
def write_error(e: BaseException, folder: str) -> RunDirError | None:
    """A one-line RunDirError for a file operation in the run folder that failed for want of space or
    permission; None for anything else."""
    err = checkpoint.os_error(e)
    if err is None or err.errno not in WRITE_ERRNOS:
        return None
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        target = f" while writing {err.filename}" if err.filename else ""
        then = (f"free some space, then continue with: {resume_command(folder)}" if checkpoint.find(folder)
                else "free some space and rerun the command")
        return RunDirError(f"{WRITE_ERRNOS[err.errno]} on {folder}{target}; {then}")
    return RunDirError(f"{WRITE_ERRNOS[err.errno]}: {err.filename or folder}")


def resume_command(folder: str) -> str:
    """`python train.py [--import=MODULE ...] --resume FOLDER`: the modules the run was started with come
    first, so its registered rewards exist before the saved config is checked."""
    try:
        with open(os.path.join(folder, "config.json")) as f:
            imports = json.load(f).get("imports", [])
    except (OSError, ValueError, AttributeError):
        imports = []
    return "python train.py " + "".join(f"--import={m} " for m in imports) + f"--resume {folder}"


def stopped_message(folder: str | None) -> str:
    """What to do after a Ctrl-C outside the training loop's handler."""
    if folder and checkpoint.find(folder):
        return f"interrupted; continue from the last checkpoint with: {resume_command(folder)}"
    return "interrupted before the run's first checkpoint, so there is nothing to resume; rerun the command"


def write_atomic(path: str, text: str) -> None:
    """Write `text` to `path` through a temporary file, which is removed if the write fails."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
