"""python -m train.compare on synthetic run folders: seed repeats grouped as mean ± std, errors in one line."""
import json
import os

import pytest

from train.compare import main


def fake_run(root, name, seed, values, lr=3e-3, finished=True):
    """A run folder with config.json and (when finished) summary.json: phases pretrain and sft."""
    d = root / name
    d.mkdir()
    config = {"preset": "smoke", "seed": seed, "out": str(d), "optim": {"lr": lr}}
    (d / "config.json").write_text(json.dumps({"config": config, "provenance": {}}))
    if finished:
        phases = [{"name": p, "eval": {"sft/loss": v, "drift/dist@pretrain": 0.0 if p == "pretrain" else v / 10}}
                  for p, v in zip(("pretrain", "sft"), values)]
        (d / "summary.json").write_text(json.dumps({"phases": phases, "seconds": 1.0, "out": str(d)}))
    return str(d)


def test_seed_repeats_are_grouped_as_mean_and_std(tmp_path, capsys):
    runs = [fake_run(tmp_path, f"a-s{s}", s, [3.0 + s, 2.0 + s]) for s in range(3)]
    runs.append(fake_run(tmp_path, "b", 0, [4.0, 1.5], lr=1e-3))
    out = tmp_path / "cmp"
    assert main(runs + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == (out / "compare.md").read_text()
    # group a: sft/loss after sft is 2, 3, 4: mean 3, sample std 1; group b is one run
    assert "| sft/loss | 3.0000 ± 1.0000 (n=3) | 1.5000 |" in printed
    assert "| drift/dist@pretrain | 0.0000 ± 0.0000 (n=3) | 0.0000 |" in printed
    assert "| metric | a | b |" in printed  # the label drops the seed suffix and "## after pretrain" in printed and "## after sft" in printed
    assert os.path.getsize(out / "compare.png") > 0


@pytest.mark.parametrize("make, message", [
    (lambda root: str(root / "nope"), "error: {root}/nope: no such run folder"),
    (lambda root: fake_run(root, "half", 0, [], finished=False),
     "error: {root}/half: no summary.json (the run has not finished)"),
])
def test_missing_and_unfinished_runs_are_one_line_errors(tmp_path, capsys, make, message):
    good = fake_run(tmp_path, "good", 0, [1.0, 2.0])
    assert main([good, make(tmp_path), "--out", str(tmp_path / "cmp")]) == 2
    assert capsys.readouterr().err.strip() == message.format(root=tmp_path)
    assert not (tmp_path / "cmp").exists()


def branch_run(root, name, seed, parent, values):
    """A finished run branched from `parent`'s sft checkpoint (config.json holds the absolute path)."""
    d = fake_run(root, name, seed, values)
    saved = json.loads((root / name / "config.json").read_text())
    saved["config"]["init_from"] = os.path.join(parent, "ckpt-000008-sft.pt")
    (root / name / "config.json").write_text(json.dumps(saved))
    return d


def test_branches_of_seed_repeats_are_one_group_and_metrics_filter(tmp_path, capsys):
    parents = [fake_run(tmp_path, f"base-s{s}", s, [1.0, 1.0]) for s in range(2)]
    other = fake_run(tmp_path, "other-s0", 0, [1.0, 1.0], lr=1e-3)
    runs = [branch_run(tmp_path, f"rl-s{s}", s, parents[s], [2.0, 2.0 + 2 * s]) for s in range(2)]
    runs.append(branch_run(tmp_path, "rl-other-s0", 0, other, [5.0, 5.0]))  # another parent: another group
    assert main(runs + ["--out", str(tmp_path / "cmp"), "--metrics=sft/*"]) == 0
    printed = capsys.readouterr().out
    assert "| metric | rl | rl-other |" in printed
    assert "| sft/loss | 3.0000 ± 1.4142 (n=2) | 5.0000 |" in printed
    assert "drift/" not in printed


def test_training_curves_are_averaged_over_repeats_by_step_within_the_phase(tmp_path, capsys):
    runs = []
    for s in range(2):
        d = tmp_path / f"rl-s{s}"
        runs.append(fake_run(tmp_path, d.name, s, [1.0, 1.0]))
        summary = json.loads((d / "summary.json").read_text())
        for phase, steps in zip(summary["phases"], (4, 2)):  # sft is steps 5 and 6 of the run
            phase["steps"] = steps
        (d / "summary.json").write_text(json.dumps(summary))
        records = [{"kind": "train", "phase": "sft", "step": step, "reward": step + s, "loss": 9.0}
                   for step in (5, 6)] + [{"kind": "eval", "phase": "sft", "step": 6, "reward": 100.0}]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(runs + ["--out", str(tmp_path / "cmp"), "--curves=sft/rew*"]) == 0
    printed = capsys.readouterr().out
    # step 1 of sft: rewards 5 and 6 (mean 5.5); step 2: 6 and 7 (6.5); eval records and other keys left out
    assert "| sft/reward | rl | 5.5000 | 6.5000 | 6.0000 |" in printed
    assert "| sft/loss | rl |" not in printed and os.path.getsize(tmp_path / "cmp" / "curves.png") > 0
