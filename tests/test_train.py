"""End to end: the smoke preset, exact resume, and one-line errors for bad input."""
import json
import os

import pytest

import train.loop
from train.cli import main
from train.config import apply_overrides, load_preset
from train.run import run

FAST = {"task.eval_problems": "4", "task.pass_k": "0", "log_every": "1", "grpo.mu": "2", "grpo.beta": "0.1"}
TIMING = {"ms", "tok_s", "mfu", "rollout_s", "rollout_tok_s"}


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("preset", ["smoke", "base-smoke"])  # pretrain → SFT → GRPO; two pretraining mixes
def test_smoke_preset_end_to_end(tmp_path, capsys, preset):
    out = str(tmp_path / "run")
    assert main([f"--preset={preset}", f"--out={out}"]) == 0
    for name in ("config.json", "metrics.jsonl", "summary.json", "tokenizer.json", "loss.png", "eval.png"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    cfg = load_preset(preset)
    ends = [f"ckpt-{4 * (i + 1):06d}-{p.name}.pt" for i, p in enumerate(cfg.phases)]  # 4 steps per phase
    assert sorted(f for f in os.listdir(out) if f.startswith("ckpt")) == ends
    assert [p["name"] for p in summary["phases"]] == [p.name for p in cfg.phases]
    for p in summary["phases"]:  # every held-out set after every phase
        assert {f"{q.name}/loss" for q in cfg.phases if q.objective != "grpo"} <= set(p["eval"])
        assert {"pretrain/bpb", "task/accuracy", "task/pass@2"} <= set(p["eval"])
    with open(os.path.join(out, "config.json")) as f:
        assert {"commit", "device", "torch", "triton"} <= set(json.load(f)["provenance"])
    printed = capsys.readouterr().out
    assert "evaluation after each phase" in printed and "tok/s" in printed


def interrupt_at(monkeypatch, step):
    original = train.loop.Trainer.train_step

    def train_step(self, phase):
        if self.step == step:
            raise KeyboardInterrupt  # as if the process were killed before step `step` + 1
        return original(self, phase)

    monkeypatch.setattr(train.loop.Trainer, "train_step", train_step)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("straight"))
    run(apply_overrides(load_preset("smoke"), FAST | {"out": out}))
    return metrics(out)


# (checkpoint every, killed at): mid-pretraining; at a phase boundary; killed two steps after the last
# checkpoint (the logged steps past it must be dropped and redone); mid-GRPO between the two passes over one
# rollout batch (mu=2), with a KL reference snapshot (beta > 0) to restore
@pytest.mark.parametrize("ckpt_every,killed_at", [(3, 3), (4, 4), (5, 7), (9, 9)])
def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch, straight_run, ckpt_every, killed_at):
    resumed = str(tmp_path / "resumed")
    cfg = apply_overrides(load_preset("smoke"), FAST | {"out": resumed, "ckpt_every": str(ckpt_every)})
    with monkeypatch.context() as m:
        interrupt_at(m, killed_at)
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
    run(resume=resumed)

    a, b = straight_run, metrics(resumed)
    assert [(r["kind"], r["step"]) for r in a] == [(r["kind"], r["step"]) for r in b]
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for key in set(ra) - TIMING:
            assert ra[key] == rb[key], (ra["step"], key, ra[key], rb[key])


def error_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_gets_one_line_errors(tmp_path, capsys):
    assert "unknown config key --model.n_layers" in error_line(capsys, ["--model.n_layers=2"])
    assert "expected an integer" in error_line(capsys, ["--seed=x"])
    assert "unknown preset" in error_line(capsys, ["--preset=nope"])
    assert "no checkpoint in" in error_line(capsys, ["--resume", str(tmp_path)])

    out = ["--preset=smoke", f"--out={tmp_path / 'r'}"]
    assert "data file not found" in error_line(capsys, out + [f"--pretrain.data={tmp_path / 'missing.txt'}"])
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert "is empty" in error_line(capsys, out + [f"--pretrain.data={empty}"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": oops}\n')
    assert f"{bad}:3: malformed JSON" in error_line(capsys, out + [f"--pretrain.data={bad}"])
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"content": "x"}\n')
    assert f'{wrong}:1: expected an object with a string "text" field' in error_line(capsys, out + [f"--pretrain.data={wrong}"])


def test_user_text_file_trains(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 400)
    out = str(tmp_path / "run")
    run(apply_overrides(load_preset("smoke"), FAST | {"out": out, "pretrain.data": str(text), "grpo.eval_every": "2"}))
    assert os.listdir(os.path.join(out, "data"))  # the memory-mapped token shard
    assert metrics(out)[-1]["step"] == 12


def test_user_sft_and_rl_files_train(tmp_path):
    sft, rl = tmp_path / "sft.jsonl", tmp_path / "rl.jsonl"
    sft.write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": str(i)}]})
        + "\n" + json.dumps({"prompt": f"Twice {i}?", "response": str(2 * i)}) + "\n" for i in range(20)))
    rl.write_text("".join(json.dumps({"prompt": f"Say {i}", "answer": i}) + "\n" for i in range(20)))
    out = str(tmp_path / "run")
    summary = run(apply_overrides(load_preset("smoke"), FAST | {
        "out": out, "sft.data": str(sft), "grpo.data": str(rl), "grpo.reward": "exact"}))
    final = summary["phases"][-1]["eval"]
    assert {"sft/loss", "grpo/accuracy"} <= set(final)  # held-out lines of the user's files


def test_a_phase_can_mix_objectives(tmp_path):
    out = str(tmp_path / "run")
    run(apply_overrides(load_preset("smoke"), FAST | {"out": out, "grpo.aux": "sft=0.5", "sft.aux": "pretrain=0.1"}))
    by_phase = {r["phase"]: r for r in metrics(out) if r["kind"] == "train"}
    assert "reward" in by_phase["grpo"] and "sft_loss" in by_phase["grpo"] and "pretrain_loss" in by_phase["sft"]
    with pytest.raises(ValueError, match="aux entry 'dpo=1' must be objective=weight"):
        apply_overrides(load_preset("smoke"), {"grpo.aux": "dpo=1"})


def test_malformed_sft_line_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "sft.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"messages": [{"role": "robot", "content": "x"}]}\n')
    err = error_line(capsys, ["--preset=smoke", f"--out={tmp_path / 'r'}", f"--sft.data={bad}"])
    assert f"{bad}:2: unknown role 'robot'" in err


def test_help_lists_options(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--model.n_layer=" in out and "--pretrain.steps=" in out and "--resume RUN_DIR" in out
