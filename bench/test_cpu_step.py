"""The CPU train step against plain PyTorch: tritium's whole default step over a nanoGPT-style step of the same
shape, as a ratio of tokens/s measured in the same rounds (bench/cpu_step.py, bench/plain_gpt.py).

    dims      model                                                      rows × T
    default   the default run's: 4 layers, d 128, 4 heads / 2 kv heads   16 × 256 (the pretraining batch)
    6L-d256   6 layers, d 256, 4 heads / 2 kv heads                       8 × 256

tritium's step is `Trainer.train_step` of the default run's pretraining phase (its data drawn ahead on a
thread as in a run, document-masked attention through `model.kernels=auto`, the fused-head loss, the loop's norm, fault
check, clip and AdamW); the plain step is bench/plain_gpt.py's. Both run in fp32 on one thread, as every
suite here does on a CPU (bench/conftest.py): on a shared machine a second intra-op thread makes each
parallel op wait for whichever core is busy elsewhere (one two-thread run on a loaded 2-core machine gave
0.78 by median times and 1.10 by per-round ratios; one-thread runs agree within a few percent). The floors
(bench/floors.json, 0.85) sit 8 points under the lowest of five one-thread runs on that machine (0.93 at
both dims; the highest 1.00 and 1.02) and above what the fp32 reference attention gave (0.64 and 0.81).
Each row records its interleaved rounds (`round_s`), so
`python -m bench.check` judges the per-round ratio against bench/floors.json, on a CPU too: a ratio within
one run means the same on any machine, while the absolute times mean nothing beyond this machine and this
moment. 6L-d256 takes 8 rows, not 16, to keep the suite near 30 s of CI. On CUDA the suite is skipped:
bench/test_train_step.py times the GPU path.

Checked before timing: the two models have the same parameters, shape for shape, hence the same FLOPs per
token; and `auto` runs SDPA on a CPU.
"""
import statistics

import pytest
import torch

from bench.common import CUDA
from bench.cpu_step import interleaved, tritium_step
from bench.plain_gpt import PlainStep
from kernels._dispatch import attention_path
from model.gpt import GPT

DIMS = {"default": {}, "6L-d256": {"model.n_layer": "6", "model.n_embd": "256"}}
ROWS = {"default": 16, "6L-d256": 8}
# (timed, warm-up) interleaved rounds when the results are kept (--benchmark-json: what bench.check reads);
# a plain `pytest` run, which keeps nothing, takes one round of each as a smoke test
ROUNDS = {"default": (9, 2), "6L-d256": (5, 1)}
IMPLS = ["tritium", "plain_torch"]

pytestmark = pytest.mark.skipif(CUDA, reason="the CPU path's benchmark; test_train_step.py times CUDA")


@pytest.fixture(scope="module")
def measured(request):
    """dims -> (tokens per step, {impl: step}, {impl: seconds per round}), each dims measured once."""
    cache = {}

    def get(dims: str):
        if dims not in cache:
            torch.manual_seed(0)
            rows = ROWS[dims]
            cfg, ours = tritium_step(DIMS[dims] | {"pretrain.batch_size": str(rows),
                                                   "pretrain.micro_batch_size": str(rows)})
            plain = PlainStep(cfg.model, cfg.optim, rows)
            check_same_shape(cfg, plain)
            steps = {"tritium": ours, "plain_torch": plain}
            rounds, warmup = ROUNDS[dims] if request.config.getoption("benchmark_json", None) else (1, 0)
            cache[dims] = (rows * cfg.model.seq_len, steps, interleaved(steps, rounds, warmup), cfg)
        return cache[dims]

    return get


def check_same_shape(cfg, plain: PlainStep) -> None:
    ours = sorted(tuple(p.shape) for p in GPT(cfg.model).parameters())
    theirs = sorted(tuple(p.shape) for p in plain.model.parameters())
    assert ours == theirs, f"the baseline's parameters differ from tritium's: {theirs} vs {ours}"
    assert attention_path(cfg.model.kernels, torch.zeros(1)) == "sdpa", "auto does not run SDPA on a CPU"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dims", list(DIMS))
def test_cpu_step(benchmark, measured, dims, impl):
    tokens, steps, rounds, cfg = measured(dims)
    seconds = statistics.median(rounds[impl])
    benchmark.group = "cpu_step"
    m = cfg.model
    benchmark.extra_info.update(
        suite="cpu_step", group=f"cpu_step[dims={dims}]", impl=impl, timing_meaningful=True,
        shape=f"{m.n_layer}L d{m.n_embd} {m.n_head}h/{m.n_kv_head}kv V{m.vocab_size} {ROWS[dims]}x{m.seq_len} "
              f"fp32, {torch.get_num_threads()} thread(s)",
        round_s=rounds[impl], time_s=seconds, tokens=tokens, **{"tokens/s": round(tokens / seconds, 1)},
        baseline="plain_torch: the same shape written nanoGPT's way (bench/plain_gpt.py), same rounds")
    # pytest-benchmark's own table: one more step of this side alone (the rows above are what check/report read)
    benchmark.pedantic(steps[impl], rounds=1, iterations=1, warmup_rounds=0)
