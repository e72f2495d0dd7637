"""Typed run configuration: dataclasses, named presets, and `--key=value` overrides checked against them.

A run is `RunConfig`: the model, the optimiser, the task knobs, and a list of phases. A phase is data:
which objective, which data, how many steps, batch sizes and its LR schedule. Overrides address fields by
path: `--seed=1`, `--model.n_layer=6`, `--optim.lr=1e-3`, and a phase by its name: `--pretrain.steps=500`.
Every value is parsed to the field's declared type; unknown keys and bad values raise `ConfigError` naming
the key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field

from model.gpt import GPTConfig
from train.tasks import OPS, REWARDS
from train.tokenizer import SPECIAL_TOKENS


class ConfigError(ValueError):
    """A bad key or value in the run configuration (printed as one line by the CLI)."""


OBJECTIVES = ("pretrain", "sft", "grpo")  # what a phase can optimise (train/phases.py builds each)


def choice(default, choices: tuple, help_: str = ""):
    return field(default=default, metadata={"choices": choices, "help": help_})


# phase options that mean something to one kind of objective only; --help lists them under phases of that kind
KIND_OPTIONS = {"pretrain": ("mix",),
                "grpo": ("group_size", "temperature", "top_k", "max_new_tokens", "reward", "loss_type", "eps_low",
                         "eps_high", "beta", "mu", "scale_std", "std_floor", "reward_min", "reward_max")}


def shown_in_help(cfg: RunConfig, key: str) -> bool:
    """Whether --help lists option `key`: a phase option of one kind only under phases that train that kind
    (as their objective or in `aux`)."""
    head, _, rest = key.partition(".")
    kinds = [kind for kind, names in KIND_OPTIONS.items() if rest in names]
    if not kinds or head not in {p.name for p in cfg.phases}:
        return True
    p = cfg.phase(head)
    return bool({p.objective, *(name for name, _ in parse_aux(p.aux))} & set(kinds))


def parse_aux(aux: str) -> list[tuple[str, float]]:
    """`"sft=0.5,pretrain=0.1"` -> [("sft", 0.5), ("pretrain", 0.1)]; ConfigError on anything else."""
    out = []
    for part in filter(None, (x.strip() for x in aux.split(","))):
        name, _, w = part.partition("=")
        try:
            weight = float(w)
        except ValueError:
            weight = -1.0
        if name not in OBJECTIVES or not weight > 0:
            raise ConfigError(f"aux entry {part!r} must be objective=weight with an objective in {OBJECTIVES} "
                              f"and a weight > 0, e.g. sft=0.5")
        out.append((name, weight))
    return out


@dataclass
class OptimConfig:
    lr: float = 3e-3  # peak learning rate (a phase scales it with lr_scale)
    weight_decay: float = 0.0  # AdamW decoupled weight decay on matrices (never on embeddings)
    beta1: float = 0.9  # AdamW β1
    beta2: float = 0.95  # AdamW β2
    eps: float = 1e-8  # AdamW ε
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 disables)
    max_bad_steps: int = 5  # stop, with a checkpoint, after this many steps in a row with a NaN/inf loss or gradient

    def __post_init__(self):
        _positive(self, "optim.", "lr", "eps", "max_bad_steps")
        _nonnegative(self, "optim.", "weight_decay", "grad_clip")
        for name in ("beta1", "beta2"):
            _check(self, "optim.", name, 0 <= getattr(self, name) < 1, "in [0, 1)")


@dataclass
class TaskConfig:
    digits: int = 3  # operands have 1..digits digits
    ops: str = "+-"  # operations, a subset of "+-*"
    direct: float = 0.0  # share of chat demonstrations (pretraining chat documents, SFT) without the worked columns
    eval_problems: int = 200  # held-out problems for task accuracy
    max_new_tokens: int = 48  # generation budget when evaluating task accuracy
    pass_k: int = 4  # samples per problem for pass@k (0 disables)
    evaluate: str = choice("auto", ("auto", "always", "never"),
                           "task accuracy after each phase; auto: when some phase trains on the embedded task")

    def __post_init__(self):
        _check(self, "task.", "digits", 1 <= self.digits <= 12, "between 1 and 12")
        _check(self, "task.", "ops", bool(self.ops) and set(self.ops) <= set(OPS), f"a non-empty subset of {OPS!r}")
        _check(self, "task.", "direct", 0 <= self.direct <= 1, "in [0, 1]")
        _positive(self, "task.", "eval_problems", "max_new_tokens")
        _nonnegative(self, "task.", "pass_k")


@dataclass
class PhaseConfig:
    name: str = "pretrain"  # unique; overrides address the phase by it (--<name>.<field>=...)
    objective: str = choice("pretrain", OBJECTIVES, "what the phase optimises")
    data: str = "embedded"  # "embedded" (generated tasks) or a file: .txt/.jsonl text (pretrain), .jsonl (sft, grpo)
    mix: str = "facts=1,worked=1,chat=1"  # embedded pretraining documents: kind=weight, kinds facts/worked/chat
    steps: int = 100  # optimiser steps in this phase
    batch_size: int = 16  # rows per optimiser step
    micro_batch_size: int = 16  # rows per forward/backward (batch_size / micro_batch_size accumulation steps)
    lr_scale: float = 1.0  # peak LR of this phase = optim.lr × lr_scale
    warmup_steps: int = 10  # linear warm-up from 0
    decay: str = choice("cosine", ("cosine", "linear", "constant"), "LR decay after warm-up")
    min_lr_ratio: float = 0.1  # LR at the end of the phase, as a fraction of its peak
    eval_every: int = 0  # evaluate every N steps inside the phase (0: only at its end)
    reset_optimizer: bool = False  # start the phase with fresh AdamW moments
    aux: str = ""  # extra objectives optimised alongside, with weights, e.g. "sft=0.5" (each on its embedded data)
    # GRPO only (batch_size and micro_batch_size count completions)
    group_size: int = 8  # completions sampled per prompt (G)
    temperature: float = 1.0  # sampling temperature of rollouts (log-probs use the same)
    top_k: int = 0  # sample among the k most likely tokens (0: all)
    max_new_tokens: int = 48  # completion length limit
    reward: str = "arithmetic"  # reward function by name: arithmetic, exact, numeric, or one you register
    loss_type: str = choice("dapo", ("grpo", "bnpo", "dapo", "dr_grpo"), "how token losses are aggregated")
    eps_low: float = 0.2  # ratio clipped below at 1 - eps_low
    eps_high: float = 0.28  # ratio clipped above at 1 + eps_high
    beta: float = 0.0  # k3 KL coefficient to the phase-start reference (0: no reference kept)
    mu: int = 1  # optimiser steps per rollout batch
    scale_std: bool = True  # divide advantages by the group std (false: Dr. GRPO)
    std_floor: float = 0.0  # floor on the group std before dividing
    reward_min: float = 0.0  # rewards below this are clamped up to it (and counted: reward_out_of_range)
    reward_max: float = 1.0  # rewards above this are clamped down to it (built-in rewards are 0 or 1)

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", self.name):
            raise ConfigError(f"phase name {self.name!r} must be letters, digits, _ or - (it is used in "
                              f"--<name>.<field> options and checkpoint file names)")
        at = f"{self.name}."
        _positive(self, at, "steps", "batch_size", "micro_batch_size", "group_size", "max_new_tokens", "mu")
        _nonnegative(self, at, "temperature", "top_k", "eps_low", "eps_high", "beta", "std_floor")
        parse_aux(self.aux)
        _nonnegative(self, at, "warmup_steps", "eval_every", "lr_scale", "min_lr_ratio")
        _check(self, at, "min_lr_ratio", self.min_lr_ratio <= 1, "in [0, 1]")
        _check(self, at, "eps_low", self.eps_low < 1, "in [0, 1)")
        _check(self, at, "reward_max", math.isfinite(self.reward_min) and math.isfinite(self.reward_max)
               and self.reward_min < self.reward_max, f"finite and > {self.name}.reward_min={self.reward_min}")
        if self.objective == "grpo":
            _check(self, at, "group_size", self.group_size >= 2, ">= 2 (advantages compare completions of a group)")
            _check(self, at, "temperature", self.temperature > 0, "> 0 (rollout log-probs divide by it)")
            _check(self, at, "reward", self.reward in REWARDS,
                   f"a registered reward: {', '.join(sorted(REWARDS))} (a module given with --import=MODULE "
                   f"can add one with train.tasks.register_reward)")
        if self.objective == "grpo" and self.batch_size % self.group_size:
            raise ConfigError(f"{self.name}.batch_size={self.batch_size} (completions per step) must be a "
                              f"multiple of {self.name}.group_size={self.group_size}")
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(
                f"{self.name}.batch_size={self.batch_size} must be a multiple of "
                f"{self.name}.micro_batch_size={self.micro_batch_size}"
            )


@dataclass
class RunConfig:
    preset: str = "default"  # the preset these values started from
    seed: int = 0  # seeds the model init, the data order and sampling
    out: str = ""  # run folder (default: runs/<preset>-s<seed>-<time>)
    device: str = choice("auto", ("auto", "cpu", "cuda"), "where to train")
    dtype: str = choice("auto", ("auto", "fp32", "bf16"), "autocast dtype: auto = bf16 on CUDA, fp32 on CPU")
    tokenizer: str = "bpe"  # "bpe" (trained on the run's text), "gpt2" (tiktoken, downloads once), or a tokenizer.json
    vocab_size: int = 512  # BPE vocabulary size when tokenizer=bpe
    log_every: int = 10  # console/metrics line every N steps
    eval_rows: int = 32  # rows of each held-out loss set (pretraining text, SFT conversations)
    ckpt_every: int = 0  # checkpoint every N steps (0: at the end of every phase only)
    keep_checkpoints: int = 2  # step checkpoints kept, the newest ones (each phase's last is kept as well)
    wandb: bool = False  # log to Weights & Biases (WANDB_MODE=offline works without network)
    threads: int = 0  # torch CPU threads (0: torch's default)
    backend: str = choice("auto", ("auto", "nccl", "gloo"), "torchrun process group: auto = nccl on CUDA, gloo on CPU")
    model: GPTConfig = field(default_factory=GPTConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    phases: list[PhaseConfig] = field(default_factory=list)

    def __post_init__(self):
        _check(self, "", "seed", 0 <= self.seed < 2**32, "in [0, 2**32)")
        _positive(self, "", "log_every", "eval_rows", "keep_checkpoints")
        _nonnegative(self, "", "ckpt_every", "threads")
        _check(self, "", "tokenizer", bool(self.tokenizer), "bpe, gpt2 or the path of a tokenizer.json")
        if self.tokenizer == "bpe":
            _check(self, "", "vocab_size", self.vocab_size >= 256 + len(SPECIAL_TOKENS),
                   f">= {256 + len(SPECIAL_TOKENS)} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
        _check(self, "", "phases", bool(self.phases), "a non-empty list")
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ConfigError(f"phase names must be unique, got {names}")
        reserved = {f.name for f in dataclasses.fields(self)} & set(names)
        if reserved:
            raise ConfigError(f"phase name(s) {sorted(reserved)} clash with run fields; rename the phase")

    def phase(self, name: str) -> PhaseConfig:
        for p in self.phases:
            if p.name == name:
                return p
        raise ConfigError(f"no phase named {name!r}; phases: {[p.name for p in self.phases]}")


def _check(obj, prefix: str, name: str, ok: bool, allowed: str) -> None:
    """ConfigError naming the field by its option path (`prefix` + name), its value and what is allowed."""
    if not ok:
        raise ConfigError(f"{prefix}{name}={getattr(obj, name)!r} must be {allowed}")


def _positive(obj, prefix: str, *names):
    for n in names:
        v = getattr(obj, n)
        _check(obj, prefix, n, math.isfinite(v) and v > 0, "> 0")


def _nonnegative(obj, prefix: str, *names):
    for n in names:
        v = getattr(obj, n)
        _check(obj, prefix, n, math.isfinite(v) and v >= 0, ">= 0")


# ------------------------------------------------------------------------------------------- presets
def _default() -> RunConfig:
    """The embedded curriculum: pretraining, then SFT, then GRPO on arithmetic; minutes on a laptop CPU."""
    return RunConfig(
        preset="default",
        model=GPTConfig(n_layer=4, n_head=4, n_kv_head=2, n_embd=128, seq_len=256),
        optim=OptimConfig(lr=3e-3),
        # half the chat demonstrations give the answer without the columns: GRPO's job is to learn that working
        # them pays (README, "The default curriculum")
        task=TaskConfig(direct=0.5, eval_problems=500),
        phases=[
            PhaseConfig(name="pretrain", objective="pretrain", mix="facts=1,worked=2,chat=2", steps=400,
                        batch_size=16),
            PhaseConfig(name="sft", objective="sft", steps=150, batch_size=16, lr_scale=0.5, warmup_steps=0),
            # 16 prompts × 8 samples per step at temperature 0.7; a small constant LR: larger ones let the
            # sparse reward signal drift the policy (accuracy falls at lr_scale 0.05 and above)
            PhaseConfig(name="grpo", objective="grpo", steps=40, batch_size=128, micro_batch_size=64,
                        group_size=8, temperature=0.7, lr_scale=0.02, warmup_steps=0, decay="constant"),
        ],
    )


def _base() -> RunConfig:
    """Pretraining only, in two phases with different document mixes (plain text first, then problems)."""
    cfg = _default()
    cfg.preset = "base"
    cfg.phases = [
        PhaseConfig(name="pretrain", mix="facts=3,worked=1", steps=250, batch_size=16),
        PhaseConfig(name="pretrain2", mix="facts=1,worked=2,chat=3", steps=250, batch_size=16, warmup_steps=0,
                    lr_scale=0.5),
    ]
    return cfg


def _tiny(cfg: RunConfig, name: str) -> RunConfig:
    """`cfg`'s schedule for a few steps on a tiny model: seconds on a CPU (tests use these)."""
    cfg.preset, cfg.vocab_size, cfg.log_every = name, 320, 2
    cfg.model = GPTConfig(n_layer=2, n_head=2, n_kv_head=1, n_embd=32, seq_len=128)
    cfg.task = TaskConfig(digits=2, eval_problems=8, max_new_tokens=24, pass_k=2)
    for p in cfg.phases:
        p.steps, p.warmup_steps, p.eval_every = 4, 1, 0
        p.batch_size, p.micro_batch_size, p.group_size, p.max_new_tokens = 4, 2, 2, 16
    return cfg


