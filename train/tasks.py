"""Procedurally generated, verifiable arithmetic: the embedded default data for every phase.

One task family, three views of it:
    pretraining documents  - worked problems and plain sentences about numbers (text), plus problems already
                             in the chat format so a base model has seen the turn tokens
    SFT conversations      - user asks "What is 345+278?", assistant answers with the worked columns, or
                             (a `direct` share of them, chat pretraining documents too) with the final line alone
    RL prompts             - the same question, with the integer answer that the reward checks

Worked answers go column by column from the units, carrying (or borrowing) as a person does on paper:
    345+278  ->  "5+8=13, 4+7+1=12, 3+2+1=6. Answer: 623"
    623-278  ->  "13-8=5, 11-7=4, 5-2=3. Answer: 345"
    345*7    ->  "5*7=35, 4*7+3=31, 3*7+3=24. Answer: 2415"

Determinism and splits: problem `i` of split `s` is drawn from `random.Random(f"{seed}/{s}/{i}")`, so any
problem can be regenerated from its index alone (a data position is one integer). Every operand pair is
assigned to a split by a CRC of its text, and a generator rejects pairs of the other split, so the train and
eval splits are disjoint by construction, not by luck, and stay disjoint across every variant of the task
(other digits, operations or carries: the split depends on the pair alone).

Variants (train/variants.py parses them): operands of `min_digits`..`digits` digits, and a range of carries
(borrows for '-', see `carries`) enforced by rejection. Without a carry range a problem takes exactly the
random draws it took before variants existed, so the default task is the same problem for problem. Rejection
is bounded (MAX_DRAWS), so a variant that admits (almost) no problem is an error, never a hang.

Rewards parse strictly with a regular expression (never `eval`) and return 0.0 on anything malformed; the
built-in ones return 0.0 or 1.0. A reward function's result must be one finite number (RewardError
otherwise); GRPO clamps it into the phase's [reward_min, reward_max], [0, 1] by default, and logs how often
it had to.
"""
from __future__ import annotations

import math
import numbers
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

OPS = "+-*"
SPLITS = ("train", "eval")
EVAL_FRACTION = 8  # one operand pair in EVAL_FRACTION belongs to the eval split
MAX_DRAWS = 100_000  # operand pairs drawn for one problem before its split and carry range are called empty


@dataclass(frozen=True)
class Problem:
    a: int
    b: int
    op: str

    @property
    def expression(self) -> str:
        return f"{self.a}{self.op}{self.b}"

    @property
    def question(self) -> str:
        return f"What is {self.expression}?"

    @property
    def answer(self) -> int:
        return {"+": self.a + self.b, "-": self.a - self.b, "*": self.a * self.b}[self.op]

    @property
    def final_line(self) -> str:
        return f"Answer: {self.answer}"

    @property
    def worked(self) -> str:
        return ", ".join(_columns(self.a, self.b, self.op)) + ". " + self.final_line

    def messages(self, direct: bool = False) -> list[dict]:
        """The question and its reply: the worked columns, or with `direct` the final line alone."""
        reply = self.final_line if direct else self.worked
        return [{"role": "user", "content": self.question}, {"role": "assistant", "content": reply}]


def _digits(n: int) -> list[int]:
    return [int(c) for c in reversed(str(n))]  # units first


def _columns(a: int, b: int, op: str) -> list[str]:
    """The column steps of the worked answer, units first."""
    da, db, steps, carry = _digits(a), _digits(b), [], 0
    if op == "*":  # b is a single digit
        for x in da:
            steps.append(f"{x}*{b}" + (f"+{carry}" if carry else "") + f"={x * b + carry}")
            carry = (x * b + carry) // 10
        return steps
    for i in range(max(len(da), len(db))):
        x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
        if op == "+":
            s = x + y + carry
            steps.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={s}")
            carry = s // 10
        else:
            x -= carry
            carry = int(x < y)
            steps.append(f"{x + 10 * carry}-{y}={x + 10 * carry - y}")
    if op == "+" and carry:
        steps.append(f"carry {carry}")
    return steps


def carries(a: int, b: int, op: str) -> int:
    """Columns of the worked answer that pass a carry on (for '-': that borrow), units first: for '+' and '*'
    those whose result, incoming carry included, is 10 or more (the last column's too: "carry 1" of '+', the
    two-digit last step of '*'); for '-' those whose digit, less an incoming borrow, is below the subtrahend's."""
    da, db, n, carry = _digits(a), _digits(b), 0, 0
    if op == "*":  # b is a single digit
        for x in da:
            carry = (x * b + carry) // 10
            n += carry > 0
        return n
    for i in range(max(len(da), len(db))):
        x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
        carry = (x + y + carry) // 10 if op == "+" else int(x - carry < y)
        n += carry
    return n


