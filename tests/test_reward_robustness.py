"""Reward functions on hostile completions: always 0.0 or 1.0, never an exception, never evaluating text."""
import ast
import os
import random

from tests.helpers import ROOT
from train.tasks import REWARDS


def test_fuzz_rewards_return_zero_or_one_and_never_raise():
    rng = random.Random(1)
    pieces = ["Answer:", "Answer: ", "-", "7", "623", "9" * 400, "1e999", ".", " ", "\n", "٣", "é", "\x00", "<|end|>",
              "__import__('os')", "Answer: 6" + "2" * 30, "nan", "inf", "(", "1/0"]
    for _ in range(400):
        completion = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        answer = rng.choice(["623", "-7", "0", "9" * 400, "3.5", "", "x"])
        for name, fn in REWARDS.items():
            r = fn(completion, answer)
            assert type(r) is float and r in (0.0, 1.0), (name, completion, answer, r)
    assert REWARDS["numeric"]("9" * 400, "9" * 400) == 1.0 and REWARDS["numeric"]("9" * 400, "8" * 400) == 0.0


def test_rewards_never_evaluate_text():
    with open(os.path.join(ROOT, "train", "tasks.py")) as f:
        calls = {n.func.id for n in ast.walk(ast.parse(f.read())) if isinstance(n, ast.Call) and
                 isinstance(n.func, ast.Name)}
    assert not calls & {"eval", "exec", "compile", "__import__"}
