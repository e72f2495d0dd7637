"""The benchmark tools themselves: the floor checker (bench/check.py), the report (bench/report.py), the
provenance and peak-FLOPs helpers (bench/common.py), and a real bench run's JSON going through both tools.

The checker and the report are fed small synthetic results shaped like pytest-benchmark's JSON, so every
verdict below is known in advance.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import check, report
from bench.common import gpu_slug
from train.hardware import gpu_peak_flops

REPO = Path(__file__).resolve().parent.parent
PROV = {"device": "NVIDIA H100 80GB HBM3", "commit": "abc123", "torch": "2.x", "triton": "3.x",
        "date": "2026-01-01T00:00:00", "timing_meaningful": True}


def bench_row(suite, impl, ms, *, params=None, meaningful=True, **info):
    """One benchmark entry as pytest-benchmark writes it, with the harness's extra_info."""
    params = dict(params or {}, impl=impl)
    group = f"{suite}[{','.join(f'{k}={v}' for k, v in params.items() if k != 'impl')}]"
    return {
        "name": f"test_{suite}[{'-'.join(map(str, params.values()))}]",
        "fullname": f"bench/test_{suite}.py::test_{suite}[{'-'.join(map(str, params.values()))}]",
        "params": params,
        "extra_info": {"suite": suite, "group": group, "impl": impl, "shape": " ".join(
            f"{k}={v}" for k, v in params.items() if k != "impl"), "timing_meaningful": meaningful, **info},
        "stats": {"median": ms / 1e3, "min": ms / 1e3, "mean": ms / 1e3, "rounds": 10},
    }


