"""Compare two training runs step by step: the same schedule on the Triton kernels and on the references.

    python -m bench.compare_runs RUN_A RUN_B [--rtol 0.05] [--phases pretrain,sft]

Reads each run folder's metrics.jsonl (train.py's log), pairs the training steps by (phase, step), prints one
line per phase (steps, first and last loss of each run, the largest relative difference) and exits 1 when
the runs logged different steps, a loss is not finite, or, in the compared phases (all by default), some
step's losses differ by more than `rtol` relative to the first run's. Phases left out of `--phases` are only
checked for the same steps and finite losses: on a GPU the two paths round differently (bf16 kernels against
fp32 references), so sampled GRPO completions, and with them its losses, part ways after the first token
that differs. Exit status 2: a run folder cannot be read.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def train_losses(run: Path) -> dict[tuple[str, int], float]:
    """{(phase, step): loss} of every training step a run logged."""
    out = {}
    with open(run / "metrics.jsonl") as f:
        for line in f:
            r = json.loads(line)
            if r.get("kind") == "train":
                out[(r["phase"], int(r["step"]))] = float(r["loss"])
    if not out:
        raise ValueError(f"{run}/metrics.jsonl has no training steps")
    return out


def compare(a: dict, b: dict, rtol: float, phases: set[str] | None) -> tuple[list[str], list[str]]:
    """(one line per phase, problems)."""
    problems = []
    if a.keys() != b.keys():
        problems.append(f"the runs logged different steps: {sorted(a.keys() ^ b.keys())[:6]}")
    bad = [k for k in a.keys() | b.keys() if not math.isfinite(a.get(k, 0.0)) or not math.isfinite(b.get(k, 0.0))]
    if bad:
        problems.append(f"non-finite loss at {sorted(bad)[:6]}")
    lines = []
    for phase in dict.fromkeys(p for p, _ in sorted(a, key=lambda k: k[1])):
        steps = sorted(s for p, s in a if p == phase and (p, s) in b)
        if not steps:
            continue
        rel = [abs(b[phase, s] - a[phase, s]) / max(abs(a[phase, s]), 1e-12) for s in steps]
        worst = max(range(len(steps)), key=rel.__getitem__)
        judged = phases is None or phase in phases
        lines.append(f"{phase:10} {len(steps):4} steps  A {a[phase, steps[0]]:.4f} -> {a[phase, steps[-1]]:.4f}  "
                     f"B {b[phase, steps[0]]:.4f} -> {b[phase, steps[-1]]:.4f}  max rel diff {rel[worst]:.2e} "
                     f"(step {steps[worst]}){'' if judged else '  (not compared)'}")
        if judged and rel[worst] > rtol:
            problems.append(f"{phase} step {steps[worst]}: loss {a[phase, steps[worst]]:.6g} vs "
                            f"{b[phase, steps[worst]]:.6g}, relative difference {rel[worst]:.3g} > rtol {rtol}")
    return lines, problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compare_runs", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--rtol", type=float, default=0.05, help="largest relative loss difference per step")
    ap.add_argument("--phases", default="", help="comma-separated phases whose losses are compared (default: all)")
    args = ap.parse_args(argv)
    try:
        a, b = train_losses(args.run_a), train_losses(args.run_b)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    phases = {p for p in args.phases.split(",") if p} or None
    lines, problems = compare(a, b, args.rtol, phases)
    print(f"A = {args.run_a}\nB = {args.run_b}\n" + "\n".join(lines))
    for p in problems:
        print(f"FAIL: {p}")
    if not problems:
        print(f"ok: same steps, finite losses, compared losses within rtol {args.rtol}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
