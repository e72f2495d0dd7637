"""What a run tells people: a line per logged step, a progress bar, metrics.jsonl, the summary and plots.

Files in the run folder:
    metrics.jsonl   one JSON object per logged step ({"kind": "train"}) and per evaluation ({"kind": "eval"})
    summary.json    per phase: steps, tokens, wall time, tokens/s, final train loss, and the evaluation after
                    the phase of every held-out set (the phase × metric table)
    loss.png        training loss per step and phase (RL phases: their mean reward); eval.png: every held-out
                    metric after each phase

The phase × held-out table (printed at the end, and eval.png) is grouped by held-out set: its metrics are
named `<set>/<metric>` (the phases' own sets, `task`, and the named sets of --eval.sets, e.g. `long/pass@4`),
and each set is a group of rows (of panels in eval.png), in the order the sets are evaluated.
"""
from __future__ import annotations

import json
import os
import sys
import time

from train.rundir import write_atomic

STANDARD = {"kind", "phase", "step", "lr", "ms", "tokens", "tok_s", "mfu", "loss"}  # fields every line has
QUIET = {"rollout_s", "rollout_tok_s"}  # in metrics.jsonl, not on the console


def fmt_time(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def fmt_num(x: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"


class RunLog:
    """Everything a run reports. Under torchrun only rank 0's log is `main`; the others' are silent (no
    console, no files, no wandb), so the loop reports unconditionally."""

    def __init__(self, out_dir: str, total_steps: int, config: dict, use_wandb: bool, resume_step: int = 0,
                 main: bool = True):
        self.out_dir, self.total, self.main = out_dir, total_steps, main
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self.records: list[dict] = []
        if main and resume_step and os.path.exists(self.path):
            self.records = _keep_until(self.path, resume_step)
        self.start, self.start_step = time.time(), resume_step
        self.tty = sys.stdout.isatty()
        self.wandb = _wandb(config, out_dir) if use_wandb and main else None

    def write(self, record: dict) -> None:
        if not self.main:
            return
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record["step"])

    def eta(self, step: int) -> str:
        done = step - self.start_step
        if done <= 0:
            return "?"
        return fmt_time((time.time() - self.start) / done * (self.total - step))

    def train_line(self, r: dict) -> None:
        extra = "".join(f" | {k} {v:.3f}" for k, v in r.items() if k not in STANDARD | QUIET and isinstance(v, float))
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        line = (
            f"{r['phase']:<10} step {r['step']:>5}/{self.total} | loss {r['loss']:.4f} | lr {r['lr']:.2e} | "
            f"{r['ms']:7.1f} ms | {fmt_num(r['tok_s'])} tok/s | MFU {mfu}{extra} | eta {self.eta(r['step'])}"
        )
        self._print(line)

    def eval_line(self, step: int, phase: str, metrics: dict) -> None:
        body = " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        self._print(f"{'eval':<10} step {step:>5}/{self.total} | after {phase} | {body}")

    def progress(self, step: int, phase: str) -> None:
        if not self.tty or not self.main:
            return
        n = 30
        filled = int(n * step / max(self.total, 1))
        sys.stdout.write(f"\r[{'#' * filled}{'.' * (n - filled)}] {step}/{self.total} {phase} eta {self.eta(step)}")
        sys.stdout.flush()

    def _print(self, line: str) -> None:
        if not self.main:
            return
        if self.tty:
            sys.stdout.write("\r\033[K")
        print(line, flush=True)

    def finish(self, summary: dict) -> None:
        if not self.main:
            return
        write_atomic(os.path.join(self.out_dir, "summary.json"), json.dumps(summary, indent=2))
        print_summary(summary)
        try:
            plot(self.records, summary, self.out_dir)
        except Exception as e:  # noqa: BLE001  (the run's work is done and saved; a plot is not worth failing it)
            print(f"warning: could not write the plots in {self.out_dir} ({type(e).__name__}: {e}); the results "
                  f"are in summary.json and metrics.jsonl", file=sys.stderr)
        if self.wandb is not None:
            self.wandb.finish()


def _keep_until(path: str, step: int) -> list[dict]:
    """The records of metrics.jsonl up to `step` (the checkpoint a run resumes from). The lines after them
    (logged after that checkpoint, and a line cut short by a crash or a full disk) are cut off in place, which
    frees space instead of needing it, and only if there are any."""
    kept, size = [], 0
    with open(path, "rb") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not (isinstance(record, dict) and line.endswith(b"\n") and record.get("step", step + 1) <= step):
                break
            kept.append(record)
            size += len(line)
    if size < os.path.getsize(path):
        os.truncate(path, size)
    return kept


def _wandb(config: dict, out_dir: str):
    """A wandb run, or None with a warning: logging must never stop training (offline machines included)."""
    try:
        import wandb

        return wandb.init(project="tritium", config=config, dir=out_dir, name=os.path.basename(out_dir))
    except Exception as e:  # noqa: BLE001  (any failure to reach or start wandb only disables it)
        print(f"warning: wandb disabled ({type(e).__name__}: {e}); set WANDB_MODE=offline to log locally")
        return None


def print_summary(summary: dict) -> None:
    rows = summary["phases"]
    print("\nphase      steps  tokens   time    tok/s   train loss")
    for r in rows:
        print(f"{r['name']:<10} {r['steps']:>5} {fmt_num(r['tokens']):>7} {fmt_time(r['seconds']):>7} "
              f"{fmt_num(r['tok_s']):>7}   {r['final_loss']:.4f}")
    metrics = [m for _, group in eval_groups(rows) for m in group]
    if metrics:
        width = max(len(m) for m in metrics) + 2
        print("\nevaluation after each phase")
        print(" " * width + "".join(f"{r['name']:>12}" for r in rows))
        for m in metrics:
            cells = "".join(f"{r['eval'][m]:>12.4f}" if m in r["eval"] else f"{'-':>12}" for r in rows)
            print(f"{m:<{width}}{cells}")
    print(f"\ntotal {fmt_time(summary['seconds'])}; run folder {summary['out']}")


def eval_groups(rows: list[dict]) -> list[tuple[str, list[str]]]:
    """[(held-out set, its metric names sorted)] over the phases' results, the sets in the order first seen
    (the order they are evaluated in)."""
    groups: dict[str, set[str]] = {}
    for r in rows:
        for k in r["eval"]:
            groups.setdefault(k.partition("/")[0], set()).add(k)
    return [(name, sorted(ms)) for name, ms in groups.items()]


def plot(records: list[dict], summary: dict, out_dir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, fig in (("loss.png", loss_figure(records)), ("eval.png", eval_figure(summary))):
        if fig is not None:
            try:
                fig.savefig(os.path.join(out_dir, name), dpi=100)
            finally:
                plt.close(fig)


def loss_figure(records: list[dict]):
    """Training loss per step and phase on a log axis (tick labels as plain numbers), and the mean reward of
    RL phases; whole steps on the x axes; a phase with a single logged step shows as a dot."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    train = [r for r in records if r["kind"] == "train"]
    phases = list(dict.fromkeys(r["phase"] for r in train))
    rl = [p for p in phases if any("reward" in r for r in train if r["phase"] == p)]  # plotted by reward
    panels = [kind for kind, some in (("loss", len(rl) < len(phases)), ("reward", rl)) if some] or ["loss"]
    fig, axes = plt.subplots(1, len(panels), figsize=(8 + 5 * (len(panels) - 1), 4.5), squeeze=False)
    ax_of = {kind: axes[0, i] for i, kind in enumerate(panels)}
    for name in phases:
        key = "reward" if name in rl else "loss"
        pts = [(r["step"], r[key]) for r in train if r["phase"] == name]
        ax_of[key].plot(*zip(*pts), label=name, marker="o" if len(pts) == 1 else None)
    if "loss" in ax_of:
        ax = ax_of["loss"]
        ax.set(xlabel="step", ylabel="train loss", title="training loss", yscale="log")
        plain = FuncFormatter(lambda v, _: f"{v:.3g}")  # 5.7, not 5.7×10⁰
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    if "reward" in ax_of:
        ax_of["reward"].set(xlabel="step", ylabel="mean reward of the rollouts", title="RL reward")
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def eval_figure(summary: dict):
    """Every held-out metric after each phase: a row of panels per held-out set, one panel per metric; None
    when there is none."""
    import matplotlib.pyplot as plt

    rows = summary["phases"]
    groups = eval_groups(rows)
    if not groups:
        return None
    cols = max(len(ms) for _, ms in groups)
    fig, axes = plt.subplots(len(groups), cols, figsize=(3.4 * cols, 3.0 * len(groups)), squeeze=False)
    for g, (_, metrics) in enumerate(groups):
        for ax in axes[g, len(metrics):]:
            ax.set_visible(False)
        for ax, m in zip(axes[g], metrics):
            pts = [(r["name"], r["eval"][m]) for r in rows if m in r["eval"]]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
            ax.set_title(m, fontsize=9)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle("held-out metrics after each phase (a row per held-out set)")
    fig.tight_layout()
    return fig
