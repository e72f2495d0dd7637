"""Every `--dtype` works on every device it is offered for.

The sampler's KV cache must hold keys and values in the dtype the projections produce: under bf16 autocast
that is bf16 on any device (CPU autocast included), so the prefill's q, k and v agree. The CUDA path follows
the same rule, so a CPU run under bf16 autocast exercises it.
"""
import json
import os

import pytest
import torch

from model.gpt import GPT, GPTConfig
from model.sampler import KVCache, generate
from train.cli import main
from train.config import apply_overrides, load_preset
from train.run import run

from tests import helpers

QUICK = helpers.QUICK | {"task.pass_k": "1"}


def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, seq_len=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, kernels="reference"))


def test_the_cache_takes_the_dtype_of_the_keys_under_autocast():
    model = tiny()
    cache = KVCache(model, batch=2, capacity=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randint(0, 64, (2, 3)), cache=cache)
    assert cache.k.dtype == cache.v.dtype == torch.bfloat16


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generate_under_bf16_autocast(temperature):
    model = tiny()
    prompts = [[1, 2, 3], [4, 5]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = generate(model, prompts, max_new_tokens=6, temperature=temperature, seeds=None,
                       generator=torch.Generator().manual_seed(0))
    assert [len(o) for o in out] == [6, 6]
    assert all(0 <= t < 64 for o in out for t in o)


@pytest.mark.parametrize("dtype", ["bf16"])  # fp32, the CPU's `auto`, is what every other run test trains in
def test_smoke_run_in_each_dtype_on_cpu(tmp_path, dtype):
    """Pretraining, SFT and GRPO, each followed by its evaluation (the KV-cache prefill included)."""
    out = str(tmp_path / "run")
    cfg = apply_overrides(load_preset("smoke"), QUICK | {"out": out, "dtype": dtype, "device": "cpu"})
    summary = run(cfg)
    assert [p["name"] for p in summary["phases"]] == ["pretrain", "sft", "grpo"]
    for p in summary["phases"]:
        assert "task/accuracy" in p["eval"]
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["config"]["dtype"] == dtype


def test_bf16_with_the_triton_interpreter_is_refused_at_start_up(tmp_path, capsys):
    """Triton's interpreter (the Triton kernels on a CPU) computes bf16 matmuls wrongly: that pairing is
    refused before anything runs, while bf16 with the default kernels trains (above)."""
    assert main(["--preset=smoke", f"--out={tmp_path / 'run'}", "--dtype=bf16", "--model.kernels=triton",
                 "--device=cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --dtype=bf16 with --model.kernels=triton on a CPU: Triton's interpreter computes "
                          "bf16 matmuls wrongly") and "\n" not in err
    assert not (tmp_path / "run" / "tokenizer.json").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_smoke_run_in_each_dtype_on_cuda(tmp_path, dtype):
    out = str(tmp_path / "run")
    summary = run(apply_overrides(load_preset("smoke"), QUICK | {"out": out, "dtype": dtype, "device": "cuda"}))
    assert len(summary["phases"]) == 3
