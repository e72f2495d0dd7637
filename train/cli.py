"""Command line: `python train.py [--preset=NAME] [--key=value ...]` or `python train.py --resume RUN_DIR`.

Bad input, an unusable checkpoint or run folder, a broken reward function, a run stopped by numerical
faults and a write that fails for want of space or permission are each one line on stderr, `error: ...`, and
exit code 2, never a traceback. SIGINT/SIGTERM during training save a checkpoint first (train/loop.py) and
exit with 130/143, the shell's codes for those signals.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import textwrap
from dataclasses import dataclass, field

from train.checkpoint import CheckpointError
from train.config import PRESETS, ConfigError, all_keys, apply_overrides, load_preset
from train.readers import DataError
from train.loop import NumericalError
from train.objectives import KINDS
from train.signals import Interrupted
from train.resume import RESUMABLE
from train.rundir import RunDirError, Stopped
from train.schedule import compose
from train.tasks import RewardError
from train.tokenizer import TokenizerError

ONE_LINE_ERRORS = (ConfigError, DataError, CheckpointError, TokenizerError, RewardError, NumericalError, RunDirError)

USAGE = """usage: python train.py [--import=MODULE ...] [--preset=NAME] [--phases=NAME:OBJECTIVE,...] [--key=value ...]
       python train.py [--import=MODULE ...] --resume RUN_DIR [--key=value ...] [--accept_changed_data]

Trains a GPT through a schedule of phases (see README.md). Presets: {presets}.
Every option below can be set with --key=value; phases are addressed by name (--pretrain.steps=200).
--phases=NAME:OBJECTIVE,... sets the schedule, in order, before the other options (objectives: {kinds}).
A phase of the preset with that name keeps its settings (its options follow the objective given); a new
name is a phase with the defaults of PhaseConfig (steps=100, batch_size=16, ...) and that objective. E.g.
  --phases=pretrain:pretrain,cpt:pretrain,sft:sft,grpo:grpo --cpt.steps=50; zero-RL: pretrain:pretrain,grpo:grpo
--resume RUN_DIR continues a run exactly where its last checkpoint left it; only the options that change
neither the model, the data nor the saved state may be given with it:
  {resumable}
--import=MODULE imports a module (a name on the path or a .py file) before the options are checked, e.g. one
that registers a reward with train.tasks.register_reward; give it again when resuming such a run.

options of preset {preset!r} (current values; a phase lists the options of the objectives it trains):
"""


@dataclass
class Args:
    preset: str = "default"
    overrides: dict[str, str] = field(default_factory=dict)
    resume: str | None = None
    want_help: bool = False
    imports: list[str] = field(default_factory=list)
    accept_changed_data: bool = False


def parse_args(argv: list[str]) -> Args:
    args = Args()
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            args.want_help = True
        elif arg == "--resume" or arg.startswith("--resume="):
            args.resume = arg.partition("=")[2] or next(it, None)
            if not args.resume:
                raise ConfigError("--resume needs a run folder: python train.py --resume runs/<name>")
        elif arg in ("--accept_changed_data", "--accept_changed_data=true"):
            args.accept_changed_data = True
        elif arg.startswith("--import="):
            if not arg.partition("=")[2]:
                raise ConfigError("--import needs a module name or a .py file, e.g. --import=my_rewards")
            args.imports.append(arg.partition("=")[2])
        elif arg.startswith("--") and "=" in arg:
            key, _, value = arg[2:].partition("=")
            if key == "preset":
                args.preset = value
            else:
                args.overrides[key] = value
        else:
            raise ConfigError(f"cannot read argument {arg!r}: options look like --key=value (see --help)")
    return args


def import_modules(names: list[str]) -> None:
    """Import each module by name (from the working directory too) or by the path of a .py file."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            if name.endswith(".py"):
                spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(name))[0], name)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            else:
                importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  (whatever the user's module raises, said in one line)
            raise ConfigError(f"--import={name} failed: {type(e).__name__}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        import_modules(args.imports)
        cfg = load_preset(args.preset)
        schedule = args.overrides.pop("phases", None)
        if schedule is not None and args.resume:
            raise ConfigError("--phases cannot change on --resume (the checkpoint belongs to the run's schedule)")
        if schedule is not None:  # first, so that --<new phase>.<field> options find their phase
            cfg = compose(cfg, schedule)
        if args.want_help:
            print_help(cfg, args.preset)
            return 0
        if args.resume and args.preset != "default":
            raise ConfigError("--resume continues a run as it was configured; drop --preset")
        if args.accept_changed_data and not args.resume:
            raise ConfigError("--accept_changed_data goes with --resume")
        from train.run import run  # imported here so --help and argument errors answer fast

        if args.resume:
            run(resume=args.resume, overrides=args.overrides, imports=tuple(args.imports),
                accept_changed_data=args.accept_changed_data)
        else:
            run(apply_overrides(cfg, args.overrides), imports=tuple(args.imports))
        return 0
    except ONE_LINE_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:  # a checkpoint is saved; the message says how to continue
        print(e, file=sys.stderr)
        return 128 + e.signum
    except Stopped as e:  # Ctrl-C outside training, or a second one; the message says what to do
        print(f"\n{e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before a run began
        print("\ninterrupted during start-up; nothing was saved: rerun the command", file=sys.stderr)
        return 130


def print_help(cfg, preset: str) -> None:
    resumable = textwrap.fill(RESUMABLE, width=110, initial_indent="  ", subsequent_indent="  ").strip()
    print(USAGE.format(presets=", ".join(PRESETS), preset=preset, resumable=resumable, kinds=", ".join(KINDS)))
    rows = [(f"--{key}={value}", help_) for key, value, help_ in all_keys(cfg)]
    width = max(len(r[0]) for r in rows) + 2
    for option, help_ in rows:
        print(f"  {option:<{width}}{help_}")
