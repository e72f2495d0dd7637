"""Task variants: a phase's own version of the embedded task, and named held-out sets of problems.

A variant is comma-separated key=value entries, each key at most once; a key left out keeps the run's `task`
section (operands of 1..task.digits digits, any number of carries):

    ops=+-*                       operations, a non-empty subset of "+-*"
    digits=N | MIN-MAX            operands have exactly N, or MIN..MAX, digits, within 1..12 (the multiplier
                                  of '*' stays one digit, 2..9); --task.digits=3 means digits=1-3
    direct=F                      share of demonstrations with the final line alone, in [0, 1]
    carries=N | MIN-MAX | MIN-    carries (borrows for '-') of the column algorithm (train/tasks.py `carries`),
                                  a filter applied by rejection

    --sft.task=ops=*,digits=1-2,direct=0,carries=0-1       the SFT phase trains on this variant
    --eval.sets=long:digits=4/carry:carries=3-/mul:ops=*   three held-out sets besides `task`

Held-out sets are NAME:VARIANT entries joined by '/' (a character a shell leaves alone, unlike ';'; quote the
whole option when a variant holds '*', which a shell could expand). Their problems come from the eval split,
which no training variant ever draws from (tasks.py: the split is a property of the operand pair).

Every mistake is a ConfigError naming the option, the value and what is allowed, raised when the config is
read: a variant that no problem satisfies (more carries than its digits allow, or too few to find in
tasks.MAX_DRAWS draws) included.
"""
from __future__ import annotations

import dataclasses
import re

from train.settings import ConfigError
from train.tasks import OPS, SPLITS, ArithmeticTask

KEYS = ("ops", "digits", "direct", "carries")
SET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
SET_SEPARATOR = "/"
SYNTAX = f"comma-separated key=value with keys {', '.join(KEYS)}, e.g. ops=*,digits=1-2,direct=0,carries=0-1"


def _count_range(value: str, key: str, open_end: bool) -> tuple[int, int | None]:
    """N, MIN-MAX (and MIN- when `open_end`) -> (min, max); max None for an open end."""
    m = re.fullmatch(r"(\d+)(?:(-)(\d*))?", value)
    if m is None or (m.group(2) and not m.group(3) and not open_end):
        forms = "N, MIN-MAX or MIN-" if open_end else "N or MIN-MAX"
        raise ValueError(f"{key}={value!r} must be {forms} with whole numbers")
    low = int(m.group(1))
    high = low if not m.group(2) else (int(m.group(3)) if m.group(3) else None)
    if high is not None and high < low:
        raise ValueError(f"{key}={value!r} is an empty range (MIN-MAX with MIN <= MAX)")
    return low, high


def _entry(key: str, value: str) -> dict:
    """One key=value of a variant -> the ArithmeticTask fields it sets; ValueError saying what is allowed."""
    if key == "ops":
        if not value or set(value) - set(OPS):
            raise ValueError(f"ops={value!r} must be a non-empty subset of {OPS!r}")
        return {"ops": value}
    if key == "digits":
        low, high = _count_range(value, key, open_end=False)
        if not 1 <= low <= high <= 12:
            raise ValueError(f"digits={value!r} must lie within 1..12")
        return {"min_digits": low, "digits": high}
    if key == "direct":
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not 0 <= share <= 1:
            raise ValueError(f"direct={value!r} must be a number in [0, 1]")
        return {"direct": share}
    if key == "carries":
        low, high = _count_range(value, key, open_end=True)
        return {"min_carries": low, "max_carries": high}
    raise ValueError(f"unknown key {key!r}; the keys are {', '.join(KEYS)}")


def parse_variant(spec: str) -> dict:
    """A variant's text -> the ArithmeticTask fields it sets ({} for ""); ValueError saying what is wrong."""
    fields, seen = {}, set()
    for part in filter(None, (x.strip() for x in spec.split(","))):
        key, eq, value = (x.strip() for x in part.partition("="))
        if not eq:
            raise ValueError(f"entry {part!r} is not key=value ({SYNTAX})")
        if key in seen:
            raise ValueError(f"{key} is given twice")
        seen.add(key)
        fields |= _entry(key, value)
    return fields


def check_variant(spec: str, where: str) -> None:
    """The syntax of variant `spec`; ConfigError starting with `where` (the option, e.g. "--sft.task='...'")."""
    try:
        parse_variant(spec)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def variant_task(base: ArithmeticTask, spec: str, where: str, splits: tuple[str, ...] = SPLITS) -> ArithmeticTask:
    """`base` (the run's task) with variant `spec` applied; ConfigError starting with `where` when the spec is
    malformed or no problem of `splits` satisfies it (problem 0 of each is drawn to find out)."""
    if not spec:
        return base
    try:
        task = dataclasses.replace(base, **parse_variant(spec))
        for split in splits:
            task.problem(split, 0)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    return task


def phase_option(phase: str, spec: str) -> str:
    """How errors name a phase's variant."""
    return f"--{phase}.task={spec!r}"


def set_option(name: str, spec: str) -> str:
    """How errors name a held-out set's variant."""
    return f"--eval.sets: set {name} ({spec!r})"


def parse_sets(spec: str) -> list[tuple[str, str]]:
    """`--eval.sets` -> [(name, variant)]; ConfigError for a malformed entry, a bad name or variant, a name
    given twice or a variant left empty."""
    out: list[tuple[str, str]] = []
    for part in filter(None, (x.strip() for x in spec.split(SET_SEPARATOR))):
        name, colon, variant = (x.strip() for x in part.partition(":"))
        if not colon or not SET_NAME.fullmatch(name) or not variant:
            raise ConfigError(f"--eval.sets={spec!r}: entry {part!r} must be NAME:VARIANT with a name of letters, "
                              f"digits, _ or - and a variant ({SYNTAX}); entries are joined by "
                              f"'{SET_SEPARATOR}', e.g. long:digits=4{SET_SEPARATOR}mul:ops=*")
        if name in (n for n, _ in out):
            raise ConfigError(f"--eval.sets={spec!r}: the set name {name!r} is given twice")
        check_variant(variant, set_option(name, variant))
        out.append((name, variant))
    return out
