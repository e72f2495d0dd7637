"""bench.compile, the ahead-of-time compile check: its verdicts on synthetic compile results, and one real
capture-and-compile of a small case for sm_90 (in a subprocess: the kernels must be imported compiled, while
this test session imports them under the interpreter)."""
import subprocess
import sys
from pathlib import Path

import pytest

from bench.compile import ARCH, judge, resident_warps
from bench.compile_capture import Launch, UnsupportedTriton, _internals

REPO = Path(__file__).resolve().parent.parent


def launch(grid=(4, 2, 1), autotune=None, warps=4, case="a case"):
    return Launch(module="kernels.m", kernel="_k", signature=(("x_ptr", "*bf16"), ("n", "i32")),
                  constexprs=(((2,), 64),), meta=(("BLOCK", 64),), attrs=(), num_warps=warps, num_stages=3,
                  case=case, site="kernels/m.py:1", autotune=autotune, grid=grid)


def verdict(result, **kw):
    ln = launch(**kw)
    (row,) = judge({90: [ln]}, {(ln.job(), 90): result})
    return row


def test_a_clean_compile_is_ok():
    row = verdict(dict(regs=96, spill_st=0, spill_ld=0, shared=49152, seconds=1.0))
    assert row.status == "ok" and row.config == "bf16 BLOCK=64"
    assert row.occupancy == resident_warps(96, 4, 49152, 90)


@pytest.mark.parametrize("result,why", [
    (dict(regs=255, spill_st=8, spill_ld=0, shared=0), "spills"),
    (dict(regs=255, spill_st=0, spill_ld=4, shared=0), "spills"),
    (dict(regs=128, spill_st=0, spill_ld=0, shared=ARCH[90]["smem_block"] + 1), "shared memory"),
    (dict(error="NameError: Cannot access global variable LOG2E"), "NameError"),
])
def test_spills_shared_memory_and_compile_errors_fail(result, why):
    row = verdict(dict(result, seconds=1.0))
    assert row.status.startswith("FAIL") and why in row.status, row.status


def test_a_grid_beyond_cuda_limits_fails():
    row = verdict(dict(regs=32, spill_st=0, spill_ld=0, shared=0, seconds=1.0), grid=(8, 70000, 1))
    assert "grid y=70000 > 65535" in row.status


def test_shared_memory_limits_are_the_opt_in_maxima():
    assert ARCH[90]["smem_block"] == 232448 and ARCH[80]["smem_block"] == 166912


@pytest.mark.parametrize("regs,warps,shared,arch,want", [
    (255, 8, 0, 90, (8, "regs")),  # 256 registers a thread: 64K registers hold 8 warps
    (64, 4, 0, 90, (32, "regs")),  # 2048 registers a warp: 32 warps
    (24, 1, 0, 80, (32, "blocks")),  # one-warp blocks: at most 32 blocks an SM
    (32, 4, 100_000, 80, (4, "smem")),  # 101 KB a block: one block in 164 KB
    (32, 16, 0, 90, (64, "warps")),  # 16-warp blocks: 4 fill an SM (registers would allow 4 too)
])
def test_resident_warps(regs, warps, shared, arch, want):
    assert resident_warps(regs, warps, shared, arch) == want


def test_a_triton_without_the_driven_internals_is_refused(monkeypatch):
    monkeypatch.delattr("triton.runtime.jit.create_function_from_signature")
    with pytest.raises(UnsupportedTriton, match="create_function_from_signature"):
        _internals()
    monkeypatch.undo()
    monkeypatch.delattr("triton.runtime.autotuner.Autotuner.prune_configs")
    with pytest.raises(UnsupportedTriton, match="prune_configs"):
        _internals()


def test_cross_entropy_compiles_for_sm90():
    """The real thing for one small case: capture its launches, compile them with the NVIDIA backend, read
    ptxas's report. The cross-entropy kernels read LOG2E from kernels/_lse.py, which must be a tl.constexpr
    for the compiler (an annotated float passes the interpreter but not this)."""
    out = subprocess.run([sys.executable, "-m", "bench.compile", "--arch", "90", "--jobs", "1", "--case",
                          "ce V50304 bf16 mean"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "_cross_entropy_fwd_kernel" in out.stdout and "sm_90" in out.stdout
    assert "OK: every configuration compiles" in out.stdout
