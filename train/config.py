"""Typed run configuration: dataclasses, named presets, and `--key=value` overrides checked against them.

A run is `RunConfig`: the model, the optimiser, the task knobs, and a list of phases. A phase is data
(`PhaseConfig`, train/kind.py): which objective, which data, how many steps, batch sizes, its LR schedule,
and one section of options per objective kind it trains (train/objectives.py). Overrides address fields by
path: `--seed=1`, `--model.n_layer=6`, `--optim.lr=1e-3`, and a phase by its name: `--pretrain.steps=500`,
`--grpo.beta=0.04` (a knob of the phase's grpo section; `--grpo.grpo.beta` says the section outright).
Every value is parsed to the field's declared type; unknown keys, bad values and a knob of a kind the phase
does not train raise `ConfigError` naming the key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field

from model.gpt import GPTConfig
from train import objectives
from train.grpo import GRPOOptions
from train.kind import PhaseConfig
from train.settings import (ConfigError, build, check, check_value, choice, fields_of, help_text, nonnegative,
                            parse_value, positive)
from train.supervised import PretrainOptions
from train.tasks import OPS, ArithmeticTask
from train.tokenizer import SPECIAL_TOKENS
from train.variants import SET_SEPARATOR, parse_sets, phase_option, set_option, variant_task

__all__ = ["ConfigError", "EvalConfig", "OptimConfig", "PhaseConfig", "RunConfig", "TaskConfig", "PRESETS", "all_keys",
           "apply_overrides", "from_dict", "load_preset", "to_dict"]


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
        positive(self, "optim.", "lr", "eps", "max_bad_steps")
        nonnegative(self, "optim.", "weight_decay", "grad_clip")
        for name in ("beta1", "beta2"):
            check(self, "optim.", name, 0 <= getattr(self, name) < 1, "in [0, 1)")


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
        check(self, "task.", "digits", 1 <= self.digits <= 12, "between 1 and 12")
        check(self, "task.", "ops", bool(self.ops) and set(self.ops) <= set(OPS), f"a non-empty subset of {OPS!r}")
        check(self, "task.", "direct", 0 <= self.direct <= 1, "in [0, 1]")
        positive(self, "task.", "eval_problems", "max_new_tokens")
        nonnegative(self, "task.", "pass_k")

    def arithmetic(self, seed: int) -> ArithmeticTask:
        """The embedded task these knobs describe; phases and held-out sets take variants of it."""
        return ArithmeticTask(self.digits, self.ops, seed, self.direct)


@dataclass
class EvalConfig:
    sets: str = field(default="", metadata={"help": (
        f"held-out task sets evaluated after every phase besides task/: NAME:VARIANT joined by '{SET_SEPARATOR}', "
        f"e.g. 'long:digits=4{SET_SEPARATOR}carry:carries=3-{SET_SEPARATOR}mul:ops=*' (variant keys: ops, "
        f"digits N|MIN-MAX, direct, carries N|MIN-MAX|MIN-, as for --<phase>.task; problems, pass@k and "
        f"generation budget from task.*)")})

    def __post_init__(self):
        parse_sets(self.sets)  # the syntax; RunConfig checks the names and that problems exist

    @property
    def named_sets(self) -> list[tuple[str, str]]:
        return parse_sets(self.sets)


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
    dist_backend: str = choice("auto", ("auto", "nccl", "gloo"),
                               "torchrun process group: auto = nccl on CUDA, gloo on CPU")
    # branching (train/branch.py): a new run that starts from a checkpoint of another run
    init_from: str = ""  # a checkpoint file, or a run folder (with init_phase): start from its weights and tokenizer
    init_phase: str = ""  # with a run folder in init_from: the phase whose phase-end checkpoint to start from
    init_optimizer: bool = False  # with init_from: take the checkpoint's AdamW state too (else fresh moments)
    model: GPTConfig = field(default_factory=GPTConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    phases: list[PhaseConfig] = field(default_factory=list)

    def __post_init__(self):
        check(self, "", "seed", 0 <= self.seed < 2**32, "in [0, 2**32)")
        positive(self, "", "log_every", "eval_rows", "keep_checkpoints")
        nonnegative(self, "", "ckpt_every", "threads")
        check(self, "", "tokenizer", bool(self.tokenizer), "bpe, gpt2 or the path of a tokenizer.json")
        if self.tokenizer == "bpe":
            check(self, "", "vocab_size", self.vocab_size >= 256 + len(SPECIAL_TOKENS),
                  f">= {256 + len(SPECIAL_TOKENS)} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
        for name in ("init_phase", "init_optimizer"):
            check(self, "", name, not getattr(self, name) or bool(self.init_from), "set only with --init_from")
        check(self, "", "phases", bool(self.phases), "a non-empty list")
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ConfigError(f"phase names must be unique, got {names}")
        reserved = {f.name for f in dataclasses.fields(self)} & set(names)
        if reserved:
            raise ConfigError(f"phase name(s) {sorted(reserved)} clash with run fields; rename the phase")
        for p in self.phases:  # its kinds exist, and it holds the options of those and no others
            objectives.resolve(p)
        self._check_variants(names)

    def _check_variants(self, names: list[str]) -> None:
        """Each phase's variant and held-out set admits problems; a variant goes with embedded data; a set's
        name is new."""
        base = self.task.arithmetic(self.seed)
        for p in self.phases:
            if p.task and p.data != "embedded" and not p.aux:
                raise ConfigError(f"{phase_option(p.name, p.task)}: a task variant shapes embedded data, and phase "
                                  f"{p.name} trains on {p.data}; drop it or set --{p.name}.data=embedded")
            variant_task(base, p.task, phase_option(p.name, p.task))
        for name, spec in self.eval.named_sets:
            if name in ("task", *names):
                raise ConfigError(f"--eval.sets: the set name {name!r} is taken by "
                                  f"{'the task set' if name == 'task' else 'a phase'}; choose another")
            variant_task(base, spec, set_option(name, spec), splits=("eval",))

    def phase(self, name: str) -> PhaseConfig:
        for p in self.phases:
            if p.name == name:
                return p
        raise ConfigError(f"no phase named {name!r}; phases: {[p.name for p in self.phases]}")


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
            PhaseConfig(name="pretrain", objective="pretrain", steps=400, batch_size=16,
                        options={"pretrain": PretrainOptions(mix="facts=1,worked=2,chat=2")}),
            PhaseConfig(name="sft", objective="sft", steps=150, batch_size=16, lr_scale=0.5, warmup_steps=0),
            # 16 prompts × 8 samples per step at temperature 0.7; a small constant LR: larger ones let the
            # sparse reward signal drift the policy (accuracy falls at lr_scale 0.05 and above)
            PhaseConfig(name="grpo", objective="grpo", steps=40, batch_size=128, micro_batch_size=64, lr_scale=0.02,
                        warmup_steps=0, decay="constant", options={"grpo": GRPOOptions(group_size=8, temperature=0.7)}),
        ],
    )


def _base() -> RunConfig:
    """Pretraining only, in two phases with different document mixes (plain text first, then problems)."""
    cfg = _default()
    cfg.preset = "base"
    cfg.phases = [
        PhaseConfig(name="pretrain", steps=250, batch_size=16, options={"pretrain": PretrainOptions(mix="facts=3,worked=1")}),
        PhaseConfig(name="pretrain2", steps=250, batch_size=16, warmup_steps=0, lr_scale=0.5,
                    options={"pretrain": PretrainOptions(mix="facts=1,worked=2,chat=3")}),
    ]
    return cfg


def _tiny(cfg: RunConfig, name: str) -> RunConfig:
    """`cfg`'s schedule for a few steps on a tiny model: seconds on a CPU (tests use these)."""
    cfg.preset, cfg.vocab_size, cfg.log_every = name, 320, 2
    cfg.model = GPTConfig(n_layer=2, n_head=2, n_kv_head=1, n_embd=32, seq_len=128)
    cfg.task = TaskConfig(digits=2, eval_problems=8, max_new_tokens=24, pass_k=2)
    for p in cfg.phases:
        p.steps, p.warmup_steps, p.eval_every = 4, 1, 0
        p.batch_size, p.micro_batch_size = 4, 2
    return cfg


