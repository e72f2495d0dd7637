"""Stopping a run between steps on SIGINT or SIGTERM, so that a signal never loses work.

While training runs inside `StopOnSignal`, the first SIGINT or SIGTERM only takes note, and the previous
handlers come back at once: a second signal acts as it always does (Ctrl-C twice, or a kill, stops a run
stuck in a step; the checkpoints on disk stay whole, saves being atomic). The loop asks `asked()` after every
whole step (so a GRPO rollout in progress finishes, and its step is taken, first), saves a checkpoint and
raises `Interrupted`, which the CLI turns into one line and exit code 128 + the signal's number (130 for
SIGINT, 143 for SIGTERM), as a shell reports a process killed by it. The previous handlers come back after
training in any case. Python lets only the main thread install handlers; elsewhere none are.
"""
from __future__ import annotations

import signal
import threading

from train import distributed

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """SIGINT/SIGTERM stopped training after a checkpoint; the message says how to continue."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum  # the CLI exits with 128 + signum


class StopOnSignal:
    """A `with` block in which the first SIGINT or SIGTERM is noted in `signum` instead of acting."""

    def __init__(self):
        self.signum: int | None = None  # the first signal received, or (after `asked`) one another rank got
        self._previous: dict = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
            for sig in SIGNALS:
                signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _note(self, signum, frame) -> None:
        self.signum = self.signum or signum
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def asked(self) -> bool:
        """Whether a stop was asked for on any rank: a signal may reach only some ranks, and all of them must
        stop after the same step to save one checkpoint together. A collective: every rank calls it after
        every step."""
        anywhere = distributed.all_reduce(self.signum or 0, "max")  # host sync (with NCCL)
        self.signum = self.signum or anywhere or None
        return self.signum is not None
