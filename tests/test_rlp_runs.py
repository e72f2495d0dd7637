"""The rlp kind in whole runs: the smoke schedule with an rlp phase, the RMT-style mix through aux, resume
mid-phase (the EMA baseline included), 2 gloo processes against 1, and bad input at start-up."""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from train import checkpoint, think
from train.cli import main
from train.config import apply_overrides, load_preset
from train.run import run
from train.schedule import compose

from tests.helpers import QUICK, assert_same_run, interrupt_at
from tests.test_distributed import assert_same_run as assert_same_ranks, metrics, _rank

SCHEDULE = "pretrain:pretrain,rlp:rlp,sft:sft,grpo:grpo"
# tiny settings for the new phase (a phase new to the preset starts from the PhaseConfig defaults); an EMA
# that moves fast (0.5) and a learning rate that moves the policy, so a lost or stale EMA shows in the rewards
RLP = {"rlp.steps": "4", "rlp.batch_size": "8", "rlp.micro_batch_size": "2", "rlp.warmup_steps": "0",
       "rlp.max_new_tokens": "6", "rlp.ema_decay": "0.5", "rlp.lr_scale": "3"}


def config(out, extra=None, spec=SCHEDULE):
    return apply_overrides(compose(load_preset("smoke"), spec), QUICK | RLP | {"out": str(out)} | (extra or {}))


def records(out, phase):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("phase") == phase and r["kind"] == "train"]


