"""Train a GPT through a schedule of phases. `python train.py --help` lists the options."""
import sys

from train.cli import main

if __name__ == "__main__":
    sys.exit(main())
