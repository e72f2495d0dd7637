"""Task variants (train/variants.py, train/tasks.py): their syntax, the carry counter, the digit and carry
ranges they ask for, splits disjoint across them, and the default task drawing exactly the problems it drew
before variants existed."""
import hashlib
import itertools

import pytest

import train.tasks
from train.config import ConfigError, apply_overrides, load_preset
from train.tasks import ArithmeticTask, carries
from train.variants import parse_sets, parse_variant, variant_task

RUN_TASK = ArithmeticTask(digits=3, ops="+-", seed=0, direct=0.5)  # the default preset's task section


def expressions(task, split, n, start=0):
    return [task.problem(split, i).expression for i in range(start, start + n)]


# ------------------------------------------------------------------------------------------------ syntax
def test_a_variant_sets_the_fields_it_names_and_inherits_the_rest():
    assert parse_variant("") == {}
    assert parse_variant("ops=*, digits=1-2 ,direct=0,carries=0-1") == {
        "ops": "*", "min_digits": 1, "digits": 2, "direct": 0.0, "min_carries": 0, "max_carries": 1}
    assert parse_variant("digits=4,carries=3-") == {"min_digits": 4, "digits": 4, "min_carries": 3,
                                                    "max_carries": None}
    assert parse_variant("carries=2") == {"min_carries": 2, "max_carries": 2}
    t = variant_task(RUN_TASK, "ops=-", "--x.task")
    assert (t.ops, t.min_digits, t.digits, t.direct, t.seed, t.filtered) == ("-", 1, 3, 0.5, 0, False)


def test_named_sets_parse_in_order():
    assert parse_sets("") == []
    assert parse_sets("long:digits=4/carry:carries=3-/mul:ops=*") == [
        ("long", "digits=4"), ("carry", "carries=3-"), ("mul", "ops=*")]


# ------------------------------------------------------------------------------------------------ carries
# (a, b, op, carries), each counted by hand on the column algorithm of the worked answer
HAND_CHECKED = [
    (345, 278, "+", 2),  # 5+8=13 carries, 4+7+1=12 carries, 3+2+1=6
    (999, 1, "+", 3),  # every column reaches 10
    (123, 456, "+", 0),
    (7, 865, "+", 1),  # 7+5=12 carries, 0+6+1=7, 0+8=8
    (95, 5, "+", 2),  # 5+5=10, 9+0+1=10: the last one is the "carry 1" step
    (0, 0, "+", 0),
    (623, 278, "-", 2),  # 3<8 borrows, 2-1=1<7 borrows, 5>=2
    (1000, 999, "-", 3),  # every column but the first borrows
    (1000, 1, "-", 3),
    (500, 1, "-", 2),
    (58, 23, "-", 0),
    (10, 1, "-", 1),
    (345, 7, "*", 3),  # 35, 4*7+3=31, 3*7+3=24: every column carries on
    (12, 4, "*", 0),
    (25, 4, "*", 2),  # 20, 2*4+2=10
    (111, 9, "*", 0),
    (5, 2, "*", 1),  # 10
    (0, 9, "*", 0),
]


@pytest.mark.parametrize("a,b,op,want", HAND_CHECKED)
def test_carry_counter_against_hand_checked_problems(a, b, op, want):
    assert carries(a, b, op) == want


def test_carries_match_the_place_value_rule():
    """Column i (units = 0) passes a carry on exactly when the operands cut to their last i+1 digits overflow
    them: a_i + b_i >= 10^(i+1) for '+', a_i < b_i for '-' (a borrow), a_i * b >= 10^(i+1) for '*'. A
    formula that shares nothing with the column loop, over every problem of a wide variant."""
    task = ArithmeticTask(digits=6, ops="+-*", seed=3)
    rule = {"+": lambda x, y, m: x + y >= m, "-": lambda x, y, m: x < y, "*": lambda x, y, m: x * y >= m}
    for i in range(3000):
        p = task.problem("train", i)
        columns = len(str(max(p.a, p.b)))
        cut = [(p.a % 10 ** (k + 1), p.b if p.op == "*" else p.b % 10 ** (k + 1), 10 ** (k + 1)) for k in range(columns)]
        assert carries(p.a, p.b, p.op) == sum(rule[p.op](*c) for c in cut), p.expression


# ------------------------------------------------------------------------------------------------ ranges
def test_operands_have_the_digits_asked_for_the_minimum_included():
    task = variant_task(RUN_TASK, "digits=3-4,ops=+-*", "--x.task")
    lengths = set()
    for i in range(600):
        p = task.problem("train", i)
        operands = (p.a,) if p.op == "*" else (p.a, p.b)  # the multiplier of '*' is one digit, 2..9
        lengths |= {len(str(n)) for n in operands}
        assert p.op != "*" or 2 <= p.b <= 9
    assert lengths == {3, 4}
    exact = variant_task(RUN_TASK, "digits=4", "--x.task")
    assert {len(str(n)) for i in range(200) for n in (exact.problem("eval", i).a, exact.problem("eval", i).b)} == {4}


