"""Ratio floors: fail when an implementation falls too far behind its baseline measured in the same run.

    python -m bench.check bench/results/h100-80gb-hbm3.json [--floors bench/floors.json]

A ratio compares two rows of one group (the same problem, two implementations, one run, one GPU), so it does
not drift with the machine the way absolute times do:

    metric "time"    ratio = baseline median time / our median time        (> 1: we are faster); rows timed
                     in interleaved rounds (both carry `round_s`, see bench/cpu_step.py): the median over
                     rounds of baseline time / our time, so load that slows both steps of a round drops out
    metric "memory"  ratio = baseline peak memory / our peak memory         (> 1: we use less; the peak beyond
                     the inputs when both rows have it, else the total peak)

Each rule of bench/floors.json names a suite, our impl, the baseline impl, a floor, and optionally `where`,
conditions on the test's parameters or extra_info: an exact value (`"causal": true`), a list of allowed
values (`"mode": ["bwd", "fwd+bwd"]`) or a comparison (`"T": ">=2048"`). Every pair a rule matches must have
ratio >= floor. Rows whose timings are not meaningful (CPU runs, kernels under the interpreter) are never
judged; a row says so itself (`timing_meaningful` in extra_info),
so the CPU step benchmark's ratios are judged on a CPU. A rule that matches no pair although its suite
has meaningful rows is a failure too, so a renamed implementation cannot silently switch a floor off.

Exit status: 0 when every floor holds (or nothing could be judged), 1 listing every violation, 2 when the
results or floors cannot be read. This module also holds the reader that bench/report.py uses.
"""
from __future__ import annotations

import argparse
import json
import operator
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

FLOORS = Path(__file__).resolve().parent / "floors.json"
IMPL_PARAMS = ("impl", "provider", "backend")  # parameter names that pick the implementation (as in common.py)
METRICS = ("time", "memory")


@dataclass
class Row:
    """One benchmark of a results JSON, with the harness's fields (see bench/common.py)."""

    name: str
    suite: str
    group: str
    impl: str
    shape: str
    time_s: float | None  # median seconds: of the interleaved rounds (`round_s`) if any, else pytest-benchmark's
    meaningful: bool  # whether time_s and the rates may be compared or reported as measurements
    params: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def get(self, key: str):
        """A value by name from extra_info, else from the test's parameters."""
        return self.info.get(key, self.params.get(key))

    def peak(self, both_extra: bool) -> float | None:
        return self.info.get("peak_extra_GiB" if both_extra else "peak_GiB")


def _suite_from(fullname: str) -> str:
    """"bench/test_attention.py::test_x[...]" -> "attention" (for rows written without the harness)."""
    stem = Path(fullname.split("::")[0]).stem
    return stem.removeprefix("test_")


def to_row(bench: dict, default_meaningful: bool) -> Row:
    info, params = bench.get("extra_info") or {}, bench.get("params") or {}
    suite = info.get("suite") or _suite_from(bench.get("fullname", bench.get("name", "")))
    impl = info.get("impl") or next((str(params[k]) for k in IMPL_PARAMS if k in params), None) or \
        info.get("backend") or info.get("provider") or "?"
    group = info.get("group") or f"{suite}[{','.join(f'{k}={v}' for k, v in params.items() if k not in IMPL_PARAMS)}]"
    stats = bench.get("stats") or {}
    time_s = statistics.median(info["round_s"]) if info.get("round_s") else stats.get("median")
    return Row(name=bench.get("name", "?"), suite=suite, group=group, impl=impl,
               shape=str(info.get("shape") or bench.get("param") or ""), time_s=time_s,
               meaningful=bool(info.get("timing_meaningful", default_meaningful)), params=params, info=info)


