"""The embedded task is evaluated when the run trains on it (or when asked), not for a run on the user's data."""
import pytest

from train.config import apply_overrides, load_preset
from train.run import run

from tests.helpers import QUICK


@pytest.fixture
def own_text(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("Plain prose about rivers, hills and weather, said many times over. " * 300)
    return {"pretrain.data": str(text), "pretrain2.data": str(text)}


def evaluated(summary) -> set[str]:
    return {k.split("/")[0] for p in summary["phases"] for k in p["eval"]}


def test_a_run_on_the_users_data_alone_evaluates_only_that(tmp_path, own_text):
    summary = run(apply_overrides(load_preset("base-smoke"), QUICK | own_text | {"out": str(tmp_path / "r")}))
    assert evaluated(summary) == {"pretrain", "pretrain2", "drift"}
    drift = {k for p in summary["phases"] for k in p["eval"] if k.startswith("drift/")}
    assert drift == {"drift/dist@pretrain", "drift/dist@pretrain2"}  # no KL on the embedded task's text


def test_the_task_is_evaluated_when_asked(tmp_path, own_text):
    summary = run(apply_overrides(load_preset("base-smoke"), QUICK | own_text | {"out": str(tmp_path / "r"),
                                                                                 "task.evaluate": "always"}))
    assert "task" in evaluated(summary)


def test_the_task_is_evaluated_when_a_phase_trains_on_it(tmp_path, own_text):
    mixed = QUICK | {"pretrain.data": own_text["pretrain.data"], "out": str(tmp_path / "r")}  # pretrain2: embedded
    assert "task" in evaluated(run(apply_overrides(load_preset("base-smoke"), mixed)))
