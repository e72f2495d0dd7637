"""Named held-out sets (`--eval.sets`) and task variants in whole runs: rows of the phase × held-out table,
one-line errors before any training step, resume and data parallelism with a variant and a data budget."""
import json
import os

import matplotlib
import pytest

import train.phases
from train.cli import main
from train.config import apply_overrides, load_preset
from train.report import eval_figure, eval_groups, print_summary
from train.run import run
from train.tasks import carries, split_of

from tests.helpers import QUICK as QUICK_RUN, interrupt_at
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tests.test_distributed import CFG, assert_same_run, dense_reward, metrics, two_ranks  # noqa: F401

QUICK = QUICK_RUN | {"task.eval_problems": "3", "task.pass_k": "2"}
SETS = "long:digits=4/carry:carries=2-/mul:ops=*"  # smoke's task section: digits=2, ops=+-
VARIANT = {"sft.task": "ops=*,digits=1-2,direct=0,carries=1-", "grpo.task": "ops=-,digits=2", "sft.examples": "3",
           "pretrain.examples": "5", "grpo.examples": "2"}
TIMING = {"ms", "tok_s", "mfu", "rollout_s", "rollout_tok_s", "seconds"}


# ------------------------------------------------------------------------------------------------ a run
def test_a_smoke_run_with_a_variant_and_named_sets_reports_each_set(tmp_path, capsys):
    out = tmp_path / "run"
    summary = run(apply_overrides(load_preset("smoke"), QUICK | VARIANT | {"eval.sets": SETS, "out": str(out)}))
    with open(out / "summary.json") as f:
        assert json.load(f)["phases"] == summary["phases"]
    for phase in summary["phases"]:  # every set after every phase, beside the phases' own sets and task/
        groups = dict(eval_groups([phase]))
        assert list(groups) == ["pretrain", "sft", "task", "long", "carry", "mul", "drift"]
        for name in ("task", "long", "carry", "mul"):
            assert groups[name] == [f"{name}/{m}" for m in ("accuracy", "entropy", "length", "pass@1", "pass@2",
                                                            "sampled")]
    evals = [r for r in map(json.loads, open(out / "metrics.jsonl")) if r["kind"] == "eval"]
    assert len(evals) == 3 and all("mul/pass@2" in r for r in evals)
    text = capsys.readouterr().out
    assert "| long/accuracy " in text and "\nmul/sampled " in text
    assert os.path.isfile(out / "eval.png")
    config = json.load(open(out / "config.json"))["config"]
    assert config["eval"] == {"sets": SETS} and config["phases"][1]["task"] == VARIANT["sft.task"]


def test_a_sets_problems_are_held_out_problems_of_its_variant(tmp_path, monkeypatch):
    """Problems come from the eval split, satisfy the set's variant, and prompts of never-trained lengths
    fit the context and the byte-level tokenizer."""
    asked = {}

    def recording(model, tok, problems, reward, **kw):
        asked[len(asked)] = problems
        return {"accuracy": 0.0}

    monkeypatch.setattr(train.phases, "task_accuracy", recording)
    cfg = apply_overrides(load_preset("smoke"), QUICK | {"eval.sets": "long:digits=4/carry:ops=+,carries=2-",
                                                         "task.eval_problems": "40"})
    from train.run import build_tokenizer

    task = cfg.task.arithmetic(cfg.seed)
    tok = build_tokenizer(cfg, task)
    evals = train.phases.task_evals(cfg, train.phases.context(cfg, tok, task, str(tmp_path)))
    assert list(evals) == ["task", "long", "carry"]
    for fn in evals.values():
        fn(None)
    _, long, carry = asked.values()
    for problems, ok in ((long, lambda a, b, op: len(str(a)) == len(str(b)) == 4),
                         (carry, lambda a, b, op: op == "+" and carries(a, b, op) == 2)):
        assert len(problems) == 40
        for messages, answer in problems:
            a, op, b = _operands(messages[0]["content"])
            assert ok(a, b, op) and split_of(a, b, op) == "eval"
            assert tok.decode(tok.render_prompt(messages)).endswith(messages[0]["content"] + "<|end|><|assistant|>")