def _smoke() -> RunConfig:
    """Every phase of the default schedule for a few steps on a tiny model."""
    return _tiny(_default(), "smoke")


def _base_smoke() -> RunConfig:
    """The two-phase pretraining schedule of `base` for a few steps on a tiny model."""
    return _tiny(_base(), "base-smoke")


PRESETS: dict[str, typing.Callable[[], RunConfig]] = {
    "default": _default, "smoke": _smoke, "base": _base, "base-smoke": _base_smoke,
}


# ------------------------------------------------------------------------------------------- overrides
def _parse(key: str, raw: str, typ, meta: dict):
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if raw.lower() in ("none", "null", ""):
            return None
        return _parse(key, raw, args[0], meta)
    try:
        if typ is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        value = int(raw) if typ is int else float(raw) if typ is float else raw
    except ValueError:
        allowed = "true/false" if typ is bool else _TYPE_NAMES[typ]
        raise ConfigError(f"--{key}={raw!r}: expected {allowed}") from None
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"--{key}={raw!r}: allowed values are {', '.join(map(str, choices))}")
    return value


def _fields(obj) -> dict[str, tuple[dataclasses.Field, typing.Any]]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(obj)}


def all_keys(cfg: RunConfig) -> list[tuple[str, typing.Any, str]]:
    """(key, current value, help) for every overridable field, for --help and for suggestions."""
    out = []

    def walk(obj, prefix, comments):
        for name, (f, typ) in _fields(obj).items():
            value = getattr(obj, name)
            if name == "phases":
                for p in value:
                    walk(p, f"{p.name}.", _COMMENTS.get(PhaseConfig, {}))
            elif dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{name}.", _COMMENTS.get(type(value), {}))
            else:
                extra = f" [{' | '.join(map(str, f.metadata['choices']))}]" if "choices" in f.metadata else ""
                out.append((prefix + name, value, (f.metadata.get("help") or comments.get(name, "")) + extra))

    walk(cfg, "", _COMMENTS.get(RunConfig, {}))
    return out


