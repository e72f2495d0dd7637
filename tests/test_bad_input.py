"""Bad input is refused in one line: every kind of config field is checked, and each bad option or file is
one `error: ...` line, exit code 2 and no traceback (in subprocesses, as a user runs `python train.py`)."""
import json
import shutil
import subprocess

import pytest
import torch

from tests.helpers import ROOT, Payload, cli
from train.cli import main
from train.config import ConfigError, apply_overrides, load_preset


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
