"""Peak FLOP/s of the device a run or a benchmark measures on: the denominator of MFU.

Known GPUs use their datasheet dense bf16 tensor-core peak (no sparsity). Anything else (a CPU, an unknown
GPU) gets the measured throughput of a 1024² fp32 matmul, best of six: the machine's capability, not its
momentary load. Runs record the value and where it came from in config.json; benchmarks in their provenance.
"""
from __future__ import annotations

import time

import torch

# Dense bf16 tensor-core peak per GPU, matched against the device name in order, so the more specific names
# come first.
PEAK_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}


def gpu_peak_flops(device_name: str) -> float | None:
    """Datasheet bf16 peak FLOP/s for a GPU name such as "NVIDIA H100 80GB HBM3"; None when unknown."""
    return next((f for key, f in PEAK_FLOPS.items() if key.lower() in device_name.lower()), None)


def peak_flops(device: torch.device) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from) for MFU on `device`: the datasheet figure, else a measured matmul."""
    if device.type == "cuda" and (flops := gpu_peak_flops(torch.cuda.get_device_name(device))):
        return flops, "datasheet bf16"
    a = torch.randn(1024, 1024, device=device)
    best = float("inf")
    for _ in range(6):  # best of several: the machine's capability, not its momentary load
        t0 = time.perf_counter()
        a @ a
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * 1024**3 / best, "measured 1024² fp32 matmul, best of 6"
