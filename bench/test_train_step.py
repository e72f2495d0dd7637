"""Benchmarks: whole training steps of every phase, through the real loop (`train.loop.Trainer.train_step`).

    pretrain      one optimiser step of next-token loss on packed documents (document-masked attention)
    pretrain_1doc the same with one document per row (no document mask: SDPA can take its flash path)
    sft           the same loss with the prompt part of every conversation unsupervised
    grpo_update   one optimiser step of the clipped GRPO objective (k3 KL) on a fixed rollout batch
    grpo_rollout  sampling the completions of a rollout batch with the KV-cache sampler (`model.sampler.generate`)

Each implementation is a value of the model's `kernels` switch: "triton" (Triton attention and losses),
"sdpa" (torch's SDPA attention, Triton losses on CUDA) and "reference" (the fp32 PyTorch references).

Each case first checks its numbers against an independent path on the same weights and batch: a step's
summed micro-batch loss and every parameter's gradient (relative error of the gradient's norm), a rollout's
greedy tokens (each must be the argmax, within a tolerance, of the other path's full forward over the same
sequence: this checks the KV-cache decode path). Then it times, and records tokens/s, MFU and peak memory.

What is counted (`tokens` and FLOPs per token), as the training loop counts them:
    step      tokens = rows · T (every position the forward processes); FLOPs/token = model.flops_per_token(T)
              = 6·N + 12·L·H·D·T (N: parameters outside the embedding)
    rollout   tokens = completions · new tokens (generated tokens only); FLOPs/token = a third of the training
              count at the mean context length (forward only: 2·N + 4·L·H·D·T_ctx); decoding is memory-bound,
              so its MFU is low by nature and is reported for comparison across runs only

On CUDA: a GPT-2-124M-sized model (12 layers, d 768, 12 heads, 12 kv heads, vocab 50304), T = 1024, 16 rows
per step in 2 micro-batches, bf16 autocast as in training; rollouts of 64 completions, prompts of 64 to 128
tokens, 128 new tokens. On CPU: a 2-layer model with d 32 and GQA, a couple of rows; kernels under Triton's
interpreter; the timings mean nothing there and no rate is recorded.
"""
import contextlib
import dataclasses

import pytest
import torch

from bench.common import CUDA, DEVICE, measure, sync
from kernels import group_advantages, grpo_token_weights
from model.gpt import GPT, GPTConfig
from model.sampler import generate
from train.config import PhaseConfig, RunConfig
from train.data import IGNORE, Batch
from train.loop import Trainer
from train.grpo import GRPOObjective, GRPOOptions
from train.heads import completion_logprobs
from train.phases import Phase
from train.rollout import RolloutBatch
from train.supervised import NextTokenLoss


# ----------------------------------------------------------------------------------------------------------
# What is counted
# ----------------------------------------------------------------------------------------------------------
def step_flops_per_token(model: GPT, T: int) -> float:
    """Training FLOPs per token (forward + backward) at sequence length T."""
    return model.flops_per_token(T)


def decode_flops_per_token(model: GPT, context: float) -> float:
    """Forward-only FLOPs per generated token at a mean context length: a third of the training count."""
    return model.flops_per_token(round(context)) / 3


# ----------------------------------------------------------------------------------------------------------
# Sizes and tolerances
# ----------------------------------------------------------------------------------------------------------
if CUDA:
    MODEL = GPTConfig(vocab_size=50304, seq_len=1024, n_layer=12, n_head=12, n_kv_head=12, n_embd=768)
    T, ROWS, MICRO, DOC_LEN = 1024, 16, 8, 384  # step: ROWS × T tokens in ROWS / MICRO micro-batches
    COMPLETIONS, GROUP, PROMPT_LEN, NEW_TOKENS, GRPO_MICRO = 64, 8, 128, 128, 16
    PHASES = ["pretrain", "pretrain_1doc", "sft", "grpo_update"]
    STEP_ROUNDS, ROLLOUT_ROUNDS = (10, 3), (3, 1)  # (timed rounds, warm-up rounds)
    CHECK_ROWS = 8  # rollout rows whose greedy tokens are checked
    # bf16 autocast on both paths; the two attention and loss implementations round differently
    LOSS_RTOL, LOSS_ATOL, GRAD_RTOL, LOGIT_TOL = 2e-2, 1e-3, 1e-1, 0.15
else:
    MODEL = GPTConfig(vocab_size=96, seq_len=48, n_layer=2, n_head=2, n_kv_head=1, n_embd=32)
    T, ROWS, MICRO, DOC_LEN = 21, 2, 1, 8
    COMPLETIONS, GROUP, PROMPT_LEN, NEW_TOKENS, GRPO_MICRO = 4, 2, 7, 5, 2
    PHASES = ["pretrain", "pretrain_1doc", "sft", "grpo_update"]
    STEP_ROUNDS, ROLLOUT_ROUNDS = (1, 0), (1, 0)
    CHECK_ROWS = COMPLETIONS
    LOSS_RTOL, LOSS_ATOL, GRAD_RTOL, LOGIT_TOL = 1e-5, 1e-6, 1e-4, 1e-4  # fp32 everywhere

