"""What the loop keeps per phase: running totals of its steps, and the row summary.json gets when it ends.

The totals live in the trainer's `stats` (phase name -> totals) and travel in every checkpoint, so a resumed
run continues them; `phase_result` turns a finished phase's totals and held-out metrics into its summary row.
"""
from train.phases import Phase


def count_step(stats: dict[str, dict], phase: str, record: dict) -> dict:
    """Add one step's record (Trainer.train_step's) to the totals of `phase`; returns those totals."""
    s = stats.setdefault(phase, {"steps": 0, "tokens": 0, "seconds": 0.0, "skipped": 0})
    s["steps"] += 1
    s["tokens"] += record["tokens"]
    s["seconds"] += record["ms"] / 1000
    s["final_loss"] = record["loss"]
    s["skipped"] += record["skipped"]
    return s


def phase_result(phase: Phase, s: dict, evals: dict) -> dict:
    """The summary.json row of a finished phase: its totals, throughput, last loss and held-out metrics."""
    return {
        "name": phase.cfg.name, "objective": phase.cfg.objective, "steps": phase.cfg.steps,
        "tokens": s["tokens"], "seconds": s["seconds"], "tok_s": s["tokens"] / max(s["seconds"], 1e-9),
        "final_loss": s["final_loss"], "skipped": s.get("skipped", 0), "eval": evals,
    }