def _smoke() -> RunConfig:
    """Every phase of the default schedule for a few steps on a tiny model."""
    cfg = _tiny(_default(), "smoke")
    grpo = cfg.phase("grpo").options["grpo"]
    grpo.group_size, grpo.max_new_tokens = 2, 16
    return cfg


def _base_smoke() -> RunConfig:
    """The two-phase pretraining schedule of `base` for a few steps on a tiny model."""
    return _tiny(_base(), "base-smoke")


PRESETS: dict[str, typing.Callable[[], RunConfig]] = {
    "default": _default, "smoke": _smoke, "base": _base, "base-smoke": _base_smoke,
}


def load_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return _revalidate(PRESETS[name]())


# ------------------------------------------------------------------------------------------- keys
def all_keys(cfg: RunConfig) -> list[tuple[str, typing.Any, str]]:
    """(key, current value, help) for every overridable field, for --help and for suggestions. A phase's
    options sections list their knobs under the phase's name (under phase.kind when two sections share one)."""
    out = []

    def walk(obj, prefix: str) -> None:
        for name, (f, _) in fields_of(obj).items():
            value = getattr(obj, name)
            if name == "phases":
                for p in value:
                    walk(p, f"{p.name}.")
            elif isinstance(obj, PhaseConfig) and name == "options":
                shared = _shared_knobs(obj)
                for kind, section in value.items():
                    for knob, (g, _) in fields_of(section).items():
                        key = f"{prefix}{kind}.{knob}" if knob in shared else prefix + knob
                        out.append((key, getattr(section, knob), help_text(g, type(section))))
            elif dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{name}.")
            else:
                kinds = f" [{' | '.join(objectives.KINDS)}]" if f.metadata.get("kinds") else ""
                out.append((prefix + name, value, help_text(f, type(obj)) + kinds))

    walk(cfg, "")
    return out


