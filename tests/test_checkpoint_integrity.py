"""Checkpoint files: rotation, truncated or corrupt files (the previous one is used), pickled code refused,
RNG states through a weights-only load, and an identity check that names what differs."""
import io
import os
import pickle
import random

import numpy as np
import pytest
import torch

from model.gpt import GPTConfig
from tests.helpers import Payload
from train import checkpoint
from train.checkpoint import CheckpointError


def test_checkpoints_rotate_keeping_the_last_k_and_every_phase_end(tmp_path):
    d = str(tmp_path)
    for step in range(1, 8):
        checkpoint.save(d, {"step": step}, keep=2, phase_end="pretrain" if step == 3 else None)
    names = lambda: sorted(f for f in os.listdir(d))  # noqa: E731
    assert names() == ["ckpt-000003-pretrain.pt", "ckpt-000006.pt", "ckpt-000007.pt"]
    # a run resumed from step 4 (say 5..7 would not load) drops what lies past it; a crash's .tmp goes too
    (tmp_path / "ckpt-000008.pt.tmp").write_bytes(b"partial")
    checkpoint.save(d, {"step": 5}, keep=2)
    assert names() == ["ckpt-000003-pretrain.pt", "ckpt-000005.pt"]
    assert checkpoint.load(d)["step"] == 5


def test_truncated_checkpoint_is_detected_and_the_previous_one_used(tmp_path, capsys):
    d = str(tmp_path)
    for step in (1, 2):
        checkpoint.save(d, {"step": step, "w": torch.arange(1000.0) * step})
    newest = tmp_path / "ckpt-000002.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # cut short, as by a full disk
    state = checkpoint.load(d)
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(1000.0))
    warning = capsys.readouterr().err.strip()
    assert warning.startswith(f"warning: checkpoint {newest} is unreadable") and "\n" not in warning
    assert warning.endswith(f"falling back to {tmp_path / 'ckpt-000001.pt'}")

    # damaged in other ways: random bytes, a bare pickle, flipped bits (which may also miss what matters)
    rng, older = random.Random(0), tmp_path / "ckpt-000001.pt"
    for case in range(60):
        newest.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))) if case % 3 == 0 else
                           pickle.dumps({"step": 2}, protocol=2) if case % 3 == 1 else
                           bytes(b ^ rng.randrange(256) if rng.random() < 0.02 else b for b in older.read_bytes()))
        fell_back = checkpoint.load(d)["loaded_from"] == str(older)
        assert fell_back == ("is unreadable" in capsys.readouterr().err) and (fell_back or case % 3 == 2)

    newest.write_bytes(b"")
    (tmp_path / "ckpt-000001.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint in .*: all 2 are truncated or corrupt"):
        checkpoint.load(d)


def test_a_checkpoint_holding_a_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"step": 1, "model": {}, "x": Payload(marker)}, tmp_path / "ckpt-000001.pt")
    with pytest.raises(CheckpointError, match=r"holds pickled objects other than tensors and plain data "
                                              r"\(posix\.system\); refusing to load it"):
        checkpoint.load(str(tmp_path))
    assert not marker.exists()


def test_rng_states_survive_a_weights_only_load():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    buf = io.BytesIO()
    torch.save(checkpoint.rng_state(), buf)
    expected = (random.random(), np.random.rand(), torch.rand(()))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    checkpoint.set_rng_state(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(())) == expected


def test_identity_names_what_differs():
    tok_a, tok_b = '{"ranks": [1]}', '{"ranks": [2]}'
    saved = {"identity": checkpoint.identity(GPTConfig(n_embd=64), tok_a)}
    checkpoint.check_identity(saved, checkpoint.identity(GPTConfig(n_embd=64, kernels="sdpa"), tok_a), "c.pt")
    with pytest.raises(CheckpointError, match="c.pt is for a different model: n_embd is 64 in the checkpoint but "
                                              "128 here"):
        checkpoint.check_identity(saved, checkpoint.identity(GPTConfig(n_embd=128), tok_a), "c.pt")
    with pytest.raises(CheckpointError, match="c.pt was trained with a different tokenizer"):
        checkpoint.check_identity(saved, checkpoint.identity(GPTConfig(n_embd=64), tok_b), "c.pt")