def _operands(question: str) -> tuple[int, str, int]:
    expr = question.removeprefix("What is ").removesuffix("?")
    op = next(c for c in "+-*" if c in expr[1:])
    a, _, b = expr.partition(op)
    return int(a), op, int(b)


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("option,message", [
    ("--sft.task=size=3", "error: --sft.task='size=3': unknown key 'size'; the keys are ops, digits, direct, carries"),
    ("--sft.task=carries=3-1", "error: --sft.task='carries=3-1': carries='3-1' is an empty range (MIN-MAX with "
                               "MIN <= MAX)"),
    ("--sft.task=digits=2-", "error: --sft.task='digits=2-': digits='2-' must be N or MIN-MAX with whole numbers"),
    ("--grpo.task=ops=", "error: --grpo.task='ops=': ops='' must be a non-empty subset of '+-*'"),
    ("--grpo.task=ops=/", "error: --grpo.task='ops=/': ops='/' must be a non-empty subset of '+-*'"),
    ("--sft.task=digits=13", "error: --sft.task='digits=13': digits='13' must lie within 1..12"),
    ("--sft.task=digits=0-2", "error: --sft.task='digits=0-2': digits='0-2' must lie within 1..12"),
    ("--sft.task=carries=4", "error: --sft.task='carries=4': no problem has 4 or more carries with ops=+- and "
                             "operands of up to 2 digits (at most 2)"),
    ("--pretrain.task=ops=-,digits=1,carries=1-", "error: --pretrain.task='ops=-,digits=1,carries=1-': no problem "
                                                  "has 1 or more carries with ops=- and operands of up to 1 digits "
                                                  "(at most 0)"),
    ("--sft.examples=-2", "error: sft.examples=-2 must be >= 0"),
    ("--eval.sets=long", "error: --eval.sets='long': entry 'long' must be NAME:VARIANT with a name of letters, "
                         "digits, _ or - and a variant"),
    ("--eval.sets=long:digits=4;mul:ops=*", "error: --eval.sets: set long ('digits=4;mul:ops=*'): digits='4;mul:ops"),
    ("--eval.sets=long:digits=20", "error: --eval.sets: set long ('digits=20'): digits='20' must lie within 1..12"),
    ("--eval.sets=sft:ops=*", "error: --eval.sets: the set name 'sft' is taken by a phase; choose another"),
    ("--eval.sets=a:ops=*/a:ops=+", "error: --eval.sets='a:ops=*/a:ops=+': the set name 'a' is given twice"),
    ("--eval.sets=c:carries=3-", "error: --eval.sets: set c ('carries=3-'): no problem has 3 or more carries"),
    ("--grpo.task=digits=12 --grpo.max_new_tokens=100", "error: grpo.max_new_tokens=100 does not fit: the task's "
                                                        "prompts take up to "),  # fits the run's 2 digits
    ("--eval.sets=long:digits=12 --task.max_new_tokens=110", "error: task.max_new_tokens=110 does not fit: "
                                                             "--eval.sets: set long ('digits=12'): its prompts take "
                                                             "up to "),
])
def test_bad_variants_sets_and_budgets_are_one_line_errors_before_training(tmp_path, capsys, option, message):
    out = tmp_path / "run"
    assert main(["--preset=smoke", f"--out={out}", *option.split()]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err, err
    assert not os.path.exists(out / "metrics.jsonl")  # no training step ran


def test_a_variant_on_a_users_file_is_an_error(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("words " * 500)
    assert main(["--preset=smoke", f"--pretrain.data={text}", "--pretrain.task=ops=*"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --pretrain.task='ops=*': a task variant shapes embedded data, and phase pretrain trains on {text}; "
        f"drop it or set --pretrain.data=embedded")


def test_help_names_the_new_options(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--eval.sets=" in text and "NAME:VARIANT joined by '/'" in text
    assert "--sft.task=" in text and "--sft.examples=0" in text


# ------------------------------------------------------------------------------------------------ report
def test_the_table_and_the_plot_group_rows_by_held_out_set(capsys):
    phase = {"steps": 1, "tokens": 1, "seconds": 1.0, "tok_s": 1.0, "final_loss": 1.0,
             "eval": {"sft/loss": 1.0, "task/accuracy": 0.5, "task/length": 3.0, "long/accuracy": 0.1,
                      "long/pass@2": 0.2, "long/length": 9.0}}
    summary = {"phases": [phase | {"name": "sft"}, phase | {"name": "grpo"}], "seconds": 2.0, "out": "x"}
    assert eval_groups(summary["phases"]) == [("sft", ["sft/loss"]), ("task", ["task/accuracy", "task/length"]),
                                              ("long", ["long/accuracy", "long/length", "long/pass@2"])]
    print_summary(summary)
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines() if "/" in line.split(" ")[0]]
    assert rows == ["sft/loss", "task/accuracy", "task/length", "long/accuracy", "long/length", "long/pass@2"]
    fig = eval_figure(summary)
    assert len(fig.axes) == 3 * 3  # a row of panels per set, as wide as the widest set
    grid = [[ax.get_title() if ax.get_visible() else "" for ax in fig.axes[r * 3:(r + 1) * 3]] for r in range(3)]
    assert grid == [["sft/loss", "", ""], ["task/accuracy", "task/length", ""],
                    ["long/accuracy", "long/length", "long/pass@2"]]
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ resume
def records(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("straight") / "run")
    run(apply_overrides(load_preset("smoke"), QUICK | VARIANT | {"out": out, "ckpt_every": "2", "grpo.mu": "2",
                                                                 "eval.sets": "mul:ops=*"}))
    return out


@pytest.mark.parametrize("stop", [7, 11])  # mid-SFT (checkpoint at 6), mid-GRPO (checkpoint at 10)
def test_resume_mid_phase_with_a_variant_and_a_budget_matches_the_uninterrupted_run(tmp_path, monkeypatch,
                                                                                     straight, stop):
    out = str(tmp_path / "run")
    cfg = apply_overrides(load_preset("smoke"), QUICK | VARIANT | {"out": out, "ckpt_every": "2", "grpo.mu": "2",
                                                                   "eval.sets": "mul:ops=*"})
    with monkeypatch.context() as m:
        interrupt_at(m, stop)
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
    run(resume=out)
    want, got = records(straight), records(out)
    assert [(r["kind"], r["step"]) for r in want] == [(r["kind"], r["step"]) for r in got]
    for a, b in zip(want, got):
        assert a == b, (a["step"], {k for k in a if a[k] != b.get(k)})


# ------------------------------------------------------------------------------------------------ ranks
def test_two_ranks_match_one_process_with_a_variant_and_a_budget(tmp_path, dense_reward):  # noqa: F811
    options = CFG | VARIANT | {"eval.sets": "mul:ops=*", "ckpt_every": "0"}
    one, two = tmp_path / "one", tmp_path / "two"
    run(apply_overrides(load_preset("smoke"), options | {"out": str(one)}))
    two_ranks(apply_overrides(load_preset("smoke"), options | {"out": str(two)}))
    want = metrics(one)
    assert any("mul/accuracy" in r for r in want)
    assert_same_run(want, metrics(two))