def load_results(path: str | Path) -> tuple[dict, list[Row]]:
    """(provenance, rows) of a `pytest --benchmark-json` file written with bench/conftest.py's hook."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path}: not a pytest-benchmark JSON (no 'benchmarks' list)")
    prov = data.get("tritium") or {}
    default = bool(prov.get("timing_meaningful", False))
    return prov, [to_row(b, default) for b in data["benchmarks"]]


def load_floors(path: str | Path = FLOORS) -> list[dict]:
    with open(path) as f:
        rules = json.load(f)["floors"]
    for i, r in enumerate(rules):
        missing = {"suite", "impl", "baseline", "floor"} - set(r)
        if missing:
            raise ValueError(f"{path}: floor rule {i} lacks {sorted(missing)}: {r}")
        if r.get("metric", "time") not in METRICS:
            raise ValueError(f"{path}: floor rule {i} has metric {r['metric']!r}, not one of {METRICS}")
        if not float(r["floor"]) > 0:
            raise ValueError(f"{path}: floor rule {i} has floor {r['floor']!r}; floors are ratios > 0")
    return rules


# ----------------------------------------------------------------------------------------------------------
# Pairing and judging
# ----------------------------------------------------------------------------------------------------------
_COMPARE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(-?[\d.eE+]+)\s*$")
_OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt,
        "<": operator.lt}


def matches(row: Row, where: dict) -> bool:
    """Whether `row` meets every condition: an exact value, a list of values, or a comparison such as ">=2048"."""
    for key, want in where.items():
        have = row.get(key)
        if isinstance(want, list):  # any of these values
            if not any(matches(row, {key: w}) for w in want):
                return False
            continue
        m = _COMPARE.match(want) if isinstance(want, str) else None
        if m:
            try:
                if not _OPS[m.group(1)](float(have), float(m.group(2))):
                    return False
            except (TypeError, ValueError):
                return False
        elif str(have).lower() != str(want).lower():  # JSON true vs a parameter's True
            return False
    return True


def paired_ratio(base: list[float], ours: list[float]) -> float:
    """Median over interleaved rounds of base time / our time (> 1: ours is faster)."""
    if len(base) != len(ours) or not base:
        raise ValueError(f"need the same number (> 0) of rounds on both sides, got {len(base)} and {len(ours)}")
    return statistics.median(b / o for b, o in zip(base, ours))


def ratio(ours: Row, base: Row, metric: str) -> float | None:
    """baseline / ours for the metric; None when either side lacks the number."""
    rounds = ours.info.get("round_s"), base.info.get("round_s")
    if metric == "time" and all(rounds) and len(rounds[0]) == len(rounds[1]):
        return paired_ratio(rounds[1], rounds[0])
    if metric == "time":
        a, b = base.time_s, ours.time_s
    else:
        both_extra = ours.info.get("peak_extra_GiB") is not None and base.info.get("peak_extra_GiB") is not None
        a, b = base.peak(both_extra), ours.peak(both_extra)
    if a is None or b is None or b <= 0:
        return None
    return a / b


@dataclass
class Verdict:
    rule: dict
    group: str
    ours: str
    baseline: str
    ratio: float | None  # None: the rule matched no pair (a failure)

    @property
    def ok(self) -> bool:
        return self.ratio is not None and self.ratio >= float(self.rule["floor"])


def judge(rows: list[Row], rules: list[dict]) -> list[Verdict]:
    """One verdict per (rule, matching pair), plus a failing verdict for each rule that matched no pair
    while its suite has meaningful rows. Rows that are not meaningful are left out entirely."""
    rows = [r for r in rows if r.meaningful]
    by_group: dict[tuple[str, str], dict[str, Row]] = {}
    for r in rows:
        by_group.setdefault((r.suite, r.group), {})[r.impl] = r
    verdicts = []
    for rule in rules:
        metric = rule.get("metric", "time")
        found = []
        for (suite, group), impls in by_group.items():
            ours, base = impls.get(rule["impl"]), impls.get(rule["baseline"])
            if suite != rule["suite"] or ours is None or base is None or not matches(ours, rule.get("where", {})):
                continue
            value = ratio(ours, base, metric)
            if value is not None:
                found.append(Verdict(rule, group, ours.name, base.name, value))
        if not found and any(r.suite == rule["suite"] for r in rows):
            found.append(Verdict(rule, "(no pair)", rule["impl"], rule["baseline"], None))
        verdicts += found
    return verdicts


def describe(rule: dict) -> str:
    where = ", ".join(f"{k} {v}" if isinstance(v, str) and _COMPARE.match(v) else f"{k}={v}"
                      for k, v in rule.get("where", {}).items())
    return (f"{rule['suite']}: {rule['impl']} vs {rule['baseline']} ({rule.get('metric', 'time')})"
            + (f" where {where}" if where else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.check", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="a JSON written by pytest bench/ --benchmark-json=...")
    ap.add_argument("--floors", default=str(FLOORS), help="floor rules (default: bench/floors.json)")
    args = ap.parse_args(argv)
    try:
        prov, rows = load_results(args.results)
        rules = load_floors(args.floors)
    except (OSError, ValueError, KeyError) as e:
        print(f"bench.check: cannot read input: {e}", file=sys.stderr)
        return 2
    print(f"bench.check | {args.results} | {prov.get('device', 'unknown device')} | commit {prov.get('commit')}")
    meaningful = sum(r.meaningful for r in rows)
    if not meaningful:
        print(f"nothing to judge: none of the {len(rows)} rows has meaningful timings (a CPU run); floors skipped")
        return 0
    verdicts = judge(rows, rules)
    for v in verdicts:
        shown = "no pair" if v.ratio is None else f"{v.ratio:6.2f}x"
        print(f"  {'ok  ' if v.ok else 'FAIL'} {shown} (floor {float(v.rule['floor']):.2f})  {describe(v.rule)}  "
              f"{v.group}")
    bad = [v for v in verdicts if not v.ok]
    if bad:
        print(f"\nFAIL: {len(bad)} of {len(verdicts)} ratios violate their floor:")
        for v in bad:
            why = ("matched no pair of rows (renamed, skipped or missing?)" if v.ratio is None
                   else f"ratio {v.ratio:.3f} < floor {float(v.rule['floor']):.3f}")
            print(f"  {describe(v.rule)} | {v.group} | {why}")
        return 1
    print(f"ok: {len(verdicts)} ratios at or above their floors ({meaningful} meaningful rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
