"""Benchmark-session hooks: the provenance header, the same provenance in the benchmark JSON, CPU threads.

`pytest bench/ --benchmark-json=out.json` writes pytest-benchmark's JSON with one extra top-level key,
"tritium": the dict of bench.common.provenance() (device, commit, versions, date, peak FLOPs, and whether the
timings mean anything), which bench/report.py heads its tables with and bench/check.py reads.
"""
import pytest
import torch

from bench.common import CUDA, provenance, provenance_line


def pytest_report_header(config):
    return f"tritium bench | {provenance_line(provenance())}"


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["tritium"] = provenance()


@pytest.fixture(scope="package", autouse=True)
def one_cpu_thread():
    """Without CUDA the suites are smoke runs on tiny tensors, where a second intra-op thread only adds
    synchronisation, and on a busy machine makes every small op wait for a core (measured: 37 s instead of
    8 s for the train-step suite beside one other busy process). Restored after bench/, so tests/ keep theirs."""
    if CUDA:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
