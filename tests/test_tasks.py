import pytest

from train.tasks import ArithmeticTask, Problem, arithmetic_reward, exact_reward, get_reward, numeric_reward


def test_generation_is_deterministic():
    a, b = ArithmeticTask(digits=4, ops="+-*", seed=3), ArithmeticTask(digits=4, ops="+-*", seed=3)
    assert [a.problem("train", i) for i in range(50)] == [b.problem("train", i) for i in range(50)]
    assert [a.fact("eval", i) for i in range(20)] == [b.fact("eval", i) for i in range(20)]
    c = ArithmeticTask(digits=4, ops="+-*", seed=4)
    assert [a.problem("train", i) for i in range(50)] != [c.problem("train", i) for i in range(50)]


def test_splits_are_disjoint():
    t = ArithmeticTask(digits=2, ops="+-*")  # a small space, so overlap would show up if it were possible
    train = {t.problem("train", i) for i in range(5000)}
    held = {t.problem("eval", i) for i in range(1000)}
    assert len(held) > 50 and not train & held


@pytest.mark.parametrize("a,b,op", [(345, 278, "+"), (7, 865, "+"), (999, 1, "+"), (623, 278, "-"),
                                    (1000, 999, "-"), (5, 5, "-"), (345, 7, "*"), (0, 9, "*")])
def test_worked_answer_is_correct(a, b, op):
    p = Problem(a, b, op)
    assert p.worked.endswith(f"Answer: {p.answer}")
    assert arithmetic_reward(p.worked, str(p.answer)) == 1.0


def test_worked_columns():
    assert Problem(345, 278, "+").worked == "5+8=13, 4+7+1=12, 3+2+1=6. Answer: 623"
    assert Problem(623, 278, "-").worked == "13-8=5, 11-7=4, 5-2=3. Answer: 345"
    assert Problem(345, 7, "*").worked == "5*7=35, 4*7+3=31, 3*7+3=24. Answer: 2415"


def test_direct_share_of_demonstrations():
    """`direct` is the share of conversations answered with the final line alone; each is scored correct, and
    the choice is a function of (seed, split, index) like the problem itself."""
    t = ArithmeticTask(digits=3, direct=0.5, seed=1)
    replies = [t.conversation("train", i)[1]["content"] for i in range(2000)]
    bare = [r for r in replies if "=" not in r]
    assert 900 < len(bare) < 1100  # Binomial(2000, 0.5): ±100 is 4.5 standard deviations
    assert replies == [ArithmeticTask(digits=3, direct=0.5, seed=1).conversation("train", i)[1]["content"]
                       for i in range(2000)]
    for i, r in enumerate(replies[:200]):
        p = t.problem("train", i)
        assert r == (f"Answer: {p.answer}" if r in bare else p.worked) and arithmetic_reward(r, str(p.answer)) == 1.0
    assert all("Answer:" in ArithmeticTask(direct=0.0).conversation("eval", i)[1]["content"] for i in range(100))
    assert all("=" not in ArithmeticTask(direct=1.0).conversation("eval", i)[1]["content"] for i in range(100))


@pytest.mark.parametrize("completion", ["", "Answer:", "Answer: ", "Answer: 62", "Answer: 623 and more",
                                        "Answer: 623. Answer: 623", "answer: 623", "Answer: six", None, 623,
                                        "Answer: 623\x00", "Answer: __import__('os')"])
def test_malformed_answers_score_zero_and_never_raise(completion):
    assert arithmetic_reward(completion, "623") == 0.0


def test_other_rewards():
    assert exact_reward(" yes\n", "yes") == 1.0 and exact_reward("yes!", "yes") == 0.0
    assert numeric_reward("3.50", "3.5") == 1.0 and numeric_reward("3.5 apples", "3.5") == 0.0
    assert numeric_reward("1e9", "1") == 0.0  # strict: no expression or exponent evaluation
    with pytest.raises(ValueError, match="unknown reward"):
        get_reward("nope")


def test_bad_knobs():
    with pytest.raises(ValueError, match="ops"):
        ArithmeticTask(ops="/")
    with pytest.raises(ValueError, match="direct"):
        ArithmeticTask(direct=1.5)
