"""`--phases=NAME:OBJECTIVE,...`: the schedule of a run composed on the command line.

Each item names a phase and its objective kind, in the order they run; a kind may appear any number of
times, under different names, and any preset phase may be left out:

    --phases=pretrain:pretrain,grpo:grpo                       zero-RL: pretraining straight into GRPO
    --phases=pretrain:pretrain,cpt:pretrain,sft:sft,grpo:grpo  continued pretraining before SFT

A phase the preset has (same name) keeps all its settings; when the item gives it another objective, its
options sections follow the new kind as `--<phase>.objective=` does (the new kind's defaults, the old
kind's knobs dropped). A name the preset does not have is a new phase with the `PhaseConfig` defaults
(`--help` lists them) and that objective. The schedule is applied before every other option, so
`--cpt.steps=50` finds the phase `cpt` it created. config.json keeps the resulting phase list, which is all
a resume needs.
"""
from __future__ import annotations

import copy

from train import objectives
from train.config import RunConfig, apply_overrides
from train.kind import PhaseConfig
from train.settings import ConfigError

EXAMPLE = "pretrain:pretrain,sft:sft,grpo:grpo"


def parse_schedule(spec: str) -> list[tuple[str, str]]:
    """`"a:pretrain,b:sft"` -> [("a", "pretrain"), ("b", "sft")]; ConfigError for a malformed or empty item,
    an empty or repeated name, or an objective kind that is not registered."""
    items = [item.strip() for item in spec.split(",")]
    if not spec.strip():
        raise ConfigError(f"--phases is empty; give NAME:OBJECTIVE items, e.g. --phases={EXAMPLE}")
    out: list[tuple[str, str]] = []
    for item in items:
        name, colon, kind = item.partition(":")
        name, kind = name.strip(), kind.strip()
        if not colon or not kind or ":" in kind:
            raise ConfigError(f"--phases item {item!r} must be NAME:OBJECTIVE, e.g. --phases={EXAMPLE}")
        if not name:
            raise ConfigError(f"--phases item {item!r} has an empty phase name; e.g. --phases={EXAMPLE}")
        if kind not in objectives.KINDS:
            raise ConfigError(f"--phases item {item!r}: unknown objective {kind!r}; objectives: "
                              f"{', '.join(objectives.KINDS)}")
        if name in (n for n, _ in out):
            raise ConfigError(f"--phases names phase {name!r} twice; each phase needs its own name "
                              f"(e.g. cpt:pretrain for a second pretraining phase)")
        out.append((name, kind))
    return out


def compose(cfg: RunConfig, spec: str) -> RunConfig:
    """A copy of `cfg` whose phases are those `spec` lists (module docstring), validated."""
    cfg = copy.deepcopy(cfg)
    preset = {p.name: p for p in cfg.phases}
    phases = []
    for name, kind in parse_schedule(spec):
        p = copy.deepcopy(preset[name]) if name in preset else PhaseConfig(name=name, objective=kind)
        p.objective = kind
        objectives.sync_options(p)
        phases.append(p)
    cfg.phases = phases
    return apply_overrides(cfg, {})  # every dataclass re-validated (names, options, batch sizes)
