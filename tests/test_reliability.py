"""Reliability: interrupted runs lose nothing, bad input is refused in one line, numerical faults are caught.

The signal and bad-input tests run `python train.py` in subprocesses, as a user would: exit codes, stderr
and the absence of a traceback are properties of the process, not of a function.
"""
import ast
import io
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import train.loop
import train.supervised
import train.rollout
from model.gpt import GPT, GPTConfig
from train import checkpoint
from train.checkpoint import CheckpointError
from train.cli import main
from train.config import ConfigError, PhaseConfig, apply_overrides, load_preset
from train.data import TokenStream
from train.readers import (DataError, fit_context, parse_conversation, parse_prompt, parse_text, read_documents,
                           read_jsonl)
from train.loop import Interrupted
from train.grpo import GRPOObjective, GRPOOptions, user_prompts
from train.rollout import RolloutSource
from train.supervised import user_conversations
from train.run import run
from train.tasks import REWARDS, ArithmeticTask, RewardError
from train.tokenizer import SPECIAL_TOKENS, Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# smoke, with a pretraining phase long enough for a signal to land inside it and minimal evaluation; GRPO
# reuses each rollout batch twice (mu=2) and keeps a reference (beta > 0), so its state is all in a checkpoint.
# One thread, in this process and in subprocesses alike: a thread count can change how matmuls sum, and runs
# in and out of this process are compared exactly.
RUN = {"task.eval_problems": "2", "task.pass_k": "0", "eval_rows": "2", "log_every": "1", "pretrain.steps": "10",
       "grpo.mu": "2", "grpo.beta": "0.1", "threads": "1"}
PRETRAIN_END = 10  # smoke's phases: pretrain (set above), then 4 steps of sft and 4 of grpo
PHASE_ENDS = (PRETRAIN_END, PRETRAIN_END + 4, PRETRAIN_END + 8)
QUICK = {"task.eval_problems": "2", "task.pass_k": "0", "eval_rows": "2", "log_every": "1"}
TIMING = {"ms", "tok_s", "mfu", "rollout_s", "rollout_tok_s", "seconds"}


def cli(*args: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "train.py"), *args]


def options(overrides: dict) -> list[str]:
    return [f"--{k}={v}" for k, v in overrides.items()]


def assert_same_run(a: str, b: str) -> None:
    """Every logged metric and the summary of run folders a and b agree exactly, timings aside."""
    def records(d):
        with open(os.path.join(d, "metrics.jsonl")) as f:
            return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]

    def phases(d):
        with open(os.path.join(d, "summary.json")) as f:
            return [{k: v for k, v in p.items() if k not in TIMING} for p in json.load(f)["phases"]]

    ra, rb = records(a), records(b)
    assert [(r["kind"], r["step"]) for r in ra] == [(r["kind"], r["step"]) for r in rb]
    for x, y in zip(ra, rb):
        assert x == y, (x["step"], {k: (x.get(k), y.get(k)) for k in set(x) | set(y) if x.get(k) != y.get(k)})
    assert phases(a) == phases(b)


@pytest.fixture(scope="module", autouse=True)
def keep_torch_threads():
    """Runs here set torch's thread count for the whole process (`threads`); later test files get it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run that interrupted and resumed ones must reproduce."""
    out = str(tmp_path_factory.mktemp("straight") / "run")
    run(apply_overrides(load_preset("smoke"), RUN | {"out": out}))
    return out


# ------------------------------------------------------------------------------------------------ signals
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


def test_a_second_signal_stops_at_once(tmp_path, capsys, monkeypatch):
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


# ------------------------------------------------------------------------------------------------ checkpoints
def test_checkpoints_rotate_keeping_the_last_k_and_every_phase_end(tmp_path):
    d = str(tmp_path)
    for step in range(1, 8):
        checkpoint.save(d, {"step": step}, keep=2, phase_end="pretrain" if step == 3 else None)
    names = lambda: sorted(f for f in os.listdir(d))  # noqa: E731
    assert names() == ["ckpt-000003-pretrain.pt", "ckpt-000006.pt", "ckpt-000007.pt"]
    # a run resumed from step 4 (say 5..7 would not load) drops what lies past it; a crash's .tmp goes too
    (tmp_path / "ckpt-000008.pt.tmp").write_bytes(b"partial")
    checkpoint.save(d, {"step": 5}, keep=2)
    assert names() == ["ckpt-000003-pretrain.pt", "ckpt-000005.pt"]
    assert checkpoint.load(d)["step"] == 5


