"""Compare finished runs side by side: every held-out metric after each phase.

    python -m train.compare RUN_DIR [RUN_DIR ...] [--out DIR]

Reads each run folder's config.json and summary.json. Runs whose configs are equal except for `seed` and
`out` are one group, shown as mean ± std (sample std, n runs; a group of one shows its value). Prints one
table per phase (metrics down, groups across) and writes it to DIR/compare.md with DIR/compare.png (one
panel per metric, a line per group over the phases, std as error bars). A missing folder, or a run that has
not finished (no summary.json), is a one-line error and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

IGNORED = ("seed", "out")  # runs whose configs differ only here are repeats of one experiment


def read_run(folder: str) -> tuple[dict, dict]:
    """(config, summary) of a finished run; ValueError in one line otherwise."""
    if not os.path.isdir(folder):
        raise ValueError(f"{folder}: no such run folder")
    out = []
    for name, hint in (("config.json", "not a run folder"), ("summary.json", "the run has not finished")):
        path = os.path.join(folder, name)
        try:
            with open(path) as f:
                out.append(json.load(f))
        except FileNotFoundError:
            raise ValueError(f"{folder}: no {name} ({hint})") from None
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} cannot be read ({e})") from None
    saved, summary = out
    if not isinstance(saved.get("config"), dict) or not isinstance(summary.get("phases"), list):
        raise ValueError(f"{folder}: config.json or summary.json is not a run's")
    return saved["config"], summary


def group(runs: list[str]) -> dict[str, list[tuple[str, dict]]]:
    """{label: [(folder, summary), ...]}: runs with equal configs but for seed and out, in the order given."""
    groups: dict[str, list] = {}
    labels: dict[str, str] = {}
    for folder in runs:
        config, summary = read_run(folder)
        key = json.dumps({k: v for k, v in config.items() if k not in IGNORED}, sort_keys=True)
        labels.setdefault(key, os.path.basename(os.path.normpath(folder)))
        groups.setdefault(labels[key], []).append((folder, summary))
    return groups


def table(groups: dict[str, list]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{phase: {metric: {group: [value of each run]}}}, phases and metrics in the order first seen."""
    out: dict[str, dict] = {}
    for label, members in groups.items():
        for _, summary in members:
            for phase in summary["phases"]:
                for metric, value in phase.get("eval", {}).items():
                    out.setdefault(phase["name"], {}).setdefault(metric, {}).setdefault(label, []).append(value)
    return out


def cell(values: list[float] | None) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} (n={len(values)})"


def markdown(groups: dict[str, list], rows: dict) -> str:
    lines = ["# held-out metrics after each phase", ""]
    for label, members in groups.items():
        lines.append(f"- **{label}**: {', '.join(folder for folder, _ in members)}")
    for phase, metrics in rows.items():
        lines += ["", f"## after {phase}", "", "| metric | " + " | ".join(groups) + " |",
                  "|---|" + "---|" * len(groups)]
        for metric in sorted(metrics):
            lines.append(f"| {metric} | " + " | ".join(cell(metrics[metric].get(g)) for g in groups) + " |")
    return "\n".join(lines) + "\n"


def figure(groups: dict[str, list], rows: dict):
    """One panel per metric: a line per group over the phases, with its std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({m for per_phase in rows.values() for m in per_phase})
    cols = min(4, max(1, len(metrics)))
    fig, axes = plt.subplots(-(-len(metrics) // cols) or 1, cols, figsize=(3.6 * cols, 3.0 * -(-len(metrics) // cols)),
                             squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, m in zip(axes.flat, metrics):
        for g in groups:
            pts = [(p, rows[p][m][g]) for p in rows if g in rows[p].get(m, {})]
            if pts:
                ys = [statistics.mean(v) for _, v in pts]
                err = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in pts]
                ax.errorbar([p for p, _ in pts], ys, yerr=err, marker="o", capsize=3, label=g)
        ax.set_title(m, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig, plt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders (finished runs)")
    ap.add_argument("--out", default="compare", help="folder for compare.md and compare.png (default: compare)")
    args = ap.parse_args(argv)
    try:
        groups = group(args.runs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = table(groups)
    text = markdown(groups, rows)
    print(text, end="")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write(text)
    if rows:
        fig, plt = figure(groups, rows)
        fig.savefig(os.path.join(args.out, "compare.png"), dpi=100)
        plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
