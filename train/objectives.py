"""The objective kinds: one table, and the only place that lists them.

An objective is `objective(model, batch) -> (loss, metrics)`. Normalisation contract: it divides by a
count that covers the whole optimiser step (carried in the batch), never by anything local to the
micro-batch. The loop only adds the micro-batch gradients, so the step's gradient is the same however the
step is split. Metrics follow the same rule: each value is the micro-batch's share of the step value, so
the loop sums them over micro-batches.

A kind (train/kind.py: `ObjectiveKind`) brings its options, its reader of user files, its source and
held-out sets, its objective and its checks; everything else asks this table, so no other code names a
kind. An unknown kind is a ConfigError when the config is read, before anything runs.

Adding one (README, "Adding an objective"): write train/<kind>.py ending in its entry, say
`DPO = ObjectiveKind(name="dpo", ...)`, and add `dpo.DPO` to the tuple below, or call `register(DPO)` from a
module given with --import.
"""
from __future__ import annotations

from train import grpo, rlp, supervised
from train.kind import ObjectiveKind, PhaseConfig
from train.settings import ConfigError, build

KINDS: dict[str, ObjectiveKind] = {k.name: k for k in (supervised.PRETRAIN, supervised.SFT, grpo.GRPO, rlp.RLP)}


def register(kind: ObjectiveKind) -> ObjectiveKind:
    """Add a kind to the table (phases may then name it); a name already taken is a ValueError."""
    if not isinstance(kind, ObjectiveKind):
        raise TypeError(f"register() takes an ObjectiveKind, got {type(kind).__name__}")
    if kind.name in KINDS and KINDS[kind.name] is not kind:
        raise ValueError(f"an objective kind named {kind.name!r} is registered already")
    KINDS[kind.name] = kind
    return kind


def get(name: str, key: str = "objective") -> ObjectiveKind:
    """The kind called `name`; ConfigError naming the option `key` and the kinds there are."""
    if name not in KINDS:
        raise ConfigError(f"{key}={name!r}: allowed values are {', '.join(KINDS)}")
    return KINDS[name]


def kinds(p: PhaseConfig) -> list[ObjectiveKind]:
    """The kinds phase `p` trains: its objective, then its aux objectives."""
    out = [get(p.objective, f"{p.name}.objective")]
    for name, weight in p.aux_weights:
        if name not in KINDS:
            raise ConfigError(f"aux entry '{name}={weight:g}' must be objective=weight with an objective in "
                              f"{tuple(KINDS)} and a weight > 0, e.g. sft=0.5")
        out.append(KINDS[name])
    return out


def resolve(p: PhaseConfig) -> PhaseConfig:
    """Check phase `p` against the table: its kinds exist, it holds the options sections of those kinds and
    no others (a section set where it means nothing is a ConfigError), and each kind accepts them."""
    sync_options(p, drop_unused=False)
    for k in dict.fromkeys(kinds(p)):
        k.check(p)
    return p


def sync_options(p: PhaseConfig, drop_unused: bool = True) -> None:
    """Give `p` one options section per kind it trains that has options (a missing one gets the kind's
    defaults). A section of a kind it does not train is dropped (an override just changed the phase's
    kinds), or with `drop_unused=False` a ConfigError."""
    wanted = {k.name: k for k in kinds(p) if k.options is not None}
    extra = sorted(set(p.options) - set(wanted))
    if extra and not drop_unused:
        raise ConfigError(f"phase {p.name} has options for {', '.join(extra)}, which it does not train "
                          f"(objective {p.objective}{', aux ' + p.aux if p.aux else ''})")
    p.options = {name: p.options[name] if name in p.options else k.options() for name, k in wanted.items()}
    for name, k in wanted.items():
        if not isinstance(p.options[name], k.options):
            raise ConfigError(f"{p.name}: the {name} options must be a {k.options.__name__}, "
                              f"got {type(p.options[name]).__name__}")


def options_from_dict(p: dict, prefix: str) -> dict:
    """A phase's options sections as config.json holds them ({kind: {knob: value}}) -> their dataclasses."""
    return {name: build(get(name, f"{prefix}options").options, values, prefix)
            for name, values in (p.get("options") or {}).items()}