def apply_overrides(cfg: RunConfig, overrides: dict[str, str]) -> RunConfig:
    """Set `key=value` pairs on a copy of cfg, type-checked; re-validates every dataclass afterwards."""
    cfg = _revalidate(cfg)
    keys = [k for k, _, _ in all_keys(cfg)]
    for key, raw in overrides.items():
        parts = key.split(".")
        obj = cfg
        if parts[0] in {p.name for p in cfg.phases}:
            obj, parts = cfg.phase(parts[0]), parts[1:]
        for i, part in enumerate(parts):
            fields = _fields(obj) if dataclasses.is_dataclass(obj) else {}
            if part not in fields or part == "phases":
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f"; did you mean --{close[0]}?" if close else "; see python train.py --help"
                raise ConfigError(f"unknown config key --{key}{hint}")
            f, typ = fields[part]
            if i < len(parts) - 1:
                obj = getattr(obj, part)
            elif dataclasses.is_dataclass(getattr(obj, part)):
                raise ConfigError(f"--{key} is a group of settings; set one of its fields, e.g. --{key}.<field>")
            else:
                setattr(obj, part, _parse(key, raw, typ, f.metadata))
    return _revalidate(cfg)


def _revalidate(cfg: RunConfig) -> RunConfig:
    """Rebuild every dataclass from its fields so __post_init__ checks run on the final values; first check
    each plain field's type and choices (a config built in Python or read from config.json skips _parse)."""

    def rebuild(obj, prefix):
        if isinstance(obj, list):
            return [rebuild(x, f"{getattr(x, 'name', '?')}.") for x in obj]
        if not dataclasses.is_dataclass(obj):
            return obj
        values = {}
        for name, (f, typ) in _fields(obj).items():
            value = getattr(obj, name)
            _check_value(f"{prefix}{name}", value, typ, f.metadata)
            values[name] = rebuild(value, f"{prefix}{name}.")
        try:
            return type(obj)(**values)
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(str(e)) from None

    return rebuild(cfg, "")


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}


