"""Benchmark report: markdown tables and PNG plots from one results JSON.

    python -m bench.report bench/results/h100-80gb-hbm3.json --out bench/results/h100-80gb-hbm3

writes into --out:
    report.md        provenance, then per suite a table: shape, impl, time, rate (TFLOP/s, GB/s or tokens/s),
                     MFU, peak memory (beyond the inputs where recorded), ratio to each baseline of the suite
                     (baseline time / our time in the same group, as bench/check.py takes it: > 1 means
                     faster than the baseline)
    attention.png    TFLOP/s against sequence length, one panel per mode, one line per impl / causal / head dim
    memory.png       peak memory against tokens for the loss suites, one line per impl and vocabulary
    train_step.png   tokens/s of every train-step phase, one bar per impl

A run whose timings are not meaningful (CPU, kernels under the interpreter) gets the tables with times shown
only as a smoke record, no rates or ratios, and no plots.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.check import IMPL_PARAMS, Row, load_results, ratio

SUITES = ["train_step", "cpu_step", "attention", "linear_cross_entropy", "cross_entropy", "grpo_loss", "logprobs",
          "device_copy"]  # report order; any other suite follows
BASELINES = {  # the impls every row of a suite is compared with (ratio = their time / ours)
    "train_step": ["reference", "sdpa"],
    "cpu_step": ["plain_torch"],
    "attention": ["sdpa", "reference"],
    "linear_cross_entropy": ["torch_eager", "matmul_floor"],
    "cross_entropy": ["torch_eager", "torch_compile"],
    "grpo_loss": ["unfused", "head_matmul"],
    "logprobs": ["log_softmax_gather"],
}
RATES = ["TFLOP/s", "GB/s", "tokens/s"]
MEMORY_SUITES = ["linear_cross_entropy", "cross_entropy", "grpo_loss", "logprobs"]


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"
    return str(x)


def _rate(row: Row) -> str:
    shown = [f"{_fmt(row.info[k])} {k}" for k in RATES if row.info.get(k) is not None]
    return ", ".join(shown) or "—"


def _peak(row: Row) -> str:
    total, extra = row.info.get("peak_GiB"), row.info.get("peak_extra_GiB")
    if total is None:
        return "—"
    return f"{total:.3g}" + (f" ({extra:.3g})" if extra is not None else "")


def _label(row: Row) -> str:
    """The shape, plus any parameter of the group it does not already say (e.g. causal, mode)."""
    words = set(row.shape.replace(",", " ").split())
    extra = [f"{k}={v}" for k, v in row.params.items()
             if k not in IMPL_PARAMS and f"{k}={v}" not in words and str(v) not in words]
    return " ".join([row.shape, *extra]).strip()


def _by_suite(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.suite, []).append(r)
    order = SUITES + sorted(set(out) - set(SUITES))
    return {s: out[s] for s in order if s in out}


def suite_table(suite: str, rows: list[Row]) -> list[str]:
    baselines = [b for b in BASELINES.get(suite, []) if any(r.impl == b for r in rows)]
    groups: dict[str, dict[str, Row]] = {}
    for r in rows:
        groups.setdefault(r.group, {})[r.impl] = r
    head = ["shape", "impl", "time (ms)", "rate", "MFU", "peak GiB (beyond inputs)"]
    head += [f"× vs {b}" for b in baselines]
    lines = [f"## {suite}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for impls in groups.values():
        for r in impls.values():
            ms = None if r.time_s is None else r.time_s * 1e3
            cells = [_label(r), r.impl, _fmt(ms) + ("" if r.meaningful else " (smoke)"),
                     _rate(r) if r.meaningful else "—",
                     _fmt(r.info.get("MFU")) if r.meaningful else "—", _peak(r)]
            for b in baselines:
                base = impls.get(b)
                ok = r.meaningful and base is not None and base.meaningful and r.time_s and base.time_s
                cells.append(f"{ratio(r, base, 'time'):.2f}" if ok else "—")
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return lines + [""]


def markdown(prov: dict, rows: list[Row], plots: list[str]) -> str:
    lines = ["# tritium benchmarks", "", "| provenance | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in prov.items()]
    lines.append("")
    if not any(r.meaningful for r in rows):
        lines += ["**Timings are not meaningful in this run** (no CUDA: kernels ran under Triton's interpreter at "
                  "tiny sizes). Times are shown as a smoke record only; no rates, ratios or plots.", ""]
    for suite, srows in _by_suite(rows).items():
        lines += suite_table(suite, srows)
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------------
def _num(row: Row, key: str):
    v = row.get(key)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _lines(ax, rows: list[Row], x: str, y, series) -> bool:
    """One line per series label, points sorted by x; y(row) -> value or None. False when nothing drawn."""
    data: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        xv, yv = _num(r, x), y(r)
        if xv is not None and yv is not None:
            data.setdefault(series(r), []).append((xv, yv))
    for label, pts in sorted(data.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    if data:
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return bool(data)


def _attention_series(r: Row) -> str:
    parts = [r.impl] + ([f"D={r.get('D')}"] if r.get("D") is not None else [])
    if r.get("causal") is not None:
        parts.append("causal" if str(r.get("causal")) == "True" else "non-causal")
    return " ".join(parts)


def plot_attention(rows: list[Row], path: Path, title: str) -> bool:
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.suite == "attention" and r.meaningful]
    seen = {str(r.get("mode")) for r in rows}
    modes = [m for m in ("fwd", "bwd", "fwd+bwd") if m in seen] + sorted(seen - {"fwd", "bwd", "fwd+bwd"})
    if not modes:
        return False
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.5), squeeze=False)
    drawn = False
    for ax, mode in zip(axes[0], modes):
        drawn |= _lines(ax, [r for r in rows if str(r.get("mode")) == mode], "T",
                        lambda r: r.info.get("TFLOP/s", r.info.get("tflops")),
                        _attention_series)
        ax.set(title=f"attention {mode}", xlabel="sequence length T", ylabel="TFLOP/s")
    return _save(fig, path, title) if drawn else _discard(fig)


def plot_memory(rows: list[Row], path: Path, title: str) -> bool:
    import matplotlib.pyplot as plt

    suites = [s for s in MEMORY_SUITES if any(r.suite == s and r.info.get("peak_GiB") is not None for r in rows)]
    if not suites:
        return False
    fig, axes = plt.subplots(1, len(suites), figsize=(5.5 * len(suites), 4.5), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        srows = [r for r in rows if r.suite == suite]
        _lines(ax, srows, "N", lambda r: r.info.get("peak_extra_GiB", r.info.get("peak_GiB")),
               lambda r: f"{r.impl} V={r.get('V')}" + (f" d={r.get('d')}" if r.get("d") is not None else ""))
        ax.set(title=f"{suite}: peak memory", xlabel="tokens N", ylabel="GiB beyond the inputs")
    return _save(fig, path, title)


def plot_train_steps(rows: list[Row], path: Path, title: str) -> bool:
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.suite == "train_step" and r.meaningful and r.info.get("tokens/s") is not None]
    if not rows:
        return False
    phases = list(dict.fromkeys(str(r.get("phase")) for r in rows))
    impls = list(dict.fromkeys(r.impl for r in rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(phases) * len(impls) / 2), 4.5))
    width = 0.8 / len(impls)
    for i, impl in enumerate(impls):
        values = {str(r.get("phase")): r.info["tokens/s"] for r in rows if r.impl == impl}
        xs = [p + (i - (len(impls) - 1) / 2) * width for p in range(len(phases))]
        bars = ax.bar(xs, [values.get(ph, 0.0) for ph in phases], width, label=impl)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks(range(len(phases)), phases)
    ax.set(ylabel="tokens/s", title="train steps")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, title)


def _save(fig, path: Path, title: str) -> bool:
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _discard(fig) -> bool:
    import matplotlib.pyplot as plt

    plt.close(fig)
    return False


def write_report(results: str | Path, out: str | Path) -> list[Path]:
    """Write report.md and whichever plots have data into `out`; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    prov, rows = load_results(results)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{prov.get('device', '?')} | commit {prov.get('commit', '?')} | {prov.get('date', '')}"
    plots = []
    if any(r.meaningful for r in rows):
        for name, fn in (("attention.png", plot_attention), ("memory.png", plot_memory),
                         ("train_step.png", plot_train_steps)):
            if fn(rows, out / name, title):
                plots.append(out / name)
    md = out / "report.md"
    md.write_text(markdown(prov, rows, [str(p) for p in plots]))
    return [md, *plots]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="a JSON written by pytest bench/ --benchmark-json=...")
    ap.add_argument("--out", required=True, help="folder for report.md and the PNG plots")
    args = ap.parse_args(argv)
    try:
        written = write_report(args.results, args.out)
    except (OSError, ValueError, KeyError) as e:
        print(f"bench.report: cannot read {args.results}: {e}", file=sys.stderr)
        return 2
    for p in written:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
