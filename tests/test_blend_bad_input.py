"""Bad input to the SFT-RL blends is one `error:` line and exit code 2 at start-up, before any training:
a guided mode without demonstrations, k >= G, a schedule outside its range or malformed, an unknown rule."""
import json

import pytest

from train.cli import main

CASES = {
    "k >= G": (["--grpo.demos=2"], "grpo.demos=2 must be < grpo.group_size=2"),
    "negative k": (["--grpo.demos=-1"], "grpo.demos=-1 must be >= 0"),
    "gamma 0": (["--grpo.demos=1", "--grpo.shaping_gamma=0"], "grpo.shaping_gamma=0.0 must be > 0"),
    "prefix above 1": (["--grpo.prefix=cosine:1.2:0", "--grpo.prefix_rows=1"],
                       "grpo.prefix='cosine:1.2:0': every value must lie in [0, 1]"),
    "prefix below 0": (["--grpo.prefix=const:-0.1", "--grpo.prefix_rows=1"], "every value must lie in [0, 1]"),
    "prefix malformed": (["--grpo.prefix=cosine:0.8", "--grpo.prefix_rows=1"],
                         "grpo.prefix='cosine:0.8' must be const:V, linear:A:B or cosine:A:B"),
    "prefix not a number": (["--grpo.prefix=linear:a:0", "--grpo.prefix_rows=1"], "with numbers"),
    "prefix without rows": (["--grpo.prefix=const:0.5"], "grpo.prefix_rows=0 must be > 0 with grpo.prefix set"),
    "rows without prefix": (["--grpo.prefix_rows=1"], "must be 0 without grpo.prefix"),
    "rows past the group": (["--grpo.demos=1", "--grpo.prefix=const:0.5", "--grpo.prefix_rows=2"],
                            "grpo.prefix_rows=2 must be <= grpo.group_size - grpo.demos = 1"),
    "unknown rule": (["--grpo.aux=sft=0.5", "--grpo.aux_schedule=amft:0.5"], "unknown rule 'amft'"),
    "weight schedule malformed": (["--grpo.aux=sft=0.5", "--grpo.aux_schedule=linear:0.5"],
                                  "must be const:V, linear:A:B or cosine:A:B"),
    "negative weight": (["--grpo.aux=sft=0.5", "--grpo.aux_schedule=linear:0.5:-1"], "must lie in [0, inf]"),
    "srft without W0": (["--grpo.aux=sft=0.5", "--grpo.aux_schedule=srft:x"], "must be srft:W0 with a finite W0"),
    "schedule without aux": (["--grpo.aux_schedule=cosine:0.5:0"], "needs exactly one aux objective"),
}


def error_line(capsys, argv) -> str:
    assert main(["--preset=smoke", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("case", CASES)
def test_bad_blend_option_is_one_error_line(tmp_path, capsys, case):
    argv, message = CASES[case]
    assert message in error_line(capsys, [*argv, f"--out={tmp_path / 'run'}"])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("mode", [["--grpo.demos=1"], ["--grpo.prefix=const:0.5", "--grpo.prefix_rows=1"]])
def test_guided_mode_on_a_file_without_demonstrations(tmp_path, capsys, mode):
    data = tmp_path / "rl.jsonl"
    lines = [{"prompt": f"What is {i}+1?", "answer": i + 1} for i in range(6)]
    lines[2]["demo"] = "3+1=4. Answer: 4"
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    line = error_line(capsys, [*mode, f"--grpo.data={data}", f"--out={tmp_path / 'run'}"])
    assert 'needs a demonstration for every prompt, but 4 of 5 lines' in line and '"demo"' in line


def test_demo_field_must_be_text(tmp_path, capsys):
    data = tmp_path / "rl.jsonl"
    data.write_text("".join(json.dumps({"prompt": "p", "answer": 1, "demo": 7}) + "\n" for _ in range(3)))
    line = error_line(capsys, ["--grpo.demos=1", f"--grpo.data={data}", f"--out={tmp_path / 'run'}"])
    assert '"demo" must be a string' in line
