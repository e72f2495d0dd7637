"""Each GRPO variant in whole runs: two gloo processes stopped mid-phase train what one process trains, and one
process resuming their checkpoint finishes as the uninterrupted run (tests/test_distributed.py's harness).

The sampler is wrapped so that every third completion (by its seed) stops early with <|end|>: an untrained
model never ends on its own, and overlong filtering and the length penalty then have both kinds of rows."""
import os
import signal
import socket

import pytest
import torch.multiprocessing as mp

import train.rollout
from train.config import apply_overrides, load_preset
from train.loop import Interrupted
from train.run import run
from train.tasks import REWARDS, register_reward

from tests.test_distributed import CFG, STOP_AFTER, assert_same_run, digit_share, metrics, sigterm_after

MODES = {
    "gspo": {"grpo.importance": "sequence", "grpo.reward": "digit-share"},
    "dynamic": {"grpo.dynamic_sampling": "true", "grpo.max_extra_draws": "3", "grpo.reward": "mostly-digits"},
    "overlong": {"grpo.overlong_filter": "true", "grpo.overlong_buffer": "6", "grpo.overlong_penalty": "0.5",
                 "grpo.reward": "digit-share"},
}


def mostly_digits(completion: str, answer: str) -> float:
    """A coarse reward: many groups of an untrained model score all 0 or all 1 (dynamic sampling drops them)."""
    return float(digit_share(completion, answer) > 0.1)


def cut_some(generate):
    """The sampler, with every third completion (by seed) cut to seed % 5 tokens and ended with <|end|>."""
    def wrapped(model, prompts, *, seeds, stop_id, **kw):
        out = generate(model, prompts, seeds=seeds, stop_id=stop_id, **kw)
        return [c[: s % 5] + [stop_id] if s % 3 == 0 else c for c, s in zip(out, seeds)]
    return wrapped


def setup(setattr_):
    register_reward("digit-share")(digit_share)
    register_reward("mostly-digits")(mostly_digits)
    setattr_(train.rollout, "generate", cut_some(train.rollout.generate))


@pytest.fixture
def patched(monkeypatch):
    setup(monkeypatch.setattr)
    yield
    REWARDS.pop("digit-share")
    REWARDS.pop("mostly-digits")


def _rank(rank, world, port, cfg, stop_after):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    signal.alarm(300)  # a deadlock between the ranks fails the test instead of hanging the suite
    setup(setattr)
    sigterm_after(setattr, stop_after, rank=1)
    try:
        run(cfg)
    except Interrupted:
        pass


def two_ranks_stopped(cfg, stop_after):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(2, port, cfg, stop_after), nprocs=2)


@pytest.mark.parametrize("mode", MODES)
def test_variant_on_two_ranks_equals_one_process_and_resumes(tmp_path, patched, mode):
    def config(out):
        return apply_overrides(load_preset("smoke"), CFG | MODES[mode] | {"out": str(out)})

    run(config(tmp_path / "one"))
    want = metrics(tmp_path / "one")
    grpo = [r for r in want if r.get("phase") == "grpo" and r["kind"] == "train"]
    assert any(abs(r["loss"]) > 1e-6 for r in grpo), "the variant's steps must move the model"
    if mode == "dynamic":
        assert any(r["dropped_groups"] > 0 for r in grpo) and any(r["extra_draws"] > 0 for r in grpo)
    if mode == "overlong":
        assert any(0 < r["overlong_masked"] < 1 and r["length_penalty"] < 0 for r in grpo)
    out = tmp_path / "two"
    two_ranks_stopped(config(out), STOP_AFTER)  # mid-phase: between the two passes over a rollout batch
    got = metrics(out)
    assert got[-1]["step"] == STOP_AFTER
    assert_same_run(want[: len(got)], got)
    run(resume=str(out))  # one process takes the two ranks' checkpoint and finishes the phase
    assert_same_run(want, metrics(out))
