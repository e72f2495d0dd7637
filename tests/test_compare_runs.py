"""bench.compare_runs, the step-by-step comparison of a Triton-path and a reference-path training run that the
GPU acceptance script ends with."""
import json

from bench.compare_runs import compare, main, train_losses


def write_run(path, losses, extra=()):
    path.mkdir()
    with open(path / "metrics.jsonl", "w") as f:
        for (phase, step), loss in losses.items():
            f.write(json.dumps({"kind": "train", "phase": phase, "step": step, "loss": loss}) + "\n")
        for rec in extra:
            f.write(json.dumps(rec) + "\n")


A = {("pretrain", 1): 5.0, ("pretrain", 2): 4.0, ("grpo", 3): 0.02}


def test_reads_training_steps_only(tmp_path):
    write_run(tmp_path / "a", A, extra=[{"kind": "eval", "phase": "pretrain", "step": 2, "loss": 9.0}])
    assert train_losses(tmp_path / "a") == A


def test_equal_runs_pass_and_a_drifting_loss_fails():
    assert compare(A, dict(A), rtol=1e-3, phases=None)[1] == []
    drifted = dict(A) | {("pretrain", 2): 4.01}  # 2.5e-3 relative
    problems = compare(A, drifted, rtol=1e-3, phases=None)[1]
    assert len(problems) == 1 and "pretrain step 2" in problems[0]
    assert compare(A, drifted, rtol=5e-3, phases=None)[1] == []


def test_phases_left_out_are_checked_for_steps_and_finiteness_only():
    other_grpo = dict(A) | {("grpo", 3): 0.5}  # sampled completions part ways on a GPU
    assert compare(A, other_grpo, rtol=1e-3, phases={"pretrain"})[1] == []
    assert compare(A, dict(A) | {("grpo", 3): float("nan")}, rtol=1e-3, phases={"pretrain"})[1]
    missing = {k: v for k, v in A.items() if k != ("grpo", 3)}
    assert any("different steps" in p for p in compare(A, missing, rtol=1e-3, phases={"pretrain"})[1])


def test_exit_status(tmp_path):
    write_run(tmp_path / "a", A)
    write_run(tmp_path / "b", dict(A) | {("pretrain", 1): 6.0})
    assert main([str(tmp_path / "a"), str(tmp_path / "a")]) == 0
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert main([str(tmp_path / "a"), str(tmp_path / "nowhere")]) == 2
