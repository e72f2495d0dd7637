"""Compare finished runs side by side: every held-out metric after each phase.

    python -m train.compare RUN_DIR [RUN_DIR ...] [--out DIR] [--metrics=GLOB,...]

Reads each run folder's config.json and summary.json. Runs whose configs are equal except for `seed` and
`out` are one group, shown as mean ± std (sample std, n runs; a group of one shows its value). A branched
run (`--init_from`) is compared through its parent: two branches are repeats when their parents' configs,
read from the parents' folders, are repeats of each other, so `--init_from=runs/A-s0` at seed 0 and
`--init_from=runs/A-s1` at seed 1 are one group. A group is labelled by its first folder's name without a
trailing seed (`-s0`). `--metrics=GLOB,...` keeps only the metrics matching one of the patterns. Prints one
table per phase (metrics down, groups across) and writes it to DIR/compare.md with DIR/compare.png (one
panel per metric, a line per group over the phases, std as error bars). `--curves=GLOB,...` adds training
curves from each run's metrics.jsonl, named PHASE/KEY (e.g. `grpo/reward`) over the step within the phase:
averaged over a group's runs, a table of the first and last logged value and the phase mean, and
DIR/curves.png. A missing folder, or a run that has
not finished (no summary.json), is a one-line error and exit status 2.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
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
    return saved["config"], summary  # a branch's init_from is the absolute checkpoint path (train/run.py)


def experiment(config: dict, depth: int = 0) -> dict:
    """The config without what seed repeats may differ in; `init_from` replaced by what it points at: the
    parent run's own experiment when its config.json is beside the checkpoint (or in the folder), else the path."""
    out = {k: v for k, v in config.items() if k not in IGNORED + ("init_from",)}
    if config.get("init_from"):
        path = config["init_from"]
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        parent = None
        if depth < 16:  # a chain of branches, never a cycle in practice; the bound keeps a bad folder finite
            try:
                with open(os.path.join(folder, "config.json")) as f:
                    parent = experiment(json.load(f)["config"], depth + 1)
            except (OSError, ValueError, KeyError, TypeError):
                parent = None
        out["init_from"] = parent if parent is not None else path
        if parent is not None and not os.path.isdir(path):
            out["init_checkpoint"] = os.path.basename(path)  # which of the parent's checkpoints
    return out


def group(runs: list[str]) -> dict[str, list[tuple[str, dict]]]:
    """{label: [(folder, summary), ...]}: runs of one experiment but for their seeds, in the order given."""
    groups: dict[str, list] = {}
    labels: dict[str, str] = {}
    for folder in runs:
        config, summary = read_run(folder)
        key = json.dumps(experiment(config), sort_keys=True)
        label = re.sub(r"-s\d+$", "", os.path.basename(os.path.normpath(folder)))
        while label in groups and key not in labels:  # two experiments with the same folder stem
            label += "'"
        labels.setdefault(key, label)
        groups.setdefault(labels[key], []).append((folder, summary))
    return groups


def table(groups: dict[str, list], patterns: list[str] | None = None) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{phase: {metric: {group: [value of each run]}}}, phases and metrics in the order first seen; only the
    metrics matching one of `patterns` (fnmatch globs) when given."""
    out: dict[str, dict] = {}
    for label, members in groups.items():
        for _, summary in members:
            for phase in summary["phases"]:
                for metric, value in phase.get("eval", {}).items():
                    if patterns and not any(fnmatch.fnmatchcase(metric, p) for p in patterns):
                        continue
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


def curves(groups: dict[str, list], patterns: list[str]) -> dict[str, dict[str, dict[int, list[float]]]]:
    """{PHASE/KEY: {group: {step within the phase: [value of each run]}}} of the logged training records whose
    PHASE/KEY matches one of `patterns`."""
    out: dict[str, dict] = {}
    for label, members in groups.items():
        for folder, summary in members:
            start, starts = 0, {}
            for phase in summary["phases"]:
                starts[phase["name"]], start = start, start + phase["steps"]
            try:
                with open(os.path.join(folder, "metrics.jsonl")) as f:
                    records = [json.loads(line) for line in f if line.strip()]
            except (OSError, ValueError) as e:
                raise ValueError(f"{folder}: metrics.jsonl unreadable ({e})") from None
            for r in records:
                if r.get("kind") != "train" or r.get("phase") not in starts:
                    continue
                for k, v in r.items():
                    name = f"{r['phase']}/{k}"
                    if isinstance(v, (int, float)) and any(fnmatch.fnmatchcase(name, p) for p in patterns):
                        step = r["step"] - starts[r["phase"]]
                        out.setdefault(name, {}).setdefault(label, {}).setdefault(step, []).append(float(v))
    return out


def curve_markdown(lines_: dict) -> str:
    lines = ["", "## training curves (mean over a group's runs: first logged step → last, and the mean over the phase)",
             "", "| curve | group | first | last | phase mean |", "|---|---|---|---|---|"]
    for name, per_group in lines_.items():
        for g, points in per_group.items():
            ys = [statistics.mean(points[x]) for x in sorted(points)]
            lines.append(f"| {name} | {g} | {ys[0]:.4f} | {ys[-1]:.4f} | {statistics.mean(ys):.4f} |")
    return "\n".join(lines) + "\n"


def curve_figure(lines_: dict):
    """One panel per curve: a line per group (one colour per group in every panel), the mean over its runs
    at each logged step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(g for per_group in lines_.values() for g in per_group))
    colour = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    cols = min(3, len(lines_))
    rows = -(-len(lines_) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(lines_):]:
        ax.set_visible(False)
    for ax, (name, per_group) in zip(axes.flat, lines_.items()):
        for g, points in per_group.items():
            xs = sorted(points)
            ax.plot(xs, [statistics.mean(points[x]) for x in xs], marker=".", color=colour[g], label=g)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step within the phase", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, plt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders (finished runs)")
    ap.add_argument("--out", default="compare", help="folder for compare.md and compare.png (default: compare)")
    ap.add_argument("--metrics", default="", help="comma-separated globs of the metrics to show, e.g. 'task/*,drift/kl_*'")
    ap.add_argument("--curves", default="", help="comma-separated globs of training curves, PHASE/KEY, e.g. 'grpo/reward'")
    args = ap.parse_args(argv)
    try:
        groups = group(args.runs)
        lines = curves(groups, [p for p in args.curves.split(",") if p]) if args.curves else {}
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = table(groups, [p for p in args.metrics.split(",") if p])
    text = markdown(groups, rows) + (curve_markdown(lines) if lines else "")
    print(text, end="")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write(text)
    if rows:
        fig, plt = figure(groups, rows)
        fig.savefig(os.path.join(args.out, "compare.png"), dpi=100)
        plt.close(fig)
    if lines:
        fig, plt = curve_figure(lines)
        fig.savefig(os.path.join(args.out, "curves.png"), dpi=100)
        plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
