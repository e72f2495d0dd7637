"""Helpers shared by the test files, and the one vocabulary for comparing numbers.

Comparing numbers: one tolerance table (TOLERANCES), `assert_close`, the low-precision judge `assert_lowp`;
the GPU marker is `pytest.mark.gpu`, which tests/conftest.py skips without CUDA. The benchmarks' checks
(bench/test_attention.py) import these from here rather than from a module of bench's own: a benchmark's
check is a test of the kernel at the benchmark's shapes, and one table means it cannot drift looser than the
tests' bound for the same quantity.
"""
import json
import os
import sys
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import train.loop


# ------------------------------------------------------------------------------------------ comparing numbers
@dataclass(frozen=True)
class Tol:
    """|got − want| <= atol + rtol·|want| elementwise; low precision: kernel error <= factor · torch's + floor."""
    atol: float
    rtol: float
    factor: float = 2.0  # assert_lowp: the kernel's error vs fp32 may be this multiple of torch's own ...
    floor: float = 0.0   # ... plus this, for when torch's error is ~0


# dtype -> quantity -> bound. "default" serves every quantity without an entry of its own; an entry of its own
# exists only where a result is known to need a wider bound (and says why) or can be held to a tighter one.
# Unit roundoff: fp64 1.1e-16, fp32 6.0e-8, fp16 4.9e-4, bf16 3.9e-3.
TOLERANCES: dict[torch.dtype, dict[str, Tol]] = {
    torch.float64: {
        # a reduction over <= 1e4 terms loses at most ~log2(1e4) · 1.1e-16 ≈ 1.5e-15 relative: 1e-12 is ~1000x
        "default": Tol(1e-12, 1e-12),
    },
    torch.float32: {
        # the same arithmetic on the same inputs, or results exactly representable (0.5, 2.0, m · 0.1 vs m / 10)
        "exact": Tol(0.0, 0.0),
        # a handful of fp32 operations on O(1) values (hand-computed results, one branch of the clip): a few ulps
        "rounding": Tol(1e-7, 1e-6),
        # a loss, log-prob, advantage, stat or gradient reduced over <= ~1e3 terms in another order than the
        # reference's: ~log2(n) ulps of the largest term, measured <= 1.9e-6 abs (logp, |logp| ~ 20) on CPU
        "default": Tol(1e-6, 1e-6),
        # the entropy H = lse − Σ p·z cancels two terms of size ~20 (3σ logits): its error is that of |z|, not H
        "entropy": Tol(2e-5, 1e-5),
        # dlogits of logp·g + H·h: p·(z − lse + H) cancels the same way, then is scaled by |h| ~ 2
        "entropy_gradient": Tol(1e-5, 1e-4),
        # softmax(QKᵀ)V over up to 4k keys in blocks, and dQ/dK/dV summed over as many blocks; on a GPU fp32 goes
        # through SDPA, whose kernels may reorder further; measured <= 2.4e-6 abs on CPU shapes
        "attention": Tol(1e-4, 1e-4),
        # a vocabulary of up to 131072 summed in tiles (GPU full shapes): log2(131072) · ulp(lse ~ 12) ≈ 2e-5
        "cross_entropy": Tol(2e-5, 2e-5),
        # GPU full shapes, V = 50257 .. 131072 logits of size ~4σ: the reference's log-softmax and the kernel's
        # tiled online lse each lose ~log2(V) ulps of |z| ~ 16, i.e. ~2e-5; the gradient p − onehot in [−1, 1]
        "logprobs_full_vocab": Tol(6.4e-5, 1e-5),
        "entropy_full_vocab": Tol(1e-4, 1e-5),
        "gradient_full_vocab": Tol(1e-6, 1e-4),
        # hidden @ Wᵀ with d = 2048: cuBLAS and the kernel's chunks sum 2048 products in different orders
        "head_matmul": Tol(1e-3, 1e-4),
        "head_matmul_gradient": Tol(1e-3, 1e-3),
    },
    torch.float16: {
        # 11-bit mantissa: 2e-3 is ~4 roundings of an O(1) value
        "default": Tol(2e-3, 2e-3, floor=1e-7),
        # P rounded to fp16 before P·V (as FlashAttention does), then sums over the keys; factor 3 against
        # SDPA's own fp16 error, with a floor for shapes where SDPA happens to round luckily
        "attention": Tol(2e-2, 2e-2, factor=3.0, floor=1e-3),
    },
    torch.bfloat16: {
        # 8-bit mantissa: 2e-2 is ~5 roundings of an O(1) value (a bf16 matmul, then fp32 math)
        "default": Tol(2e-2, 2e-2, floor=1e-7),
        # P in bf16 before P·V; decode splits sum partial outputs rounded to bf16
        "attention": Tol(6e-2, 6e-2, factor=3.0, floor=8e-3),
        # the forward output alone against SDPA's in bf16 (bench/test_attention.py): no split sums, no gradients
        "attention_output": Tol(2e-2, 2e-2),
    },
}


def tolerance(dtype: torch.dtype, quantity: str = "default") -> Tol:
    """The bound for `quantity` computed in `dtype`: its own entry, else the dtype's default."""
    table = TOLERANCES[dtype]
    return table.get(quantity, table["default"])


