"""The benchmark harness shared by every suite in bench/: provenance, peak FLOPs, timing, peak memory, rows.

Every benchmark goes through `measure()`, which
    1. on CUDA, runs the step twice outside the timing: the first compiles and autotunes Triton kernels, the
       second records peak memory (`max_memory_allocated` after `reset_peak_memory_stats`), in total and
       beyond what was already allocated (the inputs), so a loss's own footprint is visible;
    2. times it with pytest-benchmark's `pedantic` (warm-up rounds excluded); the step synchronises CUDA
       itself, so each round is the time until the GPU is done, not the time to queue the kernels;
    3. records one row in `benchmark.extra_info` with fixed keys that bench/report.py and bench/check.py read:

        suite     which family of benchmarks ("attention", "linear_cross_entropy", "train_step", ...)
        group     rows that are the same problem solved by different implementations (the test's parameters
                  minus the implementation's); ratios are taken inside a group, from one run
        impl      the implementation ("triton", "torch_eager", "sdpa", "reference", ...)
        shape     the problem in words, dtype included
        time_s    median seconds per step (None when timing is not meaningful)
        flops, bytes, tokens, flops_per_token   what one step does (the suite's formulas)
        TFLOP/s, GB/s, tokens/s, MFU            the hardware rate(s) the suite reports (CUDA only)
        peak_GiB, peak_extra_GiB                peak memory in total and beyond the inputs (CUDA only)
        timing_meaningful                       False on CPU: kernels run in Triton's interpreter, the times
                                                only show that the suites still run; no report or floor uses them

Provenance (device, commit, torch and Triton versions, date, peak FLOPs) is gathered once per session by
bench/conftest.py, printed as the header of the run and stored in the benchmark JSON under "tritium".
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import platform
import re
import subprocess
from pathlib import Path

import pytest
import torch
import triton

from bench.check import IMPL_PARAMS
from train.hardware import gpu_peak_flops

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
TIMING_MEANINGFUL = CUDA
ROUNDS, WARMUP = (10, 3) if CUDA else (1, 0)  # timed rounds and untimed warm-up rounds per benchmark
REPO = Path(__file__).resolve().parent.parent


def device_name() -> str:
    return torch.cuda.get_device_name(0) if CUDA else "cpu (Triton interpreter)"


def gpu_slug(name: str | None = None) -> str:
    """A folder name for the device: "NVIDIA H100 80GB HBM3" -> "h100-80gb-hbm3"; "cpu" without CUDA."""
    name = name if name is not None else (torch.cuda.get_device_name(0) if CUDA else "cpu")
    name = re.sub(r"^nvidia\s+", "", name.strip(), flags=re.I)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """Where and on what the numbers were taken; the same dict heads the printout, the JSON and the report."""
    name = device_name()
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "device": name,
        "gpu": gpu_slug(),
        "peak_flops": gpu_peak_flops(name) if CUDA else None,
        "commit": _git("rev-parse", "--short=12", "HEAD") or "unknown",
        "dirty": bool(dirty) if dirty is not None else None,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "timing_meaningful": TIMING_MEANINGFUL,
    }


def provenance_line(prov: dict) -> str:
    keys = ("device", "commit", "dirty", "torch", "triton", "cuda", "peak_flops", "date")
    line = " | ".join(f"{k} {prov.get(k)}" for k in keys)
    if not prov.get("timing_meaningful"):
        line += " | timings NOT meaningful (no CUDA: kernels under Triton's interpreter)"
    return line


# ----------------------------------------------------------------------------------------------------------
# Running, skipping, memory
# ----------------------------------------------------------------------------------------------------------
def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def fits(nbytes: float, fraction: float = 0.85) -> bool:
    """Whether `nbytes` fits in `fraction` of the GPU's memory (always True without CUDA: tiny shapes there)."""
    return not CUDA or nbytes < fraction * torch.cuda.get_device_properties(0).total_memory


def skip_compile_on_cpu(impl: str) -> None:
    if impl == "torch_compile" and not CUDA:
        pytest.skip("torch.compile on CPU takes tens of seconds to build a baseline that is only timed on CUDA")


@contextlib.contextmanager
def skip_on_oom(what: str):
    """Turn a CUDA out-of-memory error into a skip that names the case (the memory is given back first)."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        pytest.skip(f"{what}: out of GPU memory")


def peak_memory(step, setup=None) -> tuple[float | None, float | None]:
    """(peak GiB, peak GiB beyond what was allocated before `step` ran) of a call after a first one that
    compiles and autotunes (whose scratch memory is not the step's); (None, None) on CPU, where nothing is
    run (under the interpreter it would only add to the suite's time)."""
    if not CUDA:
        return None, None
    for _ in range(2):
        args, kwargs = (setup() if setup else None) or ((), {})  # a setup may prepare state and return nothing
        sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(*args, **kwargs)
        sync()
    peak = torch.cuda.max_memory_allocated()
    return peak / 2**30, (peak - before) / 2**30


def _group(benchmark, suite: str) -> str:
    """The test's parameters minus the implementation's: rows of one group solve the same problem."""
    params = getattr(benchmark, "params", None) or {}
    rest = [f"{k}={v}" for k, v in params.items() if k not in IMPL_PARAMS]
    return f"{suite}[{','.join(rest)}]"


def measure(benchmark, step, *, suite: str, impl: str, shape: str, setup=None, rounds: int | None = None,
            warmup: int | None = None, flops: float | None = None, nbytes: float | None = None,
            tokens: float | None = None, flops_per_token: float | None = None, group: str | None = None,
            **info) -> float | None:
    """Time `step` (which synchronises CUDA itself) and record one row; returns median seconds on CUDA, else None.

    setup() -> (args, kwargs) prepares fresh inputs before every round, outside the timing. Rates are derived
    from the median: flops -> TFLOP/s, nbytes -> GB/s, tokens -> tokens/s, and with flops_per_token and a
    known peak also MFU. Extra keyword arguments go into extra_info as they are.
    """
    rounds, warmup = rounds or ROUNDS, WARMUP if warmup is None else warmup
    benchmark.group = suite  # pytest-benchmark prints one table per suite
    row = benchmark.extra_info
    row.update(suite=suite, group=group or _group(benchmark, suite), impl=impl, shape=shape,
               timing_meaningful=TIMING_MEANINGFUL, **info)
    row.update({k: v for k, v in (("flops", flops), ("bytes", nbytes), ("tokens", tokens),
                                  ("flops_per_token", flops_per_token)) if v is not None})
    with skip_on_oom(f"{suite} {impl} {shape}"):
        row["peak_GiB"], row["peak_extra_GiB"] = _rounded(peak_memory(step, setup))
        benchmark.pedantic(step, setup=setup, rounds=rounds if CUDA else 1, warmup_rounds=warmup if CUDA else 0,
                           iterations=1)
    stats = getattr(benchmark, "stats", None)
    if not TIMING_MEANINGFUL or stats is None:
        row["time_s"] = None
        return None
    seconds = stats.stats.median
    row["time_s"] = seconds
    if flops is not None:
        row["TFLOP/s"] = round(flops / seconds / 1e12, 2)
    if nbytes is not None:
        row["GB/s"] = round(nbytes / seconds / 1e9, 1)
    if tokens is not None:
        row["tokens/s"] = round(tokens / seconds, 1)
        peak = gpu_peak_flops(device_name())
        if flops_per_token is not None and peak:
            row["MFU"] = round(flops_per_token * tokens / seconds / peak, 4)
    return seconds


def _rounded(pair):
    return tuple(None if x is None else round(x, 4) for x in pair)