IMPLS = ["triton", "sdpa", "reference"]
CHECK_AGAINST = {"triton": "reference", "sdpa": "reference", "reference": "sdpa"}
GRPO = dict(eps_low=0.2, eps_high=0.28, beta=0.04, temperature=1.0)


def autocast():
    """What the loop does with dtype=auto: bf16 autocast on CUDA, plain fp32 on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if CUDA else contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------------------
# Weights and batches (built once per module, shared by every implementation)
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights():
    """A state dict with every parameter random and non-zero. The model's own init zeroes the output
    projections, which would make every block the identity and the attention path invisible to the checks."""
    torch.manual_seed(0)
    model = GPT(MODEL)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = 1.0 if name.startswith("wte") else p.size(1) ** -0.5  # unit-variance activations
            p.normal_(0.0, std)
    return {k: v.to(DEVICE) for k, v in model.state_dict().items()}


def make_model(weights: dict, impl: str) -> GPT:
    with torch.device(DEVICE):  # built in place: initialising 124M parameters on the host takes seconds
        model = GPT(dataclasses.replace(MODEL, kernels=impl))
    model.load_state_dict(weights)
    return model


@dataclasses.dataclass
class DeviceBatch(Batch):
    """A micro-batch already on the device; doc_ids may be None (one document per row)."""

    def to(self, device):
        return self


def packed_batches(gen: torch.Generator, supervise_prompts: bool, one_doc: bool) -> list[Batch]:
    """ROWS rows of T tokens: documents of DOC_LEN/2 … 3·DOC_LEN/2 tokens laid end to end (doc ids count
    them), or one document per row. Without `supervise_prompts` (SFT), the first 40% of every document is
    the prompt and unsupervised. Every micro-batch carries the step's supervised count."""
    ids = torch.randint(0, MODEL.vocab_size, (ROWS, T + 1), generator=gen)
    docs = torch.zeros(ROWS, T + 1, dtype=torch.int32)
    supervised = torch.ones(ROWS, T + 1, dtype=torch.bool)
    for r in range(ROWS):
        start, d = 0, 0
        while start < T + 1:
            n = T + 1 if one_doc else int(torch.randint(DOC_LEN // 2, 3 * DOC_LEN // 2 + 1, (), generator=gen))
            docs[r, start:start + n] = d
            if not supervise_prompts:
                supervised[r, start:start + max(1, int(0.4 * n))] = False
            start, d = start + n, d + 1
    idx, targets = ids[:, :-1], ids[:, 1:].masked_fill(~supervised[:, 1:], IGNORE)  # (ROWS, T) each
    normaliser = float((targets != IGNORE).sum())
    return [DeviceBatch(idx[i:i + MICRO].to(DEVICE), targets[i:i + MICRO].to(DEVICE),
                        None if one_doc else docs[i:i + MICRO, :-1].to(DEVICE), normaliser)
            for i in range(0, ROWS, MICRO)]


def prompt_list(gen: torch.Generator) -> list[list[int]]:
    """COMPLETIONS prompts (GROUP copies of each of COMPLETIONS / GROUP) of PROMPT_LEN/2 … PROMPT_LEN tokens."""
    out = []
    for _ in range(COMPLETIONS // GROUP):
        n = int(torch.randint(PROMPT_LEN // 2, PROMPT_LEN + 1, (), generator=gen))
        out += [torch.randint(1, MODEL.vocab_size, (n,), generator=gen).tolist()] * GROUP
    return out


def rollout_batches(gen: torch.Generator, weights: dict) -> list[RolloutBatch]:
    """A GRPO batch as train/rollout.py builds it: right-padded prompt + completion rows, completion-only targets,
    group advantages of random rewards, dapo token weights; old and reference log-probs scored by the model
    then perturbed, so that some ratios clip and the KL term is not zero."""
    prompts = prompt_list(gen)
    completions = [torch.randint(1, MODEL.vocab_size, (int(torch.randint(NEW_TOKENS // 2, NEW_TOKENS + 1, (),
                   generator=gen)),), generator=gen).tolist() for _ in prompts]
    L = max(len(a) + len(b) for a, b in zip(prompts, completions))
    ids = torch.zeros(len(prompts), L, dtype=torch.long)
    targets = torch.full((len(prompts), L - 1), IGNORE, dtype=torch.long)
    for i, (a, b) in enumerate(zip(prompts, completions)):
        ids[i, :len(a) + len(b)] = torch.tensor(a + b)
        targets[i, len(a) - 1:len(a) + len(b) - 1] = torch.tensor(b)
    mask = targets != IGNORE
    n = int(mask.sum())
    rewards = torch.randint(0, 2, (len(prompts),), generator=gen).float()
    adv = group_advantages(rewards, GROUP, backend="reference").advantages
    weights_t = grpo_token_weights(mask, "dapo", num_sequences=len(prompts), num_tokens=n, max_len=L - 1)
    scorer_kernels = "reference" if not CUDA else "auto"
    scorer = make_model(weights, scorer_kernels).eval()
    out = []
    for s in range(0, len(prompts), GRPO_MICRO):
        sl = slice(s, s + GRPO_MICRO)
        b = RolloutBatch(ids[sl, :-1], targets[sl], torch.zeros_like(ids[sl, :-1], dtype=torch.int32), float(n),
                         advantages=adv[sl, None].expand_as(targets[sl]) * mask[sl],
                         weights=weights_t[sl]).to(DEVICE)
        with torch.no_grad(), autocast():
            logp = completion_logprobs(scorer, b, GRPO["temperature"], scorer_kernels)
        sel = b.targets != IGNORE
        noise = lambda: 0.3 * torch.randn(logp.shape, generator=gen).to(DEVICE) * sel  # noqa: E731
        b.old_logp, b.ref_logp = logp + noise(), logp + noise()
        out.append(b)
    return out


@pytest.fixture(scope="module")
def problems(weights):
    """phase -> (micro-batches, objective of a kernel switch, PhaseConfig), built lazily and shared by every
    implementation."""
    cache = {}

    def get(phase: str):
        if phase not in cache:
            gen = torch.Generator().manual_seed(1)
            if phase == "grpo_update":
                cfg = PhaseConfig(name="grpo", objective="grpo", steps=10**6, batch_size=COMPLETIONS,
                                  micro_batch_size=GRPO_MICRO, warmup_steps=0, decay="constant",
                                  options={"grpo": GRPOOptions(group_size=GROUP, **GRPO)})
                cache[phase] = (rollout_batches(gen, weights), lambda impl: GRPOObjective(cfg, impl), cfg)
            else:
                cfg = PhaseConfig(name=phase, objective="sft" if phase == "sft" else "pretrain", steps=10**6,
                                  batch_size=ROWS, micro_batch_size=MICRO, warmup_steps=0, decay="constant")
                batches = packed_batches(gen, supervise_prompts=phase != "sft", one_doc=phase == "pretrain_1doc")
                cache[phase] = (batches, NextTokenLoss, cfg)
        return cache[phase]

    return get


class FixedSource:
    """A data source that hands the loop the same step of micro-batches every time."""

    def __init__(self, batches):
        self.batches = batches

    def next_step(self, rows, micro_rows, model):
        return self.batches

    def metrics(self):
        return {}


# ----------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------
def loss_and_grads(model: GPT, batches, objective) -> tuple[float, dict[str, torch.Tensor]]:
    """The step's loss (summed over micro-batches, as the loop accumulates) and every parameter's gradient."""
    model.zero_grad(set_to_none=True)
    total = 0.0
    for b in batches:
        with autocast():
            loss, _ = objective(model, b)
        loss.backward()
        total += float(loss.detach())
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return total, grads


@pytest.fixture(scope="module")
def expected(weights, problems):
    """(phase, impl) -> loss and gradients of that implementation, computed once per module."""
    cache = {}

    def get(phase: str, impl: str):
        if (phase, impl) not in cache:
            batches, objective, _ = problems(phase)
            cache[phase, impl] = loss_and_grads(make_model(weights, impl), batches, objective(impl))
        return cache[phase, impl]

    return get


def check_step(phase, impl, got, want):
    (loss, grads), (want_loss, want_grads) = got, want
    other = CHECK_AGAINST[impl]
    # the absolute part is for GRPO, whose loss (advantages sum to zero per group) can sit near 0
    assert abs(loss - want_loss) <= LOSS_RTOL * abs(want_loss) + LOSS_ATOL, (
        f"{phase}: {impl} loss {loss:.6g} vs {other} {want_loss:.6g} (rtol {LOSS_RTOL}, atol {LOSS_ATOL})")
    assert grads.keys() == want_grads.keys(), f"{phase}: {impl} and {other} give gradients to different parameters"
    errors = {n: ((grads[n] - w).norm() / w.norm().clamp_min(1e-30)).item() for n, w in want_grads.items()}
    bad = {n: e for n, e in errors.items() if not e <= GRAD_RTOL}
    assert not bad, (f"{phase}: {len(bad)} of {len(errors)} gradients of {impl} differ from {other} by more than "
                     f"{GRAD_RTOL} (relative norm): " + ", ".join(f"{n} {e:.3g}" for n, e in
                                                                  sorted(bad.items(), key=lambda x: -x[1])[:5]))


def check_greedy(model_impl: str, other: GPT, prompts, completions):
    """Every greedy token must be the argmax, within LOGIT_TOL, of `other`'s logits over the same sequence."""
    for r, (p, c) in enumerate(zip(prompts, completions)):
        seq = torch.tensor(p + c, device=DEVICE)
        with torch.no_grad(), autocast():
            logits = other.logits(other(seq[None, :-1]))[0, len(p) - 1:]  # (len(c), V) fp32
        chosen = logits.gather(1, torch.tensor(c, device=DEVICE)[:, None]).squeeze(1)
        gap = logits.max(dim=1).values - chosen  # >= 0; > 0 where another token scores higher
        worst = int(gap.argmax())
        assert gap[worst] <= LOGIT_TOL, (
            f"{model_impl} greedy row {r}: {int((gap > LOGIT_TOL).sum())} of {len(c)} tokens are not the argmax "
            f"of {other.cfg.kernels}'s logits; worst at new token {worst}: {gap[worst].item():.4g} below the max")


# ----------------------------------------------------------------------------------------------------------
# Benchmarks
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("phase", PHASES)
def test_train_step(benchmark, weights, problems, expected, phase, impl):
    batches, objective_of, cfg = problems(phase)
    model, objective = make_model(weights, impl), objective_of(impl)

    # 1. check: loss and gradients against an independent path, same weights, same batch
    check_step(phase, impl, loss_and_grads(model, batches, objective), expected(phase, CHECK_AGAINST[impl]))

    # 2. time one optimiser step of the loop (AdamW, clipping, accumulation; it synchronises CUDA itself)
    phase_obj = Phase(cfg, 0, FixedSource(batches), objective)
    trainer = Trainer(RunConfig(model=model.cfg, phases=[cfg]), model, [phase_obj], evaluators={}, out_dir="",
                      extra_state={}, peak_flops=None)

    def step():
        trainer.train_step(phase_obj)
        sync()

    tokens = sum(b.idx.numel() for b in batches)  # every position of every micro-batch, as the loop counts
    Tb, c = batches[0].idx.size(1), MODEL
    measure(benchmark, step, suite="train_step", impl=impl, rounds=STEP_ROUNDS[0], warmup=STEP_ROUNDS[1],
            shape=f"{phase} {c.n_layer}L d{c.n_embd} {c.n_head}h/{c.n_kv_head}kv V{c.vocab_size} "
                  f"{len(batches)}x{batches[0].idx.size(0)}x{Tb} {'bf16' if CUDA else 'fp32'}",
            tokens=tokens, flops_per_token=step_flops_per_token(model, Tb), phase=phase,
            baseline="reference (fp32 PyTorch attention and losses); sdpa (torch SDPA attention)")


@pytest.mark.parametrize("impl", IMPLS)
def test_grpo_rollout(benchmark, weights, impl):
    model = make_model(weights, impl).eval()
    prompts = prompt_list(torch.Generator().manual_seed(2))

    # 1. check: greedy completions through the KV cache agree with the other path's full forward
    with autocast():
        greedy = generate(model, prompts[:CHECK_ROWS], max_new_tokens=NEW_TOKENS, temperature=0.0)
    assert all(len(c) == NEW_TOKENS for c in greedy), "without a stop token every completion is full length"
    check_greedy(impl, make_model(weights, CHECK_AGAINST[impl]).eval(), prompts[:CHECK_ROWS], greedy)

    # 2. time sampling the whole batch (temperature 1, no stop token: every completion is NEW_TOKENS long)
    gen = torch.Generator(device=DEVICE).manual_seed(3)

    def step():
        with autocast():
            generate(model, prompts, max_new_tokens=NEW_TOKENS, temperature=1.0, generator=gen)
        sync()

    context = sum(len(p) for p in prompts) / len(prompts) + NEW_TOKENS / 2
    measure(benchmark, step, suite="train_step", impl=impl, rounds=ROLLOUT_ROUNDS[0], warmup=ROLLOUT_ROUNDS[1],
            group="train_step[phase=grpo_rollout]",
            shape=f"grpo_rollout {len(prompts)} completions, prompts {PROMPT_LEN // 2}-{PROMPT_LEN}, "
                  f"+{NEW_TOKENS} tokens {'bf16' if CUDA else 'fp32'}",
            tokens=len(prompts) * NEW_TOKENS, flops_per_token=decode_flops_per_token(model, context),
            phase="grpo_rollout", baseline="reference (fp32 PyTorch attention); sdpa (torch SDPA attention)")