def write(tmp_path, rows, prov=PROV, name="results.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"benchmarks": rows, "tritium": prov, "machine_info": {}, "commit_info": {}}))
    return str(path)


def floors(tmp_path, rules):
    path = tmp_path / "floors.json"
    path.write_text(json.dumps({"floors": rules}))
    return str(path)


ATTN_RULE = {"suite": "attention", "impl": "triton", "baseline": "sdpa", "floor": 0.8, "where": {"T": ">=1024"}}


def attention_rows(triton_ms_at_4096, meaningful=True):
    rows = []
    for T, tri in ((512, 9.0), (1024, 2.0), (4096, triton_ms_at_4096)):  # T=512 is outside the rule's `where`
        p = {"T": T, "mode": "fwd"}
        rows += [bench_row("attention", "triton", tri, params=p, meaningful=meaningful, **{"TFLOP/s": 100.0 / tri}),
                 bench_row("attention", "sdpa", 2.0, params=p, meaningful=meaningful, **{"TFLOP/s": 50.0})]
    return rows


# ----------------------------------------------------------------------------------------------------------
# bench.check
# ----------------------------------------------------------------------------------------------------------
def test_check_passes_when_every_floor_holds(tmp_path, capsys):
    code = check.main([write(tmp_path, attention_rows(1.0)), "--floors", floors(tmp_path, [ATTN_RULE])])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ok: 2 ratios" in out  # T=1024 (1.0x) and T=4096 (2.0x); T=512 (0.22x) is not judged


def test_check_fails_listing_each_violation(tmp_path, capsys):
    rows = attention_rows(4.0)  # triton 2x slower than sdpa at T=4096: ratio 0.5 < 0.8
    rows += [bench_row("logprobs", "triton", 3.0, params={"N": 8}),
             bench_row("logprobs", "log_softmax_gather", 2.0, params={"N": 8})]  # ratio 0.667 < 1.2
    rules = [ATTN_RULE, {"suite": "logprobs", "impl": "triton", "baseline": "log_softmax_gather", "floor": 1.2}]
    code = check.main([write(tmp_path, rows), "--floors", floors(tmp_path, rules)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "FAIL: 2 of 3 ratios violate their floor" in out
    assert "attention[T=4096,mode=fwd] | ratio 0.500 < floor 0.800" in out
    assert "logprobs[N=8] | ratio 0.667 < floor 1.200" in out
    assert "attention[T=1024" not in out.split("FAIL:")[1]  # the pair that holds is not listed as a violation


def test_check_memory_floor_uses_peak_beyond_inputs(tmp_path, capsys):
    rows = [bench_row("grpo_loss", "fused", 5.0, params={"N": 8192}, peak_GiB=10.5, peak_extra_GiB=0.5),
            bench_row("grpo_loss", "unfused", 4.0, params={"N": 8192}, peak_GiB=11.0, peak_extra_GiB=1.0)]
    rule = {"suite": "grpo_loss", "impl": "fused", "baseline": "unfused", "metric": "memory", "floor": 2.0}
    assert check.main([write(tmp_path, rows), "--floors", floors(tmp_path, [rule])]) == 0  # 1.0 / 0.5 = 2
    rows[1]["extra_info"]["peak_extra_GiB"] = 0.9  # 1.8 < 2 (the totals, 11.0 / 10.5, would not show it)
    assert check.main([write(tmp_path, rows), "--floors", floors(tmp_path, [rule])]) == 1
    assert "ratio 1.800 < floor 2.000" in capsys.readouterr().out


def test_check_never_judges_rows_without_meaningful_timing(tmp_path, capsys):
    cpu = dict(PROV, device="cpu (Triton interpreter)", timing_meaningful=False)
    code = check.main([write(tmp_path, attention_rows(50.0, meaningful=False), prov=cpu),
                       "--floors", floors(tmp_path, [ATTN_RULE])])
    assert code == 0 and "nothing to judge" in capsys.readouterr().out
    # mixed: the slow pair is marked not meaningful and is left out; the rest still passes
    rows = attention_rows(1.0)
    for r in bench_row("attention", "triton", 50.0, params={"T": 8192, "mode": "fwd"}, meaningful=False), \
            bench_row("attention", "sdpa", 2.0, params={"T": 8192, "mode": "fwd"}, meaningful=False):
        rows.append(r)
    assert check.main([write(tmp_path, rows), "--floors", floors(tmp_path, [ATTN_RULE])]) == 0


def test_check_fails_when_a_rule_matches_no_pair(tmp_path, capsys):
    renamed = dict(ATTN_RULE, impl="triton_v2")  # no row has this impl, but the suite has meaningful rows
    code = check.main([write(tmp_path, attention_rows(1.0)), "--floors", floors(tmp_path, [renamed])])
    out = capsys.readouterr().out
    assert code == 1 and "matched no pair" in out, out
    # a suite absent from the run (one bench file run alone) is not a failure
    other = {"suite": "logprobs", "impl": "triton", "baseline": "log_softmax_gather", "floor": 1.2}
    assert check.main([write(tmp_path, attention_rows(1.0)), "--floors", floors(tmp_path, [ATTN_RULE, other])]) == 0


def test_check_rejects_unreadable_input(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"not\": \"benchmarks\"}")
    assert check.main([str(bad), "--floors", floors(tmp_path, [ATTN_RULE])]) == 2
    assert check.main([write(tmp_path, attention_rows(1.0)), "--floors", floors(tmp_path, [{"suite": "x"}])]) == 2
    assert "lacks" in capsys.readouterr().err


def test_where_conditions():
    row = check.to_row(bench_row("attention", "triton", 1.0, params={"T": 2048, "causal": True, "mode": "bwd"}),
                       True)
    assert check.matches(row, {"T": ">=2048", "causal": True, "mode": ["bwd", "fwd+bwd"]})
    assert not check.matches(row, {"T": ">2048"})
    assert not check.matches(row, {"causal": False})
    assert not check.matches(row, {"mode": ["fwd"]})
    assert not check.matches(row, {"missing": ">=1"})


def test_rows_written_without_the_harness_still_pair():
    """A bench file that records no suite/group/impl: they come from the file name and the parameters."""
    raw = {"name": "test_x[37-sdpa-fwd]", "fullname": "bench/test_attention.py::test_x[37-sdpa-fwd]",
           "params": {"T": 37, "backend": "sdpa", "mode": "fwd"}, "extra_info": {}, "stats": {"median": 0.1}}
    row = check.to_row(raw, False)
    assert (row.suite, row.impl, row.group, row.meaningful) == ("attention", "sdpa", "attention[T=37,mode=fwd]",
                                                                False)


def test_interleaved_rounds_are_judged_round_by_round(tmp_path, capsys):
    """Rows that carry the times of interleaved rounds (`round_s`, timed outside pytest-benchmark's loop)
    are judged by the median of the per-round ratios, so a burst of load that slows both steps of some
    rounds does not move the ratio; their time is the median of their rounds, whatever the stats say."""
    ours = [1.0, 1.0, 1.0, 4.0, 4.0]  # the last two rounds ran beside a burst of load, both sides alike
    base = [0.9, 0.9, 0.9, 3.6, 3.6]
    rows = [bench_row("cpu_step", "tritium", 999.0, params={"dims": "default"}, round_s=ours),
            bench_row("cpu_step", "plain_torch", 1.0, params={"dims": "default"}, round_s=base)]
    row = check.to_row(rows[0], True)
    assert row.time_s == 1.0  # the median round, not the stats' 999 ms
    rule = {"suite": "cpu_step", "impl": "tritium", "baseline": "plain_torch", "floor": 0.85}
    [verdict] = check.judge([check.to_row(r, True) for r in rows], [rule])
    assert verdict.ratio == pytest.approx(0.9) and verdict.ok
    assert check.main([write(tmp_path, rows), "--floors", floors(tmp_path, [dict(rule, floor=0.95)])]) == 1
    assert "ratio 0.900 < floor 0.950" in capsys.readouterr().out
    # rows of a CPU run are judged when they say their timing means something (a ratio in one run does)
    cpu = dict(PROV, device="cpu (Triton interpreter)", timing_meaningful=False)
    assert check.main([write(tmp_path, rows, prov=cpu), "--floors", floors(tmp_path, [rule])]) == 0
    assert "ok: 1 ratios" in capsys.readouterr().out


def test_shipped_floors_are_valid_and_name_real_implementations():
    files = {"train_step": "test_train_step.py", "attention": "test_attention.py",
             "cross_entropy": "test_cross_entropy.py", "linear_cross_entropy": "test_cross_entropy.py",
             "logprobs": "test_logprobs.py", "grpo_loss": "test_grpo.py", "cpu_step": "test_cpu_step.py"}
    rules = check.load_floors()
    assert rules
    for rule in rules:
        assert rule["suite"] in files, rule
        source = (REPO / "bench" / files[rule["suite"]]).read_text()
        for impl in (rule["impl"], rule["baseline"]):
            assert f'"{impl}"' in source, f"{check.describe(rule)}: no impl {impl!r} in {files[rule['suite']]}"


# ----------------------------------------------------------------------------------------------------------
# bench.report
# ----------------------------------------------------------------------------------------------------------
def synthetic_run():
    rows = attention_rows(1.0)
    rows += [bench_row("attention", "triton", 1.5, params={"T": T, "mode": "bwd"}, **{"TFLOP/s": 30.0 * T / 1024})
             for T in (512, 1024, 4096)]
    for N in (4096, 8192):
        p = {"N": N, "V": 50304}
        rows += [bench_row("linear_cross_entropy", "triton_fused", 4.0, params=p, peak_GiB=2.0,
                           peak_extra_GiB=0.1 * N / 4096, **{"TFLOP/s": 400.0}),
                 bench_row("linear_cross_entropy", "torch_eager", 2.0, params=p, peak_GiB=9.0, peak_extra_GiB=N / 1024)]
    for phase in ("pretrain", "grpo_rollout"):
        rows += [bench_row("train_step", "triton", 50.0, params={"phase": phase}, phase=phase, MFU=0.4,
                           peak_GiB=20.0, **{"tokens/s": 3.2e5}),
                 bench_row("train_step", "reference", 100.0, params={"phase": phase}, phase=phase,
                           peak_GiB=60.0, **{"tokens/s": 1.6e5})]
    return rows


def test_report_writes_tables_and_plots(tmp_path, capsys):
    out = tmp_path / "rep"
    assert report.main([write(tmp_path, synthetic_run()), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["attention.png", "memory.png", "report.md", "train_step.png"], names
    for png in ("attention.png", "memory.png", "train_step.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    md = (out / "report.md").read_text()
    assert "| device | NVIDIA H100 80GB HBM3 |" in md and "| commit | abc123 |" in md
    for suite in ("## train_step", "## attention", "## linear_cross_entropy"):
        assert suite in md
    assert md.index("## train_step") < md.index("## attention")
    # train_step pretrain: triton 50 ms vs reference 100 ms -> 2.00x; MFU and tokens/s shown
    line = next(ln for ln in md.splitlines() if ln.startswith("| phase=pretrain | triton"))
    assert re.search(r"\| 50 \| 320,000 tokens/s \| 0\.4 \| 20 \| 2\.00 \|", line), line
    # a row with no baseline in its group gets a dash, not a ratio
    bwd = next(ln for ln in md.splitlines() if "mode=bwd" in ln and "T=4096" in ln)
    assert bwd.rstrip().endswith("| — |"), bwd
    assert "![memory](memory.png)" in md


def test_report_of_a_cpu_run_makes_no_claims(tmp_path):
    cpu = dict(PROV, device="cpu (Triton interpreter)", timing_meaningful=False)
    rows = attention_rows(1.0, meaningful=False)
    out = tmp_path / "rep"
    assert report.main([write(tmp_path, rows, prov=cpu), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]
    md = (out / "report.md").read_text()
    assert "Timings are not meaningful" in md and "(smoke)" in md
    assert "TFLOP/s |" not in md.split("## attention")[1].replace("| rate |", "")  # no rate shown


# ----------------------------------------------------------------------------------------------------------
# bench.common, and a real run through both tools
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,flops,slug", [
    ("NVIDIA H100 80GB HBM3", 989e12, "h100-80gb-hbm3"),
    ("NVIDIA H100 PCIe", 756e12, "h100-pcie"),
    ("NVIDIA H200", 989e12, "h200"),
    ("NVIDIA A100-SXM4-80GB", 312e12, "a100-sxm4-80gb"),
    ("NVIDIA GeForce RTX 4090", None, "geforce-rtx-4090"),
])
def test_peak_flops_and_gpu_slug(name, flops, slug):
    assert gpu_peak_flops(name) == flops
    assert gpu_slug(name) == slug


def test_a_real_bench_run_feeds_report_and_check(tmp_path):
    """`pytest bench/... --benchmark-json` writes provenance and harness rows that both tools accept."""
    results = tmp_path / "run.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench/test_logprobs.py", "-k", "8-64",
           f"--benchmark-json={results}"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads(results.read_text())
    assert {"device", "commit", "torch", "triton", "date", "timing_meaningful"} <= set(data["tritium"])
    prov, rows = check.load_results(results)
    assert rows and all(r.suite == "logprobs" and r.impl and r.group.startswith("logprobs[") for r in rows)
    assert {r.impl for r in rows} == {"triton", "log_softmax_gather", "logsumexp"}
    assert all(r.meaningful == prov["timing_meaningful"] for r in rows)
    assert check.main([str(results)]) == 0
    assert report.main([str(results), "--out", str(tmp_path / "rep")]) == 0
    assert "## logprobs" in (tmp_path / "rep" / "report.md").read_text()
