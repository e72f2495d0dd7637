"""Failures that used to arrive late or as tracebacks: each is one `error:` line and exit code 2, raised
before any training where it can be known then; a failure after the work is done is a warning."""
import os
import subprocess
import sys

import torch

import train.loop
import train.report
from model.gpt import GPT
from train import startup
from train.cli import main
from train.config import apply_overrides, load_preset
from train.tasks import REWARDS

from tests import helpers
from tests.helpers import ROOT, options

QUICK = options(helpers.QUICK)


def error_of(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def stop_at_first_step(monkeypatch) -> None:
    """Training never starts: start-up is what these tests look at."""
    def train_step(self, phase):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.loop.Trainer, "train_step", train_step)


def test_gpt2_tokenizer_without_network_is_one_error_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env |= {"TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache"), "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9"}  # a closed port: every download fails at once
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--preset=smoke", "--tokenizer=gpt2",
                           f"--out={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --tokenizer=gpt2 needs GPT-2's ranks, which tiktoken "
                                                   "downloads on first use and could not (")
    assert lines[0].endswith("or use --tokenizer=bpe")


def test_a_reward_function_that_raises_names_itself_and_the_completion(tmp_path, capsys, monkeypatch):
    def explodes(completion, answer):
        raise KeyError("score")

    monkeypatch.setitem(REWARDS, "explodes", explodes)
    err = error_of(capsys, ["--preset=smoke", f"--out={tmp_path / 'run'}", "--grpo.reward=explodes", *QUICK,
                            "--pretrain.steps=1", "--sft.steps=1"])
    assert err.startswith("error: reward function explodes raised KeyError: 'score' for completion '"), err
    assert "(answer '" in err


def test_a_model_too_large_for_memory_is_refused_at_start_up(tmp_path, capsys):
    err = error_of(capsys, ["--preset=smoke", f"--out={tmp_path / 'run'}", "--model.n_embd=16384",
                            "--model.n_layer=64", "--model.n_head=128", "--model.n_kv_head=128"])
    assert err.startswith("error: the run needs about "), err
    assert "M parameters; GiB: weights, gradients and AdamW state " in err and "of RAM is available" in err
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")


def test_the_memory_estimate_counts_the_models_parameters():
    cfg = apply_overrides(load_preset("smoke"), {})
    need = startup.memory_estimate(cfg, torch.device("cpu"))
    assert need["params"] == GPT(cfg.model).num_params()
    assert need["weights, gradients and AdamW state"] == 16 * need["params"]
    assert need["total"] < startup.available_memory(torch.device("cpu"))  # the tests' own runs fit


def test_grpo_max_new_tokens_beyond_the_context_fails_before_pretraining(tmp_path, capsys):
    err = error_of(capsys, ["--preset=smoke", f"--out={tmp_path / 'run'}", "--grpo.max_new_tokens=120", *QUICK])
    assert err.startswith("error: grpo.max_new_tokens=120 does not fit: the task's prompts take up to "), err
    assert err.endswith("tokens of model.seq_len=128; lower it or raise model.seq_len")
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")  # no phase ran


def test_a_plot_that_cannot_be_written_is_a_warning_after_the_work_is_done(tmp_path, capsys, monkeypatch):
    def broken(records):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train.report, "loss_figure", broken)
    out = tmp_path / "run"
    assert main(["--preset=base-smoke", f"--out={out}", *QUICK]) == 0
    err = capsys.readouterr().err.strip()
    assert err == (f"warning: could not write the plots in {out} (OSError: [Errno 28] No space left on device); "
                   f"the results are in summary.json and metrics.jsonl")
    assert (out / "summary.json").exists()


def test_triton_kernels_on_a_cpu_are_warned_about_once(tmp_path, capsys, monkeypatch):
    stop_at_first_step(monkeypatch)
    assert main(["--preset=base-smoke", f"--out={tmp_path / 'run'}", "--model.kernels=triton", *QUICK]) == 130
    err = capsys.readouterr().err
    assert err.count("warning: --model.kernels=triton on a CPU runs every Triton kernel in Triton's "
                     "interpreter") == (not torch.cuda.is_available())


def test_a_vocab_size_the_corpus_cannot_fill_is_said_in_the_header(tmp_path, capsys, monkeypatch):
    stop_at_first_step(monkeypatch)
    assert main(["--preset=base-smoke", f"--out={tmp_path / 'run'}", "--vocab_size=4096", *QUICK]) == 130
    out = capsys.readouterr().out
    assert "note: the tokenizer has " in out and "fewer than --vocab_size=4096" in out

