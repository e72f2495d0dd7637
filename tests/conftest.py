"""Fixtures shared by the test files (plain helpers live in tests/helpers.py)."""
import pytest
import torch

from tests.helpers import RUN
from train.config import apply_overrides, load_preset
from train.run import run
from train.tasks import ArithmeticTask
from train.tokenizer import Tokenizer


@pytest.fixture(scope="module", autouse=True)
def keep_torch_threads():
    """Runs set torch's thread count for the whole process (`threads`); the next test file gets it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def straight(tmp_path_factory):
    """The uninterrupted run (smoke with RUN) that interrupted and resumed ones must reproduce: one per session,
    shared by the signal and bad-input tests. Session fixtures start before the module's keep_torch_threads,
    so this one puts the thread count back itself."""
    threads = torch.get_num_threads()
    out = str(tmp_path_factory.mktemp("straight") / "run")
    run(apply_overrides(load_preset("smoke"), RUN | {"out": out}))
    torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def tok():
    """A small BPE tokenizer trained on arithmetic problems (vocab 300), for tests that need real token ids."""
    return Tokenizer.train(ArithmeticTask(digits=2).corpus(100), vocab_size=300)


def pytest_collection_modifyitems(config, items):
    """The one GPU marker: a test marked `gpu` (pyproject.toml) is skipped where CUDA is not available."""
    if torch.cuda.is_available():
        return
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))