def _shared_knobs(p: PhaseConfig) -> set[str]:
    """Knob names that more than one of the phase's sections has."""
    names = [knob for section in p.options.values() for knob in fields_of(section)]
    return {n for n in names if names.count(n) > 1}


def apply_overrides(cfg: RunConfig, overrides: dict[str, str]) -> RunConfig:
    """Set `key=value` pairs on a copy of cfg, type-checked; re-validates every dataclass afterwards.

    A phase's kinds (`objective`, `aux`) are set first: a phase's sections follow its kinds (a new kind
    gets its defaults, a kind no longer trained loses its section), so the knobs set next find theirs."""
    cfg = _revalidate(cfg)
    kinds_first = sorted(overrides.items(), key=lambda kv: kv[0].rpartition(".")[2] not in ("objective", "aux"))
    for key, raw in kinds_first:
        obj, name, f, typ = _locate(cfg, key)
        setattr(obj, name, parse_value(key, raw, typ, f.metadata))
        if isinstance(obj, PhaseConfig) and name in ("objective", "aux"):
            objectives.sync_options(obj)
    return _revalidate(cfg)


def _locate(cfg: RunConfig, key: str) -> tuple[typing.Any, str, dataclasses.Field, typing.Any]:
    """(the object holding option `key`, its field name, the field, its type); ConfigError when none does."""
    parts = key.split(".")
    if parts[0] in {p.name for p in cfg.phases}:
        return _locate_in_phase(cfg, cfg.phase(parts[0]), key, parts[1:])
    obj = cfg
    for i, part in enumerate(parts):
        fields = fields_of(obj) if dataclasses.is_dataclass(obj) else {}
        if part not in fields or part == "phases":
            raise _unknown(cfg, key)
        if i < len(parts) - 1:
            obj = getattr(obj, part)
        elif dataclasses.is_dataclass(getattr(obj, part)):
            raise ConfigError(f"--{key} is a group of settings; set one of its fields, e.g. --{key}.<field>")
        else:
            return obj, part, *fields[part]
    raise _unknown(cfg, key)


