"""Typed settings: the pieces every config dataclass of a run is built from.

A setting is a dataclass field with a type, a default and a one-line comment (its `--help` text). Values
from the command line are parsed to the field's type (`parse_value`); values built in Python or read from
config.json are checked against it (`check_value`); each dataclass checks its ranges in `__post_init__`
with `check`, `positive` and `nonnegative`, whose ConfigError names the option by its path.

The run's own configs (train/config.py), the phase config (train/kind.py) and every objective kind's
options (train/supervised.py, train/grpo.py, ...) are written with these, so all of them parse, print and
fail the same way.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import re
import types
import typing
from dataclasses import field


class ConfigError(ValueError):
    """A bad key or value in the run configuration (printed as one line by the CLI)."""


def choice(default, choices: tuple, help_: str = ""):
    """A field whose value is one of `choices` (listed by --help and checked like its type)."""
    return field(default=default, metadata={"choices": choices, "help": help_})


# ------------------------------------------------------------------------------------------- range checks
def check(obj, prefix: str, name: str, ok: bool, allowed: str) -> None:
    """ConfigError naming the field by its option path (`prefix` + name), its value and what is allowed."""
    if not ok:
        raise ConfigError(f"{prefix}{name}={getattr(obj, name)!r} must be {allowed}")


def positive(obj, prefix: str, *names) -> None:
    for n in names:
        v = getattr(obj, n)
        check(obj, prefix, n, math.isfinite(v) and v > 0, "> 0")


def nonnegative(obj, prefix: str, *names) -> None:
    for n in names:
        v = getattr(obj, n)
        check(obj, prefix, n, math.isfinite(v) and v >= 0, ">= 0")


# ------------------------------------------------------------------------------------------- types
TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}


def parse_value(key: str, raw: str, typ, meta: dict):
    """`--key=raw` parsed to the field's type `typ` (and checked against its choices)."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if raw.lower() in ("none", "null", ""):
            return None
        return parse_value(key, raw, args[0], meta)
    try:
        if typ is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        value = int(raw) if typ is int else float(raw) if typ is float else raw
    except ValueError:
        allowed = "true/false" if typ is bool else TYPE_NAMES[typ]
        raise ConfigError(f"--{key}={raw!r}: expected {allowed}") from None
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"--{key}={raw!r}: allowed values are {', '.join(map(str, choices))}")
    return value


def check_value(key: str, value, typ, meta: dict) -> None:
    """A value built in Python or read from config.json (which skip `parse_value`) against its type."""
    if typ in TYPE_NAMES:
        ok = isinstance(value, (int, float) if typ is float else typ) and (typ is bool or not isinstance(value, bool))
        if not ok:
            raise ConfigError(f"{key}={value!r} must be {TYPE_NAMES[typ]}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{key}={value!r}: allowed values are {', '.join(map(str, choices))}")


def fields_of(obj_or_cls) -> dict[str, tuple[dataclasses.Field, typing.Any]]:
    """{name: (field, resolved type)} of a dataclass or its instance."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def build(cls, values: dict, prefix: str):
    """cls(**values), with unknown keys and wrongly typed values reported by name first."""
    fields = fields_of(cls)
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown config field {prefix}{key} (saved by a different version?)")
        f, typ = fields[key]
        check_value(prefix + key, value, typ, f.metadata)
    return cls(**values)


def help_text(f: dataclasses.Field, owner: type) -> str:
    """A field's --help text: its `choice` help, else the comment after it in the source, plus its choices."""
    extra = f" [{' | '.join(map(str, f.metadata['choices']))}]" if "choices" in f.metadata else ""
    return (f.metadata.get("help") or comments(owner).get(f.name, "")) + extra


@functools.cache
def comments(cls: type) -> dict[str, str]:
    """The one-line comment after each field of dataclass `cls`, by field name."""
    return dict(re.findall(r"^\s+(\w+): [^=]+=.*?#\s*(.+)$", inspect.getsource(cls), flags=re.M))
