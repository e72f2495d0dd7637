"""Command line: `python train.py [--preset=NAME] [--key=value ...]` or `python train.py --resume RUN_DIR`.

Bad input, an unusable checkpoint, a broken reward function and a run stopped by numerical faults are each
one line on stderr, `error: ...`, and exit code 2, never a traceback. SIGINT/SIGTERM during training save a
checkpoint first (train/loop.py) and exit with 130/143, the shell's codes for those signals.
"""
from __future__ import annotations

import sys

from train.checkpoint import CheckpointError
from train.config import PRESETS, ConfigError, all_keys, apply_overrides, load_preset
from train.data import DataError
from train.loop import Interrupted, NumericalError
from train.tasks import RewardError
from train.tokenizer import TokenizerError

ONE_LINE_ERRORS = (ConfigError, DataError, CheckpointError, TokenizerError, RewardError, NumericalError)

USAGE = """usage: python train.py [--preset=NAME] [--key=value ...]
       python train.py --resume RUN_DIR

Trains a GPT through a schedule of phases (see README.md). Presets: {presets}.
Every option below can be set with --key=value; phases are addressed by name (--pretrain.steps=200).
--resume RUN_DIR continues a run exactly where its last checkpoint left it (no other options).

options of preset {preset!r} (current values):
"""


def parse_args(argv: list[str]) -> tuple[str, dict[str, str], str | None, bool]:
    preset, overrides, resume, want_help = "default", {}, None, False
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            want_help = True
        elif arg == "--resume" or arg.startswith("--resume="):
            resume = arg.partition("=")[2] or next(it, None)
            if not resume:
                raise ConfigError("--resume needs a run folder: python train.py --resume runs/<name>")
        elif arg.startswith("--") and "=" in arg:
            key, _, value = arg[2:].partition("=")
            if key == "preset":
                preset = value
            else:
                overrides[key] = value
        else:
            raise ConfigError(f"cannot read argument {arg!r}: options look like --key=value (see --help)")
    return preset, overrides, resume, want_help


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        preset, overrides, resume, want_help = parse_args(argv)
        cfg = load_preset(preset)
        if want_help:
            print(USAGE.format(presets=", ".join(PRESETS), preset=preset))
            rows = [(f"--{key}={value}", help_) for key, value, help_ in all_keys(cfg)]
            width = max(len(r[0]) for r in rows) + 2
            for option, help_ in rows:
                print(f"  {option:<{width}}{help_}")
            return 0
        if resume and (overrides or preset != "default"):
            raise ConfigError(f"--resume continues a run exactly as configured; drop {sorted(overrides) or ['--preset']}")
        from train.run import run  # imported here so --help and argument errors answer fast

        if resume:
            run(resume=resume)
        else:
            run(apply_overrides(cfg, overrides))
        return 0
    except ONE_LINE_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:  # a checkpoint is saved; the message says how to continue
        print(e, file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:  # before training started (setup), so there is nothing new to save
        print("\ninterrupted; continue from the last checkpoint with --resume RUN_DIR", file=sys.stderr)
        return 130
