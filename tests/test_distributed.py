"""Data parallel training on CPU: two gloo processes train the steps one process trains on the same global
batch, and checkpoints move between world sizes."""
import json
import os
import signal
import socket

import pytest
import torch
import torch.multiprocessing as mp

import train.loop
from model.gpt import GPT, GPTConfig
from model.sampler import generate, sample_next
from train.cli import main
from train.config import ConfigError, apply_overrides, load_preset
from train.distributed import init
from train.loop import Interrupted
from train.phases import check_batch_layout
from train.run import run
from train.tasks import REWARDS, register_reward


def digit_share(completion: str, answer: str) -> float:
    """A dense reward: an untrained model's completions in a group then score differently, so GRPO steps
    have non-zero advantages, losses and gradients to compare (the arithmetic reward gives them all 0)."""
    return sum(c.isdigit() for c in completion) / max(len(completion), 1)


@pytest.fixture(scope="module")
def dense_reward():
    """`digit_share`, registered while this module runs only (other tests list the registered rewards)."""
    register_reward("digit-share")(digit_share)
    yield
    REWARDS.pop("digit-share")


# micro_batch_size 1: each of 2 ranks accumulates 2 micro-batches (one under no_sync) where 1 process
# accumulates 4; GRPO with a KL reference, two passes per rollout batch and an LR that moves the policy
CFG = {"threads": "1", "log_every": "1", "task.eval_problems": "4", "task.pass_k": "0", "ckpt_every": "9",
       "pretrain.micro_batch_size": "1", "sft.micro_batch_size": "1", "grpo.micro_batch_size": "1",
       "grpo.mu": "2", "grpo.beta": "0.1", "grpo.reward": "digit-share", "grpo.lr_scale": "1"}
STOP_AFTER = 9  # step 9 is the first pass over a rollout batch: its checkpoint holds the batch for the second
TIMING = {"ms", "tok_s", "mfu", "rollout_s", "rollout_tok_s"}
# Ranks add their gradients in another order than one process accumulating micro-batches ((g0+g1)+(g2+g3)
# against ((g0+g1)+g2)+g3), and metrics likewise: fp32 rounding, about 1e-7 relative per step, which a dozen
# AdamW steps of a tiny model carry to the losses without amplifying much (measured: at most 6e-7). A GRPO
# loss is a sum of O(1) terms (advantage × ratio) that cancel to near 0, so its rounding is absolute, a few
# fp32 eps (measured: 4e-8): hence ATOL. Both bounds leave a margin of 10-20 over what was measured, while a
# wrong count (a factor of 2 in a normaliser or the gradient norm) or a lost micro-batch is off by percents.
RTOL, ATOL = 1e-5, 1e-6


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def assert_same_run(want, got):
    assert [(r["kind"], r["step"]) for r in want] == [(r["kind"], r["step"]) for r in got]
    for a, b in zip(want, got):
        assert set(a) == set(b), (a["step"], set(a) ^ set(b))
        for key in set(a) - TIMING:
            if isinstance(a[key], float):
                assert b[key] == pytest.approx(a[key], rel=RTOL, abs=ATOL), (a["kind"], a["step"], key, a[key], b[key])
            else:
                assert a[key] == b[key], (a["step"], key)


def sigterm_after(patch, step, rank):
    """As if a SIGTERM reached process `rank` alone during step `step`: every rank must stop after it."""
    original = train.loop.Trainer.train_step

    def train_step(self, phase):
        record = original(self, phase)
        if self.step == step and self.dist.rank == rank:
            self.stop.signum = signal.SIGTERM
        return record

    patch(train.loop.Trainer, "train_step", train_step)


