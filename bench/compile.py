"""Ahead-of-time compile check: every Triton launch the CUDA path makes, compiled for sm_90 and sm_80, no GPU.

    python -m bench.compile [--arch 90 80] [--jobs N] [--case TEXT] [--list] [--report bench/results/compile.md]

1. Capture (bench/compile_capture.py). The kernels are imported compiled (TRITON_INTERPRET=0) and driven
   through the public kernel functions at realistic GPU shapes and through the model's own train steps and
   sampler (bench/compile_cases.py). Each launch is recorded as Triton would compile it — signature,
   constexprs, specialisation attributes, num_warps, num_stages — and, for an autotuned kernel, once for
   every configuration the autotuner would try at that shape, since it may pick any of them.
2. Compile. Each distinct (kernel, signature, constexprs, attributes, warps, stages, arch) is compiled once
   with `triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`, the whole NVIDIA backend down
   to ptxas, in a process pool, with a fresh Triton cache that is deleted afterwards (nothing carries over
   between runs to hide a failure). ptxas's own report gives registers, spills and static shared memory;
   Triton's metadata gives the dynamic shared memory the launch requests.
3. Judge. A row fails on a compile error, on any spill (bytes stored to or loaded from local memory), on
   shared memory over the per-block limit (sm_90: 232448 B, sm_80: 166912 B, the opt-in maxima of H100 and
   A100), or on a grid beyond CUDA's limits. Every kernel that kernels/ launches must be reached by some
   case, so a new kernel cannot escape the check. The exit status is 0 when every row is clean, 1 otherwise,
   and 2 when the installed Triton lacks an internal this check drives (it then vouches for nothing).

The table lists one row per kernel, configuration, arch, warps and stages, with the worst figures over the
shapes that compile it: registers per thread, spill bytes (stores/loads), shared memory per block, and the
warps that can be resident on one SM (64 at most) given registers, shared memory and warps per block.

What this proves: every configuration a launcher can choose compiles for Hopper and Ampere, fits the
register file without spilling and fits in shared memory, at the shapes of the cases. What it cannot show:
speed, numerical correctness, or faults that happen only at run time (out-of-bounds addresses, races,
hangs); those need the GPU tests (`bash bench/gpu_acceptance.sh`). Shapes that no case covers may
specialise differently (for example an odd stride loses 16-byte alignment).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import math
import os
import re
import resource
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Per arch: opt-in shared memory per block and per SM, SMs of the reference part (H100 SXM, A100).
ARCH = {90: dict(name="sm_90", smem_block=232448, smem_sm=233472, sms=132),
        80: dict(name="sm_80", smem_block=166912, smem_sm=167936, sms=108)}
REGS_PER_SM, MAX_WARPS_PER_SM, MAX_BLOCKS_PER_SM, SMEM_RESERVED_PER_BLOCK = 65536, 64, 32, 1024


# ----------------------------------------------------------------------------------------------- compiling
def _jit_function(module: str, name: str):
    from triton.runtime.jit import JITFunction

    fn = getattr(importlib.import_module(module), name)
    while not isinstance(fn, JITFunction):  # an autotuner (or heuristics) wraps the JITFunction
        fn = fn.fn
    return fn


def _init_worker():
    os.environ["TRITON_INTERPRET"] = "0"
    warnings.filterwarnings("ignore")
    from triton import knobs

    knobs.nvidia.dump_ptxas_log = True  # ptxas's -v report is printed; compile_job reads it


def compile_job(job: tuple, arch: int) -> dict:
    """Compile one job for `arch` and return its static resources, or the error."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module, kernel, signature, constexprs, attrs, num_warps, num_stages = job
    start = time.perf_counter()
    log = io.StringIO()
    try:
        src = ASTSource(_jit_function(module, kernel), dict(signature), dict(constexprs),
                        {path: [list(a) for a in v] for path, v in attrs})
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                      options={"num_warps": num_warps, "num_stages": num_stages})
    except Exception as e:  # a compile error is a result: the row fails with its message
        return dict(error=_error_text(e), seconds=time.perf_counter() - start)
    report = log.getvalue()
    regs = re.search(r"Used (\d+) registers", report)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    if regs is None or spills is None:
        return dict(error="no ptxas report (registers/spills) in the compiler's output",
                    seconds=time.perf_counter() - start)
    static_smem = re.search(r"(\d+) bytes smem", report)
    return dict(regs=int(regs.group(1)), spill_st=int(spills.group(1)), spill_ld=int(spills.group(2)),
                shared=compiled.metadata.shared + (int(static_smem.group(1)) if static_smem else 0),
                seconds=time.perf_counter() - start)


