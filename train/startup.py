"""Checks and notes at start-up, so that a run that cannot work stops before it trains, not after hours.

Memory: a run needs about

    16·N bytes                 fp32 weights (4), gradients (4) and AdamW's two moments (8), N parameters
  + 4·N bytes                  a frozen reference model, when a GRPO phase has beta > 0
  + a · L · rows·T · 16·C      activations kept for the backward of one micro-batch: about 16 numbers per
                               token and layer of width C (the attention and MLP inputs and outputs), a bytes
                               each (2 under bf16 autocast, else 4)
  + 4 · L · rows·T · 2·H·T     attention scores and probabilities, where attention materialises them
                               (model.kernels=reference): 2 fp32 numbers per head and key
  + 4 · rows·T·T               the additive document mask of the SDPA path (model.kernels=sdpa, or auto
                               off CUDA), one per forward, shared by its layers
  + 4 · rows·T · 2·V           fp32 logits and their gradient, where the loss head materialises them (CPU)

with rows the largest micro_batch_size of any phase. The estimate leaves out allocator slack and temporary
buffers, so it is a floor: a run over it cannot fit, and one under it can still run short. It is compared
with the memory available on the device (free GPU memory, or the machine's available RAM shared by the
processes on it) and a run that does not fit is refused with both numbers.
"""
from __future__ import annotations

import os

import torch

from kernels._dispatch import attention_path
from model.gpt import GPT
from train import objectives
from train.config import ConfigError, RunConfig

GIB = 2**30


def memory_estimate(cfg: RunConfig, device: torch.device) -> dict[str, float]:
    """Bytes by kind (see the module docstring) for `cfg` on `device`; "total" is their sum."""
    m = cfg.model
    with torch.device("meta"):  # counts parameters without allocating them
        n = GPT(m).num_params()
    rows = max(p.micro_batch_size for p in cfg.phases)
    tokens = rows * m.seq_len
    bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and device.type == "cuda")
    path = attention_path(m.kernels, torch.empty(0, device=device))
    out = {
        "weights, gradients and AdamW state": 16.0 * n,
        "reference model": 4.0 * n * max(k.frozen_copies(p) for p in cfg.phases for k in objectives.kinds(p)),
        "activations": (2 if bf16 else 4) * m.n_layer * tokens * 16 * m.n_embd
        + 4.0 * m.n_layer * tokens * 2 * m.n_head * m.seq_len * (path == "reference")
        + 4.0 * tokens * m.seq_len * (path == "sdpa")
        + 4.0 * tokens * 2 * m.vocab_size * (device.type == "cpu"),
    }
    return out | {"total": sum(out.values()), "params": n, "rows": rows}


def available_memory(device: torch.device) -> float | None:
    """Bytes this process can use on `device`, or None when unknown."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        ram = float(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            ram = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return ram / int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # processes of this machine share its RAM


def check_memory(cfg: RunConfig, device: torch.device) -> None:
    """ConfigError, with the estimate and what is available, for a run that cannot fit on `device`."""
    need, have = memory_estimate(cfg, device), available_memory(device)
    if have is None or need["total"] <= have:
        return
    parts = "; ".join(f"{k} {v / GIB:.1f}" for k, v in need.items() if k not in ("total", "params", "rows") and v)
    where = f"{device.type} memory" if device.type == "cuda" else "RAM"
    raise ConfigError(f"the run needs about {need['total'] / GIB:.1f} GiB ({need['params'] / 1e6:.0f}M parameters; "
                      f"GiB: {parts}, for micro-batches of {need['rows']}×{cfg.model.seq_len} tokens) but "
                      f"{have / GIB:.1f} GiB of {where} is available; use a smaller model (model.n_layer, "
                      f"model.n_embd, model.seq_len) or a smaller micro_batch_size")


def check_dtype(cfg: RunConfig, device: torch.device) -> None:
    """ConfigError for a dtype the chosen kernels cannot compute on `device`: every other pairing of
    --dtype, --device and --model.kernels trains."""
    if cfg.dtype == "bf16" and cfg.model.kernels == "triton" and device.type == "cpu":
        raise ConfigError("--dtype=bf16 with --model.kernels=triton on a CPU: Triton's interpreter computes bf16 "
                          "matmuls wrongly (its attention is off by orders of magnitude); use --dtype=fp32 with "
                          "the Triton kernels, or bf16 with --model.kernels=auto")


def warnings(cfg: RunConfig, device: torch.device) -> list[str]:
    """Settings that work but are rarely what a user wants, said once at start-up."""
    out = []
    if cfg.model.kernels == "triton" and device.type == "cpu":
        out.append("warning: --model.kernels=triton on a CPU runs every Triton kernel in Triton's interpreter, "
                   "orders of magnitude slower than the PyTorch path (--model.kernels=auto); use it to test the "
                   "kernels, not to train")
    return out


def vocab_note(cfg: RunConfig, n_vocab: int) -> str | None:
    """A header line when the BPE stopped short of --vocab_size (its corpus had no more pairs to merge)."""
    if cfg.tokenizer == "bpe" and n_vocab < cfg.vocab_size:
        return (f"note: the tokenizer has {n_vocab} ids, fewer than --vocab_size={cfg.vocab_size}: its training "
                f"text has no more pairs worth merging")
    return None