def test_the_smoke_schedule_with_an_rlp_phase_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--preset=smoke", f"--phases={SCHEDULE}", f"--out={out}", *(f"--{k}={v}" for k, v in
                                                                             (QUICK | RLP).items())]) == 0
    steps = records(out, "rlp")
    assert [r["step"] for r in steps] == [5, 6, 7, 8]
    for r in steps:
        assert {"info_gain", "length", "empty", "truncated", "clip", "entropy"} <= set(r)
        assert 1 <= r["length"] <= 6 and 0 <= r["empty"] <= 1
    with open(out / "summary.json") as f:
        evals = [p["eval"] for p in json.load(f)["phases"]]
    assert all("rlp/info_gain" in e for e in evals)  # the held-out gain after every phase, before rlp too
    ema = checkpoint.load(str(out))["sources"]["rlp"]
    assert ema["ema_updates"] == 3 and ema["ema"] is not None
    # the thoughts the RLP model writes before an answer, read back from the run folder
    capsys.readouterr()
    assert think.main([str(out), "--phase=rlp", "--n=2", "--samples=1", "--max_new_tokens=4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum("greedy " in line for line in lines[:4]) == 2 and sum("sampled " in line for line in lines[:4]) == 2
    assert lines[-2].startswith("greedy   thoughts: 2,") and lines[-1].startswith("sampled  thoughts: 2,")
    assert think.main([str(out), "--phase=cpt"]) == 2 and "no phase-end checkpoint of phase 'cpt'" in capsys.readouterr().err


def test_aux_pretrain_mixes_next_token_loss_into_an_rlp_phase(tmp_path):
    out = tmp_path / "run"
    run(config(out, {"rlp.aux": "pretrain=1", "rlp.position": "entropy"}, "pretrain:pretrain,rlp:rlp"))
    steps = records(out, "rlp")
    assert all(r["pretrain_loss"] > 0 and "info_gain" in r for r in steps)
    assert all(r["tokens"] > 8 * 128 for r in steps)  # the pretraining rows ride along with the thoughts


def whole_and_stopped(tmp_path, monkeypatch):
    """(a whole pretrain → rlp run, the same run stopped at step 7 with its checkpoint at step 6: two rlp steps
    done, the EMA updated once)"""
    spec, extra = "pretrain:pretrain,rlp:rlp", {"ckpt_every": "6"}
    whole, out = tmp_path / "whole", tmp_path / "stopped"
    run(config(whole, extra, spec))
    with monkeypatch.context() as m:
        interrupt_at(m, 7)
        with pytest.raises(KeyboardInterrupt):
            run(config(out, extra, spec))
    return whole, out


def test_resume_in_an_rlp_phase_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    whole, out = whole_and_stopped(tmp_path, monkeypatch)
    saved = checkpoint.load(str(out))
    assert saved["step"] == 6 and saved["sources"]["rlp"]["ema_updates"] == 1
    run(resume=str(out))
    assert_same_run(str(whole), str(out))
    a, b = checkpoint.load(str(whole))["sources"]["rlp"], checkpoint.load(str(out))["sources"]["rlp"]
    assert a["ema_updates"] == b["ema_updates"] == 3
    for k, v in a["ema"].items():
        assert torch.equal(v, b["ema"][k]), k


def test_a_resume_that_lost_the_ema_would_differ(tmp_path, monkeypatch):
    """The comparison above can fail: restarting the EMA from the resumed weights changes the rewards."""
    whole, out = whole_and_stopped(tmp_path, monkeypatch)
    state = checkpoint.load(str(out))
    state["sources"]["rlp"]["ema"] = None  # as if the EMA were not saved: a fresh copy at the next step
    path = checkpoint.find(str(out))[0]
    torch.save(state, path)
    run(resume=str(out))
    want = [r["info_gain"] for r in records(whole, "rlp")]
    got = [r["info_gain"] for r in records(out, "rlp")]
    assert got[:2] == want[:2] and got[2:] != want[2:]


def two_ranks(cfg):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(2, port, cfg, None, 0), nprocs=2)


def test_two_gloo_processes_train_an_rlp_phase_as_one_does(tmp_path):
    spec = "pretrain:pretrain,rlp:rlp"
    extra = {"threads": "1", "pretrain.micro_batch_size": "1", "rlp.micro_batch_size": "2", "rlp.aux": "pretrain=0.5"}
    run(config(tmp_path / "one", extra, spec))
    two_ranks(config(tmp_path / "two", extra, spec))
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    # the comparison means something only if the policy gradient is not 0: groups with different rewards
    assert all(r["zero_std"] < 1 for r in one if r.get("phase") == "rlp" and r["kind"] == "train")
    assert_same_ranks(one, two)


@pytest.mark.parametrize("option, message", [
    ("--rlp.ema_decay=1", "rlp.ema_decay=1.0 must be in (0, 1)"),
    ("--rlp.ema_decay=0", "rlp.ema_decay=0.0 must be in (0, 1)"),
    ("--rlp.max_new_tokens=125", "rlp.max_new_tokens=125 and rlp.horizon=4 leave no room for a position in "
                                 "model.seq_len=128"),
    ("--rlp.horizon=100", "rlp.horizon=100: the embedded documents are too short to pick a position"),
    ("--rlp.group_size=3", "rlp.batch_size=16 (thoughts per step) must be a multiple of rlp.group_size=3"),
])
def test_bad_rlp_settings_are_one_line_errors_at_start_up(tmp_path, capsys, option, message):
    assert main(["--preset=smoke", f"--phases={SCHEDULE}", f"--out={tmp_path / 'r'}", option]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not os.path.exists(tmp_path / "r" / "metrics.jsonl")


def test_a_text_too_short_for_a_position_is_one_line_error(tmp_path, capsys):
    text = tmp_path / "tiny.txt"
    text.write_text("hi")
    assert main(["--preset=smoke", "--phases=rlp:rlp", f"--out={tmp_path / 'r'}", f"--rlp.data={text}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {text}: too short for rlp") and "\n" not in err, err


def test_a_user_text_trains_an_rlp_phase(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("Seven plus five is twelve, and twelve minus five is seven. " * 60)
    out = tmp_path / "run"
    run(config(out, {"rlp.data": str(text), "rlp.steps": "2"}, "rlp:rlp"))
    assert len(records(out, "rlp")) == 2