def _check_value(key: str, value, typ, meta: dict) -> None:
    if typ in _TYPE_NAMES:
        ok = isinstance(value, (int, float) if typ is float else typ) and (typ is bool or not isinstance(value, bool))
        if not ok:
            raise ConfigError(f"{key}={value!r} must be {_TYPE_NAMES[typ]}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{key}={value!r}: allowed values are {', '.join(map(str, choices))}")


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(d: dict) -> RunConfig:
    """Inverse of to_dict (for config.json of a run being resumed)."""
    try:
        d = dict(d)
        d["model"] = _build(GPTConfig, d["model"], "model.")
        d["optim"] = _build(OptimConfig, d["optim"], "optim.")
        d["task"] = _build(TaskConfig, d["task"], "task.")
        d["phases"] = [_build(PhaseConfig, p, f"{p.get('name')}.") for p in d["phases"]]
        return _revalidate(_build(RunConfig, d, ""))
    except ConfigError:
        raise
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise ConfigError(f"the saved config does not fit this version ({type(e).__name__}: {e})") from None


def _build(cls, values: dict, prefix: str):
    """cls(**values), with unknown keys and wrongly typed values reported by name first."""
    fields, hints = {f.name: f for f in dataclasses.fields(cls)}, typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown config field {prefix}{key} (saved by a different version?)")
        _check_value(prefix + key, value, hints[key], fields[key].metadata)
    return cls(**values)


def load_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]()


def _field_comments() -> dict[type, dict[str, str]]:
    """The one-line comment after each field above, reused as its --help text."""
    import inspect
    import re

    out = {}
    for cls in (RunConfig, PhaseConfig, OptimConfig, TaskConfig, GPTConfig):
        src = inspect.getsource(cls)
        out[cls] = dict(re.findall(r"^\s+(\w+): [^=]+=.*?#\s*(.+)$", src, flags=re.M))
    return out


_COMMENTS = _field_comments()