def _locate_in_phase(cfg: RunConfig, p: PhaseConfig, key: str, rest: list[str]):
    """`--<phase>.<field>`, `--<phase>.<knob>` (of the one section that has it) or `--<phase>.<kind>.<knob>`."""
    if len(rest) == 2 and rest[0] in p.options and rest[1] in fields_of(p.options[rest[0]]):
        section = p.options[rest[0]]
        return section, rest[1], *fields_of(section)[rest[1]]
    if len(rest) != 1:
        raise _unknown(cfg, key)
    name, common = rest[0], fields_of(p)
    if name == "options":
        raise ConfigError(f"--{key} is a group of settings; set one of its knobs, e.g. --{p.name}.<knob>")
    if name in common:
        return p, name, *common[name]
    holders = [kind for kind, section in p.options.items() if name in fields_of(section)]
    if len(holders) == 1:
        section = p.options[holders[0]]
        return section, name, *fields_of(section)[name]
    if holders:
        raise ConfigError(f"--{key}: phase {p.name} trains {' and '.join(holders)}, which both have a {name}; say "
                          f"which, e.g. --{p.name}.{holders[0]}.{name}")
    others = [k.name for k in objectives.KINDS.values() if k.options is not None and name in fields_of(k.options)]
    if others:
        raise ConfigError(f"--{key}: {name} is an option of {' and '.join(others)} objectives, and phase {p.name} "
                          f"trains {', '.join(p.kinds)}")
    raise _unknown(cfg, key)


def _unknown(cfg: RunConfig, key: str) -> ConfigError:
    close = difflib.get_close_matches(key, [k for k, _, _ in all_keys(cfg)], n=1)
    hint = f"; did you mean --{close[0]}?" if close else "; see python train.py --help"
    return ConfigError(f"unknown config key --{key}{hint}")


def _revalidate(cfg: RunConfig) -> RunConfig:
    """Rebuild every dataclass from its fields so __post_init__ checks run on the final values; first check
    each plain field's type and choices (a config built in Python or read from config.json skips parsing)."""

    def rebuild(obj, prefix):
        if isinstance(obj, list):
            return [rebuild(x, f"{getattr(x, 'name', '?')}.") for x in obj]
        if isinstance(obj, dict):  # a phase's options sections: their knobs are named under the phase
            return {k: rebuild(v, prefix) for k, v in obj.items()}
        if not dataclasses.is_dataclass(obj):
            return obj
        values = {}
        for name, (f, typ) in fields_of(obj).items():
            value = getattr(obj, name)
            check_value(f"{prefix}{name}", value, typ, f.metadata)
            values[name] = rebuild(value, prefix if isinstance(value, dict) else f"{prefix}{name}.")
        try:
            return type(obj)(**values)
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(str(e)) from None

    return rebuild(cfg, "")


# ------------------------------------------------------------------------------------------- config.json
def to_dict(cfg: RunConfig) -> dict:
    """The config as plain data; a phase's options are {kind: {knob: value}}."""
    return dataclasses.asdict(cfg)


def from_dict(d: dict) -> RunConfig:
    """Inverse of to_dict (for config.json of a run being resumed)."""
    try:
        d = dict(d)
        d["model"] = build(GPTConfig, d["model"], "model.")
        d["optim"] = build(OptimConfig, d["optim"], "optim.")
        d["task"] = build(TaskConfig, d["task"], "task.")
        d["eval"] = build(EvalConfig, d.get("eval", {}), "eval.")  # absent from runs saved before it existed
        d["phases"] = [build(PhaseConfig, p | {"options": objectives.options_from_dict(p, f"{p.get('name')}.")},
                             f"{p.get('name')}.") for p in d["phases"]]
        return _revalidate(build(RunConfig, d, ""))
    except ConfigError:
        raise
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise ConfigError(f"the saved config does not fit this version ({type(e).__name__}: {e})") from None