@pytest.mark.parametrize("spec,low,high", [("carries=0", 0, 0), ("carries=1-2", 1, 2), ("carries=3-", 3, 3),
                                           ("ops=*,carries=2-", 2, 3)])
def test_problems_have_the_carries_asked_for(spec, low, high):
    task = variant_task(RUN_TASK, spec, "--x.task")
    counts = [carries(p.a, p.b, p.op) for p in (task.problem(s, i) for s in ("train", "eval") for i in range(300))]
    assert set(counts) == set(range(low, high + 1))  # every count of the range occurs, and no other


def test_rejection_is_bounded(monkeypatch):
    """A variant whose problems are too rare to draw is an error naming it, not a hang."""
    monkeypatch.setattr(train.tasks, "MAX_DRAWS", 5)
    task = ArithmeticTask(digits=3, min_digits=3, ops="+", min_carries=3)  # about 1 pair in 8 carries 3 times
    with pytest.raises(ValueError, match=r"no (train|eval) problem with ops=\+, 3..3 digits and 3.. carries in 5 "
                                         r"draws: too few problems satisfy it"):
        [task.problem("eval", i) for i in range(50)]
    with pytest.raises(ConfigError, match=r"--sft.task='digits=3,carries=3': no (train|eval) problem"):
        apply_overrides(load_preset("default"), {"sft.task": "digits=3,carries=3"})


# ------------------------------------------------------------------------------------------------ splits
VARIANTS = ["", "digits=1-2", "digits=2", "ops=*,digits=1-2", "carries=1-", "carries=0", "ops=+-*,digits=2-3",
            "digits=1-2,carries=2"]


def test_train_and_eval_splits_are_disjoint_across_every_variant():
    """Phases train on the train split of their variants and every held-out set asks the eval split of its
    own: no problem of one may be a problem of the other, whichever variants they are (small spaces, so
    overlap would show if it were possible)."""
    base = ArithmeticTask(digits=3, ops="+-*", seed=0)
    tasks = [variant_task(base, v, "--x.task") for v in VARIANTS]
    train = set().union(*({t.problem("train", i) for i in range(1500)} for t in tasks))
    held = set().union(*({t.problem("eval", i) for i in range(300)} for t in tasks))
    assert len(held) > 300 and not train & held
    # and the pairs themselves, whatever operation and split a variant drew them for
    assert not {(p.a, p.b, p.op) for p in train} & {(p.a, p.b, p.op) for p in held}


# ------------------------------------------------------------------------------------------------ default
def test_the_default_task_draws_the_problems_it_always_drew():
    """Pinned from the generator before variants existed: the default run, the golden losses and every
    finished run's data position depend on these exact problems."""
    assert expressions(RUN_TASK, "train", 6) == ["66-2", "7+865", "31+6", "7-3", "94+0", "193-27"]
    assert expressions(RUN_TASK, "eval", 4) == ["444-347", "64+87", "2+61", "1+95"]
    other = ArithmeticTask(digits=4, ops="+-*", seed=7)
    assert expressions(other, "train", 6) == ["4682*7", "99+21", "11*8", "9-9", "285*9", "9-6"]
    assert RUN_TASK.fact("train", 3) == "4 is less than 91."
    h = hashlib.sha256()  # 2000 problems, facts and conversations of each split, as the old generator gave them
    for split, i in itertools.product(("train", "eval"), range(2000)):
        for text in (RUN_TASK.problem(split, i).expression, RUN_TASK.fact(split, i),
                     repr(RUN_TASK.conversation(split, i)), other.problem(split, i).expression):
            h.update(text.encode())
    assert h.hexdigest() == "ac000a7662403cf04a26755e9999871778a81dcc86ef9320c73a609cb24ceee5"


def test_a_variant_restating_the_task_section_is_the_same_task():
    same = variant_task(RUN_TASK, "ops=+-,digits=1-3,direct=0.5", "--x.task")
    assert same == RUN_TASK and expressions(same, "train", 50) == expressions(RUN_TASK, "train", 50)


def test_a_phase_variant_changes_only_its_phase(tmp_path):
    from train.phases import build_phases, context
    from train.tokenizer import Tokenizer

    cfg = apply_overrides(load_preset("smoke"), {"sft.task": "ops=*,digits=3,direct=0", "grpo.task": "ops=-"})
    tok = Tokenizer.train(RUN_TASK.corpus(200), vocab_size=300)
    phases = {p.cfg.name: p for p in build_phases(cfg, context(cfg, tok, cfg.task.arithmetic(cfg.seed), str(tmp_path)))}
    sft_docs = [tok.decode(ids) for ids, _ in itertools.islice(phases["sft"].source.docs_from(0), 20)]
    assert all("*" in d and "-" not in d.split("?")[0] for d in sft_docs), sft_docs[:3]
    prompts = [phases["grpo"].source.prompt(i)[0][0]["content"] for i in range(20)]
    assert all("-" in p and "+" not in p for p in prompts), prompts
    pre = [tok.decode(ids) for ids, _ in itertools.islice(phases["pretrain"].source.docs_from(0), 40)]
    assert not any("*" in d for d in pre)  # the run's task (+-) in the phase without a variant