def test_truncated_checkpoint_is_detected_and_the_previous_one_used(tmp_path, capsys):
    d = str(tmp_path)
    for step in (1, 2):
        checkpoint.save(d, {"step": step, "w": torch.arange(1000.0) * step})
    newest = tmp_path / "ckpt-000002.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # cut short, as by a full disk
    state = checkpoint.load(d)
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(1000.0))
    warning = capsys.readouterr().err.strip()
    assert warning.startswith(f"warning: checkpoint {newest} is unreadable") and "\n" not in warning
    assert warning.endswith(f"falling back to {tmp_path / 'ckpt-000001.pt'}")

    # damaged in other ways: random bytes, a bare pickle, flipped bits (which may also miss what matters)
    rng, older = random.Random(0), tmp_path / "ckpt-000001.pt"
    for case in range(60):
        newest.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))) if case % 3 == 0 else
                           pickle.dumps({"step": 2}, protocol=2) if case % 3 == 1 else
                           bytes(b ^ rng.randrange(256) if rng.random() < 0.02 else b for b in older.read_bytes()))
        fell_back = checkpoint.load(d)["loaded_from"] == str(older)
        assert fell_back == ("is unreadable" in capsys.readouterr().err) and (fell_back or case % 3 == 2)

    newest.write_bytes(b"")
    (tmp_path / "ckpt-000001.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint in .*: all 2 are truncated or corrupt"):
        checkpoint.load(d)


class Payload:
    """Pickles as a call to os.system: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_holding_a_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"step": 1, "model": {}, "x": Payload(marker)}, tmp_path / "ckpt-000001.pt")
    with pytest.raises(CheckpointError, match=r"holds pickled objects other than tensors and plain data "
                                              r"\(posix\.system\); refusing to load it"):
        checkpoint.load(str(tmp_path))
    assert not marker.exists()


def test_rng_states_survive_a_weights_only_load():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    buf = io.BytesIO()
    torch.save(checkpoint.rng_state(), buf)
    expected = (random.random(), np.random.rand(), torch.rand(()))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    checkpoint.set_rng_state(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(())) == expected


def test_identity_names_what_differs():
    tok_a, tok_b = '{"ranks": [1]}', '{"ranks": [2]}'
    saved = {"identity": checkpoint.identity(GPTConfig(n_embd=64), tok_a)}
    checkpoint.check_identity(saved, checkpoint.identity(GPTConfig(n_embd=64, kernels="sdpa"), tok_a), "c.pt")
    with pytest.raises(CheckpointError, match="c.pt is for a different model: n_embd is 64 in the checkpoint but "
                                              "128 here"):
        checkpoint.check_identity(saved, checkpoint.identity(GPTConfig(n_embd=128), tok_a), "c.pt")
    with pytest.raises(CheckpointError, match="c.pt was trained with a different tokenizer"):
        checkpoint.check_identity(saved, checkpoint.identity(GPTConfig(n_embd=64), tok_b), "c.pt")


# ------------------------------------------------------------------------------------------------ faults


class NaNGrad(torch.autograd.Function):
    """0 forward, NaN gradient backward: a bad gradient with a finite loss."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.new_zeros(())

    @staticmethod
    def backward(ctx, grad):
        return torch.full(ctx.shape, float("nan"), device=grad.device)