def _rank(rank, world, port, cfg, resume, stop_after):
    """One process of a torchrun-like job: the environment torchrun would give it, then the CLI's run."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    signal.alarm(300)  # a deadlock between the ranks kills them and fails the test instead of hanging the suite
    register_reward("digit-share")(digit_share)
    if stop_after:
        sigterm_after(setattr, stop_after, rank=1)
    try:
        run(cfg, resume)
    except Interrupted:
        pass


def two_ranks(cfg=None, resume=None, stop_after=0):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(2, port, cfg, resume, stop_after), nprocs=2)


def config(out):
    return apply_overrides(load_preset("smoke"), CFG | {"out": str(out)})


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, dense_reward):
    out = tmp_path_factory.mktemp("one")
    run(config(out))
    lines = metrics(out)
    grpo = [r for r in lines if r.get("phase") == "grpo" and r["kind"] == "train"]
    # the comparison means something only if GRPO steps move the model
    assert all(r["zero_std"] < 1 for r in grpo) and any(r["kl"] > 0 and abs(r["loss"]) > 1e-6 for r in grpo)
    return lines


def test_two_ranks_match_one_process_and_their_checkpoint_resumes_on_one(tmp_path, one_process, dense_reward):
    out = tmp_path / "run"
    two_ranks(config(out), stop_after=STOP_AFTER)  # rank 1 is signalled; rank 0 stops with it
    got = metrics(out)  # steps 1..9 on two ranks: every phase
    assert got[-1]["step"] == STOP_AFTER
    assert_same_run(one_process[: len(got)], got)
    run(resume=str(out))  # one process takes the two ranks' checkpoint, rollout buffer included
    assert_same_run(one_process, metrics(out))


def test_one_process_checkpoint_resumes_on_two_ranks(tmp_path, monkeypatch, one_process, dense_reward):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        sigterm_after(m.setattr, STOP_AFTER, rank=0)
        with pytest.raises(Interrupted):
            run(config(out))
    two_ranks(resume=str(out))  # the rollout buffer is split over the ranks; then a fresh rollout on two
    assert_same_run(one_process, metrics(out))
    assert os.path.isfile(out / "summary.json")


# ------------------------------------------------------------------------------------------ no processes
def test_batch_that_does_not_split_over_ranks_is_a_config_error():
    cfg = load_preset("smoke")  # batch_size 4, micro_batch_size 2 in every phase
    check_batch_layout(cfg, 2)
    with pytest.raises(ConfigError, match=r"pretrain.batch_size=4 .* divisible by world_size × "
                                          r"pretrain.micro_batch_size = 3×2"):
        check_batch_layout(cfg, 3)
    cfg = apply_overrides(cfg, {"grpo.group_size": "4", "grpo.micro_batch_size": "1"})
    with pytest.raises(ConfigError, match=r"grpo.batch_size / world_size = 4/2 = 2 completions per rank must "
                                          r"be a multiple of grpo.group_size=4"):
        check_batch_layout(cfg, 2)


def test_nccl_without_cuda_is_a_one_line_error(tmp_path, capsys):
    if torch.cuda.is_available():  # CUDA is there, but the run asks for the CPU
        with pytest.raises(ConfigError, match="--dist_backend=nccl needs CUDA but --device=cpu; use "
                                              "--dist_backend=gloo"):
            init("cpu", "nccl")
        return
    assert main(["--preset=smoke", "--dist_backend=nccl", f"--out={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --dist_backend=nccl needs CUDA but no CUDA device is available; use --dist_backend=gloo "
                   "(or auto) to train on CPU")


def test_seeded_rows_do_not_depend_on_the_rest_of_the_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, seq_len=48, n_layer=1, n_head=2, n_kv_head=1, n_embd=16)).eval()
    prompts, seeds = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]], [11, 22, 33]
    kw = dict(max_new_tokens=12, temperature=1.0, top_k=20)
    whole = generate(model, prompts, seeds=seeds, **kw)
    assert generate(model, prompts[2:], seeds=seeds[2:], **kw) == whole[2:]  # alone, less padding
    assert generate(model, prompts[1::-1], seeds=seeds[1::-1], **kw) == whole[1::-1]  # another order
    assert generate(model, prompts, seeds=[12, 22, 33], **kw)[0] != whole[0]
    with pytest.raises(ValueError, match="one seed per prompt"):
        generate(model, prompts, seeds=seeds[:2], **kw)


def test_per_row_streams_sample_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -8.0]]).expand(4000, 5)
    gens = [torch.Generator().manual_seed(i) for i in range(4000)]
    tokens = sample_next(logits, 1.0, 4, generators=gens)  # top-4: the last token is never drawn
    p = torch.softmax(logits[0, :4], dim=0)
    freq = torch.bincount(tokens, minlength=5).double() / 4000
    assert freq[4] == 0
    # 4 binomial standard deviations of a frequency over 4000 draws: a false alarm about once in 10^4 runs,
    # while sampling from the wrong distribution (e.g. without the temperature or the -log E) is far off
    assert torch.all((freq[:4] - p).abs() <= 4 * torch.sqrt(p * (1 - p) / 4000)), (freq, p)