def most_carries(op: str, digits: int) -> int:
    """The most carries a problem of `op` with operands of up to `digits` digits has: 999+999 and 999*9 carry
    in every column, 1000-999 borrows in all but the first (the minuend is the larger)."""
    return digits - 1 if op == "-" else digits


def split_of(a: int, b: int, op: str) -> str:
    return "eval" if zlib.crc32(f"{a}{op}{b}".encode()) % EVAL_FRACTION == 0 else "train"


@dataclass(frozen=True)
class ArithmeticTask:
    digits: int = 3  # operands have min_digits..digits digits (the multiplier of '*' is one digit, 2..9)
    ops: str = "+-"  # which operations appear, a subset of "+-*"
    seed: int = 0
    direct: float = 0.0  # share of chat demonstrations that give the final line alone, without the columns
    min_digits: int = 1  # the fewest digits an operand has
    min_carries: int = 0  # problems have at least this many carries (see `carries`)
    max_carries: int | None = None  # and at most this many (None: no limit)

    def __post_init__(self):
        if not 0 <= self.direct <= 1:
            raise ValueError(f"task direct={self.direct} must be in [0, 1]")
        if not 1 <= self.digits <= 12:
            raise ValueError(f"task digits={self.digits} must be in 1..12")
        if not 1 <= self.min_digits <= self.digits:
            raise ValueError(f"task min_digits={self.min_digits} must be in 1..digits={self.digits}")
        if not self.ops or set(self.ops) - set(OPS):
            raise ValueError(f"task ops={self.ops!r} must be a non-empty subset of {OPS!r}")
        if self.min_carries < 0 or (self.max_carries is not None and self.max_carries < self.min_carries):
            raise ValueError(f"task carries {self.min_carries}..{self.max_carries} is not a range of counts >= 0")
        most = max(most_carries(op, self.digits) for op in self.ops)
        if self.min_carries > most:
            raise ValueError(f"no problem has {self.min_carries} or more carries with ops={self.ops} and operands "
                             f"of up to {self.digits} digits (at most {most})")

    @property
    def filtered(self) -> bool:
        """Whether problems are drawn by rejection on their number of carries."""
        return self.min_carries > 0 or self.max_carries is not None

    def _number(self, rng: random.Random) -> int:
        n_digits = rng.randint(self.min_digits, self.digits)  # uniform over lengths, so short numbers are not rare
        return rng.randint(0 if n_digits == 1 else 10 ** (n_digits - 1), 10**n_digits - 1)

    def _admits(self, a: int, b: int, op: str) -> bool:
        if not self.filtered:
            return True
        n = carries(a, b, op)
        return self.min_carries <= n and (self.max_carries is None or n <= self.max_carries)

    def problem(self, split: str, index: int) -> Problem:
        """Problem `index` of `split`; ValueError when MAX_DRAWS operand pairs hold none of this split and
        carry range (a variant that admits too few problems)."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {SPLITS}")
        rng = random.Random(f"{self.seed}/{split}/{index}")
        for _ in range(MAX_DRAWS):
            op = rng.choice(self.ops)
            a, b = self._number(rng), (rng.randint(2, 9) if op == "*" else self._number(rng))
            if op == "-" and b > a:
                a, b = b, a
            if split_of(a, b, op) == split and self._admits(a, b, op):
                return Problem(a, b, op)
        raise ValueError(f"no {split} problem with ops={self.ops}, {self.min_digits}..{self.digits} digits and "
                         f"{self.min_carries}..{'' if self.max_carries is None else self.max_carries} carries in "
                         f"{MAX_DRAWS} draws: too few problems satisfy it")

    # --------------------------------------------------------------------------------- the three views
    def fact(self, split: str, index: int) -> str:
        """A sentence or two of plain text about a number."""
        rng = random.Random(f"{self.seed}/{split}/fact/{index}")
        n, m = self._number(rng), self._number(rng)
        parity = "even" if n % 2 == 0 else "odd"
        choices = [
            f"{n} is {parity}. The number after {n} is {n + 1}, and the number before it is {n - 1}.",
            f"{n} is {'greater than' if n > m else 'less than' if n < m else 'equal to'} {m}.",
            f"The digits of {n} are {', '.join(str(n))}. Reversed, {n} reads {str(n)[::-1]}.",
            f"Ten more than {n} is {n + 10}. Twice {n} is {2 * n}.",
            f"{n} rounded to the nearest ten is {int(math.floor(n / 10 + 0.5)) * 10}.",
        ]
        return rng.choice(choices)

    def worked_text(self, split: str, index: int) -> str:
        p = self.problem(split, index)
        return f"{p.expression}: {p.worked}"

    def conversation(self, split: str, index: int) -> list[dict]:
        direct = random.Random(f"{self.seed}/{split}/style/{index}").random() < self.direct
        return self.problem(split, index).messages(direct)

    def prompt(self, split: str, index: int) -> tuple[list[dict], str]:
        p = self.problem(split, index)
        return [{"role": "user", "content": p.question}], str(p.answer)

    def widest_prompts(self) -> list[list[dict]]:
        """A prompt of each operation with the widest operands: the longest prompts the task can ask (digits
        are one token each, and the rest of a question is the same text)."""
        top = 10**self.digits - 1
        return [[{"role": "user", "content": Problem(top, 9 if op == "*" else top, op).question}] for op in self.ops]

    def corpus(self, n: int) -> list[str]:
        """Plain training text for the tokenizer: every kind of text the task produces."""
        out = []
        for i in range(n):
            p = self.problem("train", i)
            out += [self.fact("train", i), f"{p.expression}: {p.worked}", p.question]
        return out


# ------------------------------------------------------------------------------------------------ rewards
RewardFn = Callable[[str, str], float]
REWARDS: dict[str, RewardFn] = {}


class RewardError(ValueError):
    """A reward function returned something other than one finite number (printed as one line by the CLI)."""


def checked_reward(fn: RewardFn, completion: str, answer: str) -> float:
    """fn(completion, answer) as a float; RewardError naming the function and the completion when it raises
    or returns anything but one finite number."""
    name = getattr(fn, "__name__", repr(fn))
    try:
        r = fn(completion, answer)
    except Exception as e:  # noqa: BLE001  (a user's function can raise anything; the run stops in one line)
        raise RewardError(f"reward function {name} raised {type(e).__name__}: {e} for completion "
                          f"{completion[:60]!r} (answer {str(answer)[:40]!r})") from None
    if not isinstance(r, numbers.Real) or not math.isfinite(r):  # bools and NumPy floats are Real
        raise RewardError(f"reward function {name} returned {r!r} for completion {completion[:60]!r}; it must "
                          f"return one finite number")
    return float(r)


def register_reward(name, fn: RewardFn | None = None):
    """Register `fn(completion_text, answer) -> float` under `name`; phases pick rewards by name
    (`--grpo.reward=NAME`). Three forms:

        register_reward("name", fn)          # a call
        @register_reward("name")             # a decorator with a name
        @register_reward                     # a decorator, registering the function under its __name__
    """
    if callable(name) and fn is None:  # @register_reward, or register_reward(fn)
        name, fn = getattr(name, "__name__", ""), name
        if not name.isidentifier():
            raise TypeError(f"register_reward({fn!r}) needs a name for a function without one: "
                            f"register_reward('name', fn)")
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_reward: the name must be a non-empty string, got {name!r}")

    def deco(f: RewardFn) -> RewardFn:
        if not callable(f):
            raise TypeError(f"register_reward({name!r}, ...): {f!r} is not callable")
        REWARDS[name] = f
        return f

    return deco if fn is None else deco(fn)


def get_reward(name: str) -> RewardFn:
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; registered: {sorted(REWARDS)}")
    return REWARDS[name]


_FINAL = re.compile(r"Answer: (-?\d{1,24})\s*")
_NUMBER = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*")


@register_reward("arithmetic")
def arithmetic_reward(completion: str, answer: str) -> float:
    """1.0 when the completion ends with exactly one 'Answer: N' and N equals the answer, else 0.0."""
    if not isinstance(completion, str) or completion.count("Answer:") != 1:
        return 0.0
    tail = completion[completion.index("Answer:") :]
    m = _FINAL.fullmatch(tail)
    return float(m is not None and m.group(1) == str(answer).strip())


@register_reward("exact")
def exact_reward(completion: str, answer: str) -> float:
    """1.0 when the completion equals the answer after stripping surrounding whitespace."""
    return float(isinstance(completion, str) and completion.strip() == str(answer).strip())


@register_reward("numeric")
def numeric_reward(completion: str, answer: str) -> float:
    """1.0 when the completion is a single number equal to the answer (within 1e-6 relative)."""
    if not isinstance(completion, str):
        return 0.0
    m, ref = _NUMBER.fullmatch(completion), _NUMBER.fullmatch(str(answer))
    if m is None or ref is None:
        return 0.0
    x, y = float(m.group(1)), float(ref.group(1))
    if not (math.isfinite(x) and math.isfinite(y)):  # hundreds of digits overflow to inf; compare the text
        return float(m.group(1) == ref.group(1))
    return float(abs(x - y) <= 1e-6 * max(1.0, abs(y)))