def poison(monkeypatch, bad_loss, bad_grad=()):
    """Wrap the next-token objective: its n-th call (2 micro-batches per base-smoke step) returns a NaN loss
    (n in bad_loss) or a NaN gradient for blocks.1.mlp.down.weight (n in bad_grad)."""
    objective, calls = train.supervised.NextTokenLoss.__call__, iter(range(10**6))

    def poisoned(self, model, batch):
        loss, metrics = objective(self, model, batch)
        n = next(calls)
        if n in bad_loss:
            loss = loss * float("nan")
        if n in bad_grad:
            loss = loss + NaNGrad.apply(model.blocks[1].mlp.down.weight)
        return loss, {**metrics, "loss": loss.detach()}

    monkeypatch.setattr(train.supervised.NextTokenLoss, "__call__", poisoned)


def test_a_nan_loss_or_gradient_skips_the_step_and_is_reported(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    poison(monkeypatch, bad_loss={4}, bad_grad={11})  # steps 3 (pretrain) and 6 (pretrain2)
    summary = run(apply_overrides(load_preset("base-smoke"), QUICK | {"out": out}))
    printed = capsys.readouterr().out
    assert "warning: phase pretrain: the loss is nan at step 3; update skipped (1 in a row" in printed
    assert ("warning: phase pretrain2: the gradient of blocks.1.mlp.down.weight is not finite at step 6; "
            "update skipped (1 in a row") in printed
    with open(os.path.join(out, "metrics.jsonl")) as f:
        steps = [r for r in map(json.loads, f) if r["kind"] == "train"]
    assert [r["skipped"] for r in steps] == [0, 0, 1, 0, 0, 1, 0, 0]
    # had either update been applied, its NaNs would be in the weights and in every later loss
    assert all(np.isfinite(r["loss"]) for r in steps if r["step"] != 3)
    assert [p["skipped"] for p in summary["phases"]] == [1, 1]


def test_consecutive_faults_stop_the_run_with_a_checkpoint(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    poison(monkeypatch, bad_loss=range(2, 10**6))  # every step from step 2 on
    assert main(["--preset=base-smoke", f"--out={out}", "--optim.max_bad_steps=2", *options(QUICK)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: phase pretrain: 2 steps in a row had a non-finite loss or gradient (last: the loss is "
                   "nan at step 3); saved a checkpoint at step 3 and stopped; check the data, or continue with a lower "
                   f"--optim.lr or a higher --optim.max_bad_steps: python train.py --resume {out} --optim.lr=...")
    state = checkpoint.load(out)
    assert state["step"] == 3 and state["bad_steps"] == 2


# ------------------------------------------------------------------------------------------------ GRPO rollouts
@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(ArithmeticTask(digits=2).corpus(100), vocab_size=300)


def rollout(monkeypatch, tok, completion: list[int], reward, **phase):
    """One rollout batch of 2 prompts × 2 completions, every completion `completion`; (loss, metrics)."""
    p = PhaseConfig(name="grpo", objective="grpo", batch_size=4, micro_batch_size=4,
                    options={"grpo": GRPOOptions(group_size=2, max_new_tokens=6, **phase)})
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=320, seq_len=64, n_layer=1, n_head=2, n_kv_head=1, n_embd=32))
    monkeypatch.setattr(train.rollout, "generate", lambda model, prompts, **kw: [list(completion) for _ in prompts])
    prompt = lambda i: ([{"role": "user", "content": f"What is {i}+1?"}], str(i + 1))  # noqa: E731
    source = RolloutSource(p, tok, prompt, reward)
    batches = source.next_step(4, 4, model)
    loss, metrics = GRPOObjective(p)(model, batches[0])
    loss.backward()
    assert all(torch.isfinite(q.grad).all() for q in model.parameters() if q.grad is not None)
    return float(loss.detach()), {k: float(v) for k, v in metrics.items()} | source.metrics()


@pytest.mark.parametrize("empty", [[], "end"], ids=["no-tokens", "only-the-stop-token"])
def test_a_batch_of_empty_completions_gives_loss_zero_not_nan(monkeypatch, tok, empty):
    loss, m = rollout(monkeypatch, tok, [tok.end] if empty == "end" else [], REWARDS["exact"], beta=0.1)
    assert loss == 0.0 and m["kl"] == 0.0
    assert (m["empty"], m["truncated"], m["zero_std"], m["reward"]) == (1.0, 0.0, 1.0, 0.0)


def test_completions_cut_at_max_new_tokens_are_counted(monkeypatch, tok):
    loss, m = rollout(monkeypatch, tok, tok.encode("123456"), REWARDS["arithmetic"])
    assert (m["truncated"], m["empty"], m["length"]) == (1.0, 0.0, 6.0)
    loss, m = rollout(monkeypatch, tok, tok.encode("12345") + [tok.end], REWARDS["arithmetic"])
    assert m["truncated"] == 0.0  # stopped on the last allowed token


@pytest.mark.parametrize("value,clamped", [(7.5, 1.0), (-3, 0.0)])
def test_rewards_outside_the_range_are_clamped_and_counted(monkeypatch, tok, value, clamped):
    _, m = rollout(monkeypatch, tok, [tok.end], lambda c, a: value)
    assert m["reward_out_of_range"] == 1.0 and m["reward"] == clamped
    _, m = rollout(monkeypatch, tok, [tok.end], lambda c, a: value, reward_min=-5.0, reward_max=10.0)
    assert m["reward_out_of_range"] == 0.0 and m["reward"] == value


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "1", None, [1.0]])
def test_a_reward_that_is_not_one_finite_number_is_a_one_line_error(monkeypatch, tok, value):
    def shaky(completion, answer):
        return value

    with pytest.raises(RewardError, match=r"reward function shaky returned .* for completion '12'; it must return "
                                          r"one finite number"):
        rollout(monkeypatch, tok, tok.encode("12") + [tok.end], shaky)