def _error_text(e: BaseException) -> str:
    """The innermost cause of a compile error in one line (Triton wraps it once per nested @jit call)."""
    while (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {first}"[:160]


def resident_warps(regs: int, warps: int, shared: int, arch: int) -> tuple[int, str]:
    """Warps of this kernel that fit on one SM at once, and what limits them (regs, smem, warps, blocks).
    Registers are allocated per warp in units of 256."""
    per_warp = math.ceil(max(regs, 1) * 32 / 256) * 256
    limits = {"warps": MAX_WARPS_PER_SM // warps, "blocks": MAX_BLOCKS_PER_SM,  # first: named on a tie
              "regs": REGS_PER_SM // (per_warp * warps),
              "smem": ARCH[arch]["smem_sm"] // (shared + SMEM_RESERVED_PER_BLOCK) if shared else MAX_BLOCKS_PER_SM}
    limiter = min(limits, key=limits.get)
    return limits[limiter] * warps, limiter


# ----------------------------------------------------------------------------------------------- capturing
def capture_all(arch: int, selected) -> tuple[list, dict]:
    """Run every selected case under capture for `arch`; returns (launches, {case: error})."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from bench.compile_capture import capture, case

    errors = {}
    with capture(ARCH[arch]["sms"]) as launches:
        for c in selected:
            with case(c.name):
                try:
                    with FakeTensorMode() if c.fake else contextlib.nullcontext():
                        c.run()
                except Exception as e:  # a case that cannot run is a failure of the check, not a crash
                    errors[c.name] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    return launches, errors


def launched_kernels() -> set[str]:
    """Names of the kernels that kernels/ launches (`NAME[grid](...)`) or declares (`*_kernel`)."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    names = set()
    for path in sorted((REPO / "kernels").glob("*.py")):
        mod = importlib.import_module(f"kernels.{path.stem}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript) \
                    and isinstance(node.func.value, ast.Name):
                obj = getattr(mod, node.func.value.id, None)
                if isinstance(obj, (JITFunction, Autotuner)):
                    names.add(node.func.value.id)
        names |= {n for n, obj in vars(mod).items() if isinstance(obj, JITFunction) and n.endswith("_kernel")}
    return names


# ----------------------------------------------------------------------------------------------- judging
@dataclass
class Row:
    """One kernel configuration on one arch, worst case over the shapes (compile jobs) that reach it."""
    kernel: str
    config: str
    arch: int
    warps: int
    stages: int
    choice: str  # "autotune" (one of several the autotuner tries) or "fixed"
    regs: int = 0
    spill_st: int = 0
    spill_ld: int = 0
    shared: int = 0
    occupancy: tuple | None = None  # (resident warps per SM, the limiting resource), the lowest seen
    problems: list = field(default_factory=list)
    jobs: set = field(default_factory=set)
    cases: set = field(default_factory=set)

    @property
    def status(self) -> str:
        return "ok" if not self.problems else "FAIL: " + "; ".join(sorted(set(self.problems)))


def judge(launches_by_arch: dict, results: dict) -> list[Row]:
    rows: dict[tuple, Row] = {}
    from bench.compile_capture import GRID_LIMITS

    for arch, launches in launches_by_arch.items():
        for ln in launches:
            key = (ln.kernel, ln.config(), arch, ln.num_warps, ln.num_stages)
            row = rows.setdefault(key, Row(ln.kernel, ln.config(), arch, ln.num_warps, ln.num_stages,
                                           "autotune" if ln.autotune else "fixed"))
            row.cases.add(ln.case)
            row.jobs.add(ln.job())
            over = [f"{'xyz'[i]}={g} > {lim}" for i, (g, lim) in enumerate(zip(ln.grid, GRID_LIMITS)) if g > lim]
            if over:
                row.problems.append(f"grid {', '.join(over)} ({ln.case})")
            r = results[(ln.job(), arch)]
            if "error" in r:
                row.problems.append(r["error"])
                continue
            row.regs, row.shared = max(row.regs, r["regs"]), max(row.shared, r["shared"])
            row.spill_st, row.spill_ld = max(row.spill_st, r["spill_st"]), max(row.spill_ld, r["spill_ld"])
            if r["spill_st"] or r["spill_ld"]:
                row.problems.append("spills")
            if r["shared"] > ARCH[arch]["smem_block"]:
                row.problems.append(f"shared memory {r['shared']} B > {ARCH[arch]['smem_block']} B")
            occ = resident_warps(r["regs"], ln.num_warps, r["shared"], arch)
            if row.occupancy is None or occ[0] < row.occupancy[0]:
                row.occupancy = occ
    return sorted(rows.values(), key=lambda r: (r.kernel, -r.arch, r.config, r.warps, r.stages))


COLUMNS = ("kernel", "config", "arch", "warps", "stages", "choice", "regs", "spill B st/ld", "shared B",
           "warps/SM", "shapes", "status")


def row_cells(r: Row) -> tuple:
    if r.occupancy is None:  # nothing compiled
        figures = ("-", "-", "-", "-")
    else:
        figures = (r.regs, f"{r.spill_st}/{r.spill_ld}", r.shared, f"{r.occupancy[0]} ({r.occupancy[1]})")
    return (r.kernel, r.config, ARCH[r.arch]["name"], r.warps, r.stages, r.choice, *figures, len(r.jobs), r.status)


def text_table(rows: list[Row]) -> str:
    cells = [COLUMNS] + [tuple(str(c) for c in row_cells(r)) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(c) for c in row_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def summary(rows: list[Row], arches) -> list[str]:
    out = []
    for arch in arches:
        mine = [r for r in rows if r.arch == arch]
        kernels = {r.kernel for r in mine}
        bad_kernels = {r.kernel for r in mine if r.problems}
        out.append(f"{ARCH[arch]['name']}: {len(kernels)} kernels, {len(mine)} configurations, "
                   f"{sum(not r.problems for r in mine)} clean; kernels with a failing configuration: "
                   f"{', '.join(sorted(bad_kernels)) or 'none'}")
    return out


# ----------------------------------------------------------------------------------------------- main
def _report(path: Path, rows, lines, arches, n_jobs, seconds):
    from bench.common import provenance

    p = provenance()
    dirty = " (uncommitted changes)" if p["dirty"] else ""
    text = [
        "# Compile report: static resources of every Triton kernel configuration",
        "",
        f"Written by `python -m bench.compile --arch {' '.join(map(str, arches))} --report {path.as_posix()}` "
        f"(see its docstring for what this proves and what it cannot). Commit {p['commit']}{dirty}, "
        f"Triton {p['triton']}, torch {p['torch']}, {p['date']}; {n_jobs} compiles in {seconds:.0f} s.",
        "",
        "One row per kernel, configuration, arch, warps and stages; worst figures over the shapes in "
        "`bench/compile_cases.py` that compile it (`shapes`: how many distinct specialisations). "
        "`choice`: `autotune` rows are each one of the configurations the autotuner tries at those shapes, "
        "`fixed` rows the launcher's only choice. `warps/SM`: resident warps per SM (of 64) and the resource "
        "that limits them. Shared memory is per block: dynamic (Triton) plus static (ptxas).",
        "",
        *[f"- {line}" for line in lines],
        "",
        markdown_table(rows),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, nargs="+", default=[90, 80], choices=sorted(ARCH))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes (default: CPUs)")
    ap.add_argument("--case", default="", help="only the cases whose name contains this (skips the coverage check)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--report", type=Path, help="also write the table as markdown here")
    args = ap.parse_args(argv)
    if "kernels" in sys.modules and os.environ.get("TRITON_INTERPRET") == "1":
        print("error: kernels was imported under the interpreter before bench.compile", file=sys.stderr)
        return 2
    os.environ["TRITON_INTERPRET"] = "0"  # before `kernels` is imported: compiled kernels, not the interpreter
    os.chdir(REPO)
    sys.path.insert(0, str(REPO))
    warnings.filterwarnings("ignore")
    from bench.compile_capture import UnsupportedTriton
    from bench.compile_cases import cases

    selected = [c for c in cases() if args.case in c.name]
    if args.list or not selected:
        print("\n".join(c.name for c in selected) or f"error: no case matches {args.case!r}")
        return 0 if selected else 2
    start = time.perf_counter()
    launches, case_errors = {}, {}
    try:
        for arch in args.arch:
            launches[arch], errs = capture_all(arch, selected)
            case_errors.update(errs)
    except UnsupportedTriton as e:
        print(f"error: cannot drive this Triton's internals, so nothing is checked: {e}", file=sys.stderr)
        return 2
    if not any(launches.values()):
        print("error: no launch was captured; "
              + ("; ".join(f"case {k!r} failed: {v}" for k, v in case_errors.items())
                 or "this Triton's launch path is not the one bench.compile drives"), file=sys.stderr)
        return 2
    first = {(ln.job(), arch): ln for arch, lns in launches.items() for ln in reversed(lns)}
    jobs = sorted(first, key=lambda j: _cost(first[j]), reverse=True)
    print(f"bench.compile: {sum(map(len, launches.values()))} launches from {len(selected)} cases captured in "
          f"{time.perf_counter() - start:.0f} s; {len(jobs)} distinct compiles on {args.jobs} processes ...", flush=True)
    cache = tempfile.mkdtemp(prefix="tritium-compile-")
    os.environ["TRITON_CACHE_DIR"] = cache  # fresh for this run; the pool inherits it
    try:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
            results = dict(zip(jobs, pool.map(compile_job, *zip(*jobs))))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    seconds = time.perf_counter() - start
    rows = judge(launches, results)
    print(text_table(rows))
    lines = summary(rows, args.arch)
    reached = {ln.kernel for lns in launches.values() for ln in lns}
    unreached = sorted(launched_kernels() - reached) if not args.case else []
    lines += [f"case failed to run: {name}: {err}" for name, err in case_errors.items()]
    lines += [f"kernel launched in kernels/ but reached by no case: {name}" for name in unreached]
    cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    lines.append(f"{len(jobs)} compiles in {seconds:.0f} s wall, {cpu:.0f} s of CPU time; Triton "
                 f"{sys.modules['triton'].__version__}")
    print("\n" + "\n".join(lines))
    if args.report:
        _report(args.report, rows, lines, args.arch, len(jobs), seconds)
    failed = any(r.problems for r in rows) or case_errors or unreached
    print("FAIL" if failed else "OK: every configuration compiles, spill-free, within shared memory")
    return 1 if failed else 0


def _cost(launch) -> tuple:
    """Longest compiles first (attention at large head dims), so the pool ends together."""
    meta = dict(launch.meta)
    return ("BLOCK_N" in meta, meta.get("HEAD_DIM", 0), meta.get("BLOCK_M", 0), launch.num_warps)


if __name__ == "__main__":
    sys.exit(main())