def assert_close(got, want, dtype: torch.dtype, name: str, quantity: str = "default") -> None:
    """|got − want| <= atol + rtol·|want| everywhere, with the bound of (dtype, quantity) in TOLERANCES; NaN
    fails. Compared in fp64 on the CPU. The message names the quantity, counts the elements over, and gives the
    worst one's index and values, the largest absolute and relative errors, and the bound."""
    tol = tolerance(dtype, quantity)
    got, want = torch.as_tensor(got).detach().double().cpu(), torch.as_tensor(want).detach().double().cpu()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    diff = (got - want).abs()
    bad = ~(diff <= tol.atol + tol.rtol * want.abs())  # NaN counts as bad
    if bad.any():
        over = torch.where(bad, diff.nan_to_num(float("inf")), -1.0).flatten()
        worst = over.argmax().item()
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), got.shape)) if got.dim() else ()
        rel = torch.where(diff > 0, diff / want.abs(), 0.0).nan_to_num(float("inf")).max().item()  # x/0 = inf
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.numel()} elements differ; worst at {where}: got "
            f"{got.flatten()[worst].item():.6g}, want {want.flatten()[worst].item():.6g}; max abs error "
            f"{diff.nan_to_num(float('inf')).max().item():.3g}, max rel error {rel:.3g}; bound "
            f"atol {tol.atol:g} + rtol {tol.rtol:g}·|want| ({str(dtype).removeprefix('torch.')} {quantity})")


def assert_lowp(got, torch_lowp, want_fp32, dtype: torch.dtype, name: str, quantity: str = "default") -> None:
    """Low precision judged three ways against fp32: (1) the kernel's max error vs the fp32 truth, (2) torch's
    own max error in `dtype` vs the same truth, (3) (1) <= factor · (2) + floor, from TOLERANCES."""
    tol = tolerance(dtype, quantity)
    got, torch_lowp, want = (t.detach().double().cpu() for t in (got, torch_lowp, want_fp32))
    assert torch.isfinite(got).all(), f"{name}: {int((~torch.isfinite(got)).sum())} non-finite elements"
    err = (got - want).abs()
    err_kernel, err_torch = err.max().item(), (torch_lowp - want).abs().max().item()
    bound = tol.factor * err_torch + tol.floor
    if err_kernel > bound:
        worst = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape)) if err.dim() else ()
        raise AssertionError(
            f"{name}: kernel max |err| vs fp32 {err_kernel:.3g} (at {worst}) > {tol.factor} x torch's own "
            f"{str(dtype).removeprefix('torch.')} error {err_torch:.3g} + {tol.floor:g}; {int((err > bound).sum())} "
            f"of {err.numel()} elements over")


class LargestAllocation(TorchDispatchMode):
    """Records the largest tensor (in bytes) any torch op produces, and which op and shape it was: every
    allocation goes through one. The interpreter's own copies of kernel arguments (their storage viewed as
    bytes) are counted too."""

    def __init__(self):
        super().__init__()
        self.largest, self.where = 0, "nothing"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() * t.element_size() > self.largest:
                self.largest = t.numel() * t.element_size()
                self.where = f"{func} -> {t.dtype} {tuple(t.shape)}"
        return out


def interrupt_at(monkeypatch, step: int) -> None:
    """Ctrl-C (a KeyboardInterrupt, as a second Ctrl-C gives) before step `step` + 1 of the next run."""
    original = train.loop.Trainer.train_step

    def train_step(self, phase):
        if self.step == step:
            raise KeyboardInterrupt
        return original(self, phase)

    monkeypatch.setattr(train.loop.Trainer, "train_step", train_step)


# -------------------------------------------------------------------------------- whole runs
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# smoke, with a pretraining phase long enough for a signal to land inside it and minimal evaluation; GRPO
# reuses each rollout batch twice (mu=2) and keeps a reference (beta > 0), so its state is all in a checkpoint.
# One thread, in this process and in subprocesses alike: a thread count can change how matmuls sum, and runs
# in and out of this process are compared exactly.
RUN = {"task.eval_problems": "2", "task.pass_k": "0", "eval_rows": "2", "log_every": "1", "pretrain.steps": "10",
       "grpo.mu": "2", "grpo.beta": "0.1", "threads": "1"}
PRETRAIN_END = 10  # smoke's phases: pretrain (set above), then 4 steps of sft and 4 of grpo
PHASE_ENDS = (PRETRAIN_END, PRETRAIN_END + 4, PRETRAIN_END + 8)
# the least evaluation a run can do, on one thread (RUN says why); tests add what they need: QUICK | {...}
QUICK = {"task.eval_problems": "2", "task.pass_k": "0", "eval_rows": "2", "log_every": "1", "threads": "1"}
TIMING = {"ms", "tok_s", "mfu", "rollout_s", "rollout_tok_s", "seconds"}


def cli(*args: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "train.py"), *args]


def options(overrides: dict) -> list[str]:
    return [f"--{k}={v}" for k, v in overrides.items()]


def assert_same_run(a: str, b: str) -> None:
    """Every logged metric and the summary of run folders a and b agree exactly, timings aside."""
    def records(d):
        with open(os.path.join(d, "metrics.jsonl")) as f:
            return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]

    def phases(d):
        with open(os.path.join(d, "summary.json")) as f:
            return [{k: v for k, v in p.items() if k not in TIMING} for p in json.load(f)["phases"]]

    ra, rb = records(a), records(b)
    assert [(r["kind"], r["step"]) for r in ra] == [(r["kind"], r["step"]) for r in rb]
    for x, y in zip(ra, rb):
        assert x == y, (x["step"], {k: (x.get(k), y.get(k)) for k in set(x) | set(y) if x.get(k) != y.get(k)})
    assert phases(a) == phases(b)


class Payload:
    """Pickles as a call to os.system: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)
