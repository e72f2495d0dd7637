"""A whole run on the Triton kernels (interpreted on CPU) matches the same run on the PyTorch references.

Every phase of the default schedule (pretraining, SFT, GRPO with a KL reference) runs for two steps on a tiny
model, once with `model.kernels=triton` and once with `reference`. Both paths compute in fp32; they differ
only in summation order (blocked online softmax, chunked heads), about 1e-6 relative per op. Over six
optimiser steps that drift stays far below the tolerance used here (1e-3 relative on losses, 1e-2 on the
grad norm, whose clipping amplifies nothing at these sizes), while a wrong mask, scale or gradient in any
kernel moves the losses by more than 1e-2 within a step. GRPO rewards are compared exactly: sampling draws
from the same generator, and the logits differ far too little to change a sampled token.
"""
import json
import os

import pytest

from train.config import apply_overrides, load_preset
from train.run import run

TINY = {
    "model.seq_len": "40", "eval_rows": "2", "log_every": "1",
    "task.eval_problems": "2", "task.pass_k": "0", "task.max_new_tokens": "8",
    "grpo.beta": "0.05", "grpo.max_new_tokens": "8",
    **{f"{p}.{k}": v for p in ("pretrain", "sft", "grpo") for k, v in
       (("steps", "2"), ("batch_size", "2"), ("micro_batch_size", "2"))},
}


def train_records(tmp_path, kernels):
    out = str(tmp_path / kernels)
    run(apply_overrides(load_preset("smoke"), TINY | {"out": out, "model.kernels": kernels}))
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == "train"]


def test_triton_run_matches_reference_run(tmp_path):
    ref, tri = train_records(tmp_path, "reference"), train_records(tmp_path, "triton")
    assert [r["step"] for r in ref] == [r["step"] for r in tri] == list(range(1, 7))
    for a, b in zip(ref, tri):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3, abs=1e-6), (a["phase"], a["step"])
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-2, abs=1e-6), (a["phase"], a["step"])
        if a["phase"] == "grpo":
            assert b["reward"] == a["reward"] and b["length"] == a["length"]
            assert b["kl"] == pytest.approx(a["kl"], rel=1e-2, abs=1e-6)