# ------------------------------------------------------------------------------------------------ bad input
def test_every_kind_of_config_field_is_checked():
    cases = {  # key: (bad value, the message)
        "seed": ("-1", "seed=-1 must be in [0, 2**32)"),
        "log_every": ("0", "log_every=0 must be > 0"),
        "keep_checkpoints": ("0", "keep_checkpoints=0 must be > 0"),
        "vocab_size": ("100", "vocab_size=100 must be >= 261 (256 bytes + 5 special tokens)"),
        "dtype": ("fp8", "--dtype='fp8': allowed values are auto, fp32, bf16"),
        "wandb": ("sometimes", "--wandb='sometimes': expected true/false"),
        "model.n_head": ("0", "model.n_head=0 must be > 0"),
        "model.n_embd": ("33", "model.n_embd=33 must be divisible by model.n_head=2"),
        "model.kernels": ("cuda", "model.kernels='cuda' is not one of"),
        "optim.lr": ("nan", "optim.lr=nan must be > 0"),
        "optim.beta2": ("1", "optim.beta2=1.0 must be in [0, 1)"),
        "optim.max_bad_steps": ("0", "optim.max_bad_steps=0 must be > 0"),
        "task.digits": ("13", "task.digits=13 must be between 1 and 12"),
        "task.ops": ("/", "task.ops='/' must be a non-empty subset of '+-*'"),
        "task.eval_problems": ("0", "task.eval_problems=0 must be > 0"),
        "task.direct": ("1.5", "task.direct=1.5 must be in [0, 1]"),
        "pretrain.steps": ("1.5", "--pretrain.steps='1.5': expected an integer"),
        "pretrain.min_lr_ratio": ("2", "pretrain.min_lr_ratio=2.0 must be in [0, 1]"),
        "pretrain.name": ("pre train", "phase name 'pre train' must be letters, digits, _ or -"),
        "sft.decay": ("step", "--sft.decay='step': allowed values are cosine, linear, constant"),
        "grpo.group_size": ("1", "grpo.group_size=1 must be >= 2 (advantages compare completions of a group)"),
        "grpo.temperature": ("0", "grpo.temperature=0.0 must be > 0"),
        "grpo.eps_low": ("1", "grpo.eps_low=1.0 must be in [0, 1)"),
        "grpo.reward": ("judge", "grpo.reward='judge' must be a registered reward: arithmetic, "),  # and others
        "grpo.reward_max": ("-1", "grpo.reward_max=-1.0 must be finite and > grpo.reward_min=0.0"),
        "grpo.top_k": ("-1", "grpo.top_k=-1 must be >= 0"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(ConfigError) as e:
            apply_overrides(load_preset("smoke"), {key: value})
        assert message in str(e.value), (key, str(e.value))


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, straight):
    """Every bad input of the table below, each a `python train.py` subprocess, run side by side."""
    d = tmp_path_factory.mktemp("bad")
    out = f"--out={d / 'out'}"  # + a digit: each process its own run folder (a folder has one owner)
    latin1 = d / "latin1.txt"
    latin1.write_bytes("plain first line\ncaf\u00e9 au lait\n".encode("latin-1"))
    broken = d / "broken.jsonl"
    broken.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n{"prompt": "e", \n')
    silent = d / "silent.jsonl"
    silent.write_text('{"prompt": "a", "response": "b"}\n{"messages": [{"role": "user", "content": "hi"}]}\n')
    long_prompts = d / "long.jsonl"
    long_prompts.write_text("".join(json.dumps({"prompt": "many words " * 80, "answer": i}) + "\n" for i in range(4)))
    garbage = d / "tokenizer.json"
    garbage.write_text("not json")
    other_model = d / "other-model"  # the straight run, with config.json saying the model is wider
    shutil.copytree(straight, other_model)
    cfg = json.loads((other_model / "config.json").read_text())
    cfg["config"]["model"]["n_embd"] = 64
    (other_model / "config.json").write_text(json.dumps(cfg))
    evil = d / "evil"
    evil.mkdir()
    torch.save({"step": 1, "x": Payload(d / "code-ran")}, evil / "ckpt-000001.pt")

    table = {
        "unknown key": (["--model.n_layers=2"], "unknown config key --model.n_layers; did you mean --model.n_layer?"),
        "not utf-8": (["--preset=smoke", out + '1', f"--pretrain.data={latin1}"],
                      f"{latin1}:2: not UTF-8 text (byte b'\\xe9' at offset 20); convert the file to UTF-8"),
        "malformed jsonl": (["--preset=smoke", out + '2', f"--sft.data={broken}"], f"{broken}:3: malformed JSON"),
        "no assistant turn": (["--preset=smoke", out + '3', f"--sft.data={silent}"],
                              f"{silent}:2: the conversation has no assistant turn to learn from"),
        "prompts too long": (["--preset=smoke", out + '4', f"--grpo.data={long_prompts}", "--grpo.reward=exact"],
                             f"{long_prompts}: every prompt is longer than the 112 tokens the context leaves"),
        "bad tokenizer": (["--preset=smoke", out + '5', f"--tokenizer={garbage}"],
                          f"{garbage}: not a tokenizer.json written by tritium"),
        "other model": (["--resume", str(other_model)], "is for a different model: n_embd is 32 in the checkpoint "
                                                        "but 64 here"),
        "pickled code": (["--resume", str(evil)], "holds pickled objects other than tensors and plain data"),
    }
    procs = {name: subprocess.Popen(cli(*argv), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True) for name, (argv, _) in table.items()}
    results = {name: (proc.communicate(timeout=300)[1], proc.returncode, table[name][1])
               for name, proc in procs.items()}
    assert not (d / "code-ran").exists()
    return results


@pytest.mark.parametrize("case", ["unknown key", "not utf-8", "malformed jsonl", "no assistant turn",
                                  "prompts too long", "bad tokenizer", "other model", "pickled code"])
def test_bad_input_is_one_error_line_and_a_nonzero_exit(bad_inputs, case):
    stderr, code, message = bad_inputs[case]
    assert code == 2 and "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], stderr


# the same through main() in this process: the cases that need no files (the subprocesses above cost ~2 s each)
@pytest.mark.parametrize("argv,message", [
    (["--preset=smoke", "--optim.lr=-1"], "optim.lr=-1.0 must be > 0"),
    (["--preset=smoke", "--grpo.loss_type=mean"], "--grpo.loss_type='mean': allowed values are grpo, bnpo, dapo, "
                                                   "dr_grpo"),
    (["--preset=smoke", "--sft.steps=many"], "--sft.steps='many': expected an integer"),
    (["--preset=smoke", "--grpo.reward=judge"], "grpo.reward='judge' must be a registered reward"),
    (["--preset=smoke", "--pretrain.data=/nonexistent/nope.txt"], "data file not found: /nonexistent/nope.txt"),
    (["--preset=smoke", "--tokenizer=/nonexistent/tokenizer.json"], "tokenizer file not found"),
])
def test_bad_options_are_one_error_line(tmp_path, capsys, argv, message):
    assert main([*argv, f"--out={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err


# ------------------------------------------------------------------------------------------------ data
def test_overlong_prompts_are_dropped_with_a_count(tmp_path, tok, capsys):
    rl = tmp_path / "rl.jsonl"
    rl.write_text("".join(json.dumps({"prompt": "word " * (60 if i % 4 == 0 else 3), "answer": i}) + "\n"
                          for i in range(40)))
    p = PhaseConfig(name="grpo", objective="grpo", data=str(rl), options={"grpo": GRPOOptions(max_new_tokens=16)})
    train_items, held = user_prompts(p, SimpleNamespace(tok=tok, seq_len=64))
    assert len(train_items) + len(held) == 30
    assert capsys.readouterr().out.strip() == (f"note: {rl}: dropped 10 of 40 examples whose prompt is longer than "
                                               f"the 48 tokens the context leaves for it")
    sft = tmp_path / "sft.jsonl"  # the prompt of a conversation is what precedes its first assistant turn
    sft.write_text(json.dumps({"prompt": "word " * 70, "response": "ok"}) + "\n" +
                   json.dumps({"messages": [{"role": "assistant", "content": "hi " * 70},
                                            {"role": "user", "content": "word " * 70}]}) + "\n" +
                   json.dumps({"prompt": "short", "response": "word " * 70}) + "\n")
    train_items, held = user_conversations(PhaseConfig(name="sft", objective="sft", data=str(sft)),
                                           SimpleNamespace(tok=tok, seq_len=64))
    assert len(train_items) + len(held) == 2 and "dropped 1 of 3" in capsys.readouterr().out
    with pytest.raises(DataError, match="every prompt is longer than the 4 tokens"):
        fit_context([[1] * 5], len, 4, "x.jsonl")


def test_text_is_read_as_utf8_with_positions_in_errors(tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"text": "caf\xc3\xa9"}\n')
    assert read_jsonl(str(bom), parse_text) == ["caf\u00e9"]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "a"}\n{"text": "b"}\n{"text": "\xff"}\n')
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}:3: not UTF-8 text \(byte b'\\xff' at offset 38\)"):
        read_jsonl(str(bad), parse_text)
    surrogate = tmp_path / "surrogate.jsonl"
    surrogate.write_text('{"text": "ok"}\n{"text": "half \\ud800 a pair"}\n')
    with pytest.raises(DataError, match=r"surrogate.jsonl:2: text holds an unpaired surrogate \(\\ud800\)"):
        read_jsonl(str(surrogate), parse_text)


def _random_str(rng: random.Random) -> str:
    return "".join(rng.choice(["a", " ", "é", "\u2028", "<|end|>", "\\", '"', "Answer: 7", "\ud800", "\x00", "\n"])
                   for _ in range(rng.randint(0, 6)))


def _random_json(rng: random.Random, depth: int = 0):
    """A random JSON value; at the top, half the time one shaped like a valid line with random parts."""
    kinds = ["str", "int", "float", "bool", "none", "list", "dict"] if depth < 3 else ["str", "int"]
    kind = "known" if depth == 0 and rng.random() < 0.5 else rng.choice(kinds)
    if kind == "str":
        return _random_str(rng)
    if kind == "int":
        return rng.choice([0, -1, 7, 10**30, -(10**300)])
    if kind == "float":
        return rng.choice([0.5, -1e308, float("inf"), float("nan")])
    if kind in ("bool", "none"):
        return rng.choice([True, False, None])
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "dict":
        keys = ["prompt", "response", "answer", "text", "messages", "role", "content", "x"]
        return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    value = lambda: _random_str(rng) if rng.random() < 0.8 else _random_json(rng, 3)  # noqa: E731
    role = lambda: rng.choice(["user", "assistant", "assistant", "system", 3])  # noqa: E731
    return rng.choice([{"messages": [{"role": role(), "content": value()} for _ in range(rng.randint(0, 3))]},
                       {"prompt": value(), "response": value()},
                       {"prompt": value(), "answer": value()},
                       {"text": value()}])


def test_fuzz_data_readers_raise_only_data_errors(tmp_path, tok):
    rng = random.Random(0)
    readers = [lambda p: read_jsonl(p, parse_conversation), lambda p: read_jsonl(p, parse_prompt), read_documents]
    outcomes = {"read": 0, "refused": 0}
    for case in range(300):
        path = tmp_path / f"case{case}.{'txt' if case % 5 == 0 else 'jsonl'}"
        if case % 3 == 0:  # raw bytes: mostly not UTF-8, sometimes JSON-ish
            raw = [rng.choice([rng.randrange(256), 10, 123, 125, 34]) for _ in range(rng.randint(0, 60))]
            path.write_bytes(bytes(raw))
        else:
            lines = [json.dumps(_random_json(rng), ensure_ascii=rng.random() < 0.5) if rng.random() < 0.9 else
                     rng.choice(["{", "[" * 5000, "1" * 5000, ""]) for _ in range(rng.randint(1, 3))]
            path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        for read in readers:
            try:
                items = read(str(path))
            except DataError as e:
                assert "\n" not in str(e)
                outcomes["refused"] += 1
                continue
            outcomes["read"] += 1
            for item in items:  # what was accepted renders, and user text never becomes a special token
                msgs = item if isinstance(item, list) else item[0] if isinstance(item, tuple) else None
                if msgs is not None:
                    ids = tok.render_chat(msgs).ids
                    assert sum(t >= len(tok.ranks) for t in ids) == 1 + 2 * len(msgs)
    assert outcomes["read"] > 30 and outcomes["refused"] > 300, outcomes  # both paths were exercised
    shard = tmp_path / "bytes.txt"
    shard.write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    with pytest.raises(DataError, match="not UTF-8 text"):
        TokenStream(str(shard), tok, 32, str(tmp_path / "cache"))
    shard.write_text("a few words")
    with pytest.raises(DataError, match="tokens is too few for seq_len=32"):
        TokenStream(str(shard), tok, 32, str(tmp_path / "cache"))


def test_fuzz_rewards_return_zero_or_one_and_never_raise():
    rng = random.Random(1)
    pieces = ["Answer:", "Answer: ", "-", "7", "623", "9" * 400, "1e999", ".", " ", "\n", "٣", "é", "\x00", "<|end|>",
              "__import__('os')", "Answer: 6" + "2" * 30, "nan", "inf", "(", "1/0"]
    for _ in range(400):
        completion = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        answer = rng.choice(["623", "-7", "0", "9" * 400, "3.5", "", "x"])
        for name, fn in REWARDS.items():
            r = fn(completion, answer)
            assert type(r) is float and r in (0.0, 1.0), (name, completion, answer, r)
    assert REWARDS["numeric"]("9" * 400, "9" * 400) == 1.0 and REWARDS["numeric"]("9" * 400, "8" * 400) == 0.0


def test_rewards_never_evaluate_text():
    with open(os.path.join(ROOT, "train", "tasks.py")) as f:
        calls = {n.func.id for n in ast.walk(ast.parse(f.read())) if isinstance(n, ast.Call) and
                 isinstance(n.func, ast.Name)}
    assert not calls & {"eval", "exec", "compile", "__import__"}


def test_special_token_strings_in_user_data_stay_text(tmp_path, tok):
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"prompt": "".join(SPECIAL_TOKENS), "response": "<|end|><|user|>"}) + "\n")
    (msgs,) = read_jsonl(str(sft), parse_conversation)
    r = tok.render_chat(msgs)
    assert [t for t in r.ids if t >= len(tok.ranks)] == [tok.bos, tok.user, tok.end, tok.assistant, tok.end]
