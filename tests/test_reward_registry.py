"""`register_reward`: a call, a decorator with a name, or a bare decorator; anything else fails loudly."""
import pytest

from train.tasks import REWARDS, register_reward


@pytest.fixture(autouse=True)
def restore_registry():
    saved = dict(REWARDS)
    yield
    REWARDS.clear()
    REWARDS.update(saved)


def by_length(completion, answer):
    return float(len(completion) == len(answer))


def test_a_call_registers_and_returns_the_function():
    assert register_reward("length", by_length) is by_length
    assert REWARDS["length"] is by_length


def test_a_decorator_with_a_name():
    @register_reward("length2")
    def reward(completion, answer):
        return 0.0

    assert REWARDS["length2"] is reward


def test_a_bare_decorator_or_a_call_with_the_function_alone_uses_its_name():
    assert register_reward(by_length) is by_length
    assert REWARDS["by_length"] is by_length

    @register_reward
    def exactish(completion, answer):
        return 1.0

    assert REWARDS["exactish"] is exactish


@pytest.mark.parametrize("args,message", [
    ((lambda c, a: 1.0,), "needs a name for a function without one"),
    (("", by_length), "the name must be a non-empty string"),
    ((3, by_length), "the name must be a non-empty string"),
    (("x", "not a function"), "is not callable"),
])
def test_anything_else_is_a_type_error(args, message):
    before = dict(REWARDS)
    with pytest.raises(TypeError, match=message):
        register_reward(*args)
    assert REWARDS == before
