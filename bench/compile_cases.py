"""What `bench.compile` drives: the public kernel functions at realistic GPU shapes, and the model's own train
steps and sampler, each as a named case whose Triton launches are recorded (bench/compile_capture.py).

Kernel cases run on fake CPU tensors (torch's FakeTensorMode: shapes, strides and dtypes without memory or
arithmetic), so an (8192, 131072) logits tensor or a 4096-token attention costs nothing, and CPU autocast
turns fp32 activations into bf16 as CUDA autocast would. The model cases run the real code on small real CPU
tensors at the default preset's size (4 layers, d 128, 4 heads over 2 KV heads, T 256), because the model and
the sampler read values (positions, sampled tokens); kernel outputs there are never written, which the
sampler does not mind at temperature 0.

Shapes follow the model's layouts: q is a (B, T, H, D) projection seen as (B, H, T, D), k and v are slices
of one (B, T, 2, Hkv, D) projection, dO arrives in the layout of q, and decode reads a slice of a longer
(B, Hkv, capacity, D) cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[], None]
    fake: bool = True  # run under FakeTensorMode (kernel cases) or on real CPU tensors (model cases)


def _qkv(B, H, Hkv, Tq, Tk, D, dtype, grad):
    q = torch.empty(B, Tq, H, D, dtype=dtype).transpose(1, 2)  # (B, H, Tq, D) with the model's strides
    k, v = torch.empty(B, Tk, 2, Hkv, D, dtype=dtype).permute(2, 0, 3, 1, 4)  # 2 × (B, Hkv, Tk, D)
    if grad:
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    return q, k, v


def _docs(B, T, kind):
    return None if kind is None else torch.empty(B, T, dtype=torch.int32)


def attention_train(B, H, Hkv, T, D, *, docs=None, causal=True, dtype=BF16):
    """Forward and backward of one training attention (dq, dk, dv)."""
    from kernels import attention

    def run():
        q, k, v = _qkv(B, H, Hkv, T, T, D, dtype, grad=True)
        o = attention(q, k, v, causal=causal, doc_ids=_docs(B, T, docs), backend="triton")
        do = torch.empty(B, T, H, D, dtype=dtype).transpose(1, 2)
        torch.autograd.grad(o, (q, k, v), do)
    return run


def attention_infer(B, H, Hkv, Tq, Tk, D, *, docs="padded", dtype=BF16, capacity=None):
    """Attention without gradients against a (sliced) KV cache: prefill (Tq > 16) or decode (Tq <= 16)."""
    from kernels import attention

    def run():
        q = torch.empty(B, Tq, H, D, dtype=dtype).transpose(1, 2)
        cache = torch.empty(2, B, Hkv, capacity or Tk, D, dtype=dtype)
        with torch.no_grad():
            attention(q, cache[0, :, :, :Tk], cache[1, :, :, :Tk], doc_ids=_docs(B, Tk, docs), backend="triton")
    return run


def _targets(N):
    """Token ids; valid ones, since the public functions check the targets' range before any launch."""
    return torch.zeros(N, dtype=torch.long)


def cross_entropy_case(N, V, *, dtype=BF16, reduction="mean", **kw):
    from kernels import cross_entropy

    def run():
        logits = torch.empty(N, V, dtype=dtype, requires_grad=True)
        loss = cross_entropy(logits, _targets(N), reduction=reduction, backend="triton", **kw)
        loss.backward(torch.empty_like(loss))
    return run


def linear_cross_entropy_case(N, d, V, *, reduction="sum"):
    from kernels import linear_cross_entropy

    def run():
        hidden = torch.empty(N, d, requires_grad=True)
        weight = torch.empty(V, d, requires_grad=True)
        with torch.autocast("cpu", dtype=BF16):
            loss = linear_cross_entropy(hidden, weight, _targets(N), reduction=reduction,
                                        backend="triton")
        loss.backward()
    return run


def logprobs_case(N, V, *, dtype=BF16, temperature=1.0, entropy=False):
    from kernels import token_logprobs

    def run():
        logits = torch.empty(N, V, dtype=dtype, requires_grad=True)
        out = token_logprobs(logits, _targets(N), temperature=temperature,
                             return_entropy=entropy, backend="triton")
        outs = out if entropy else (out,)
        torch.autograd.grad(outs, logits, [torch.empty_like(o) for o in outs])
    return run


def linear_logprobs_case(N, d, V, *, temperature=1.0, entropy=False, grad=True):
    from kernels import linear_token_logprobs

    def run():
        hidden = torch.empty(N, d, requires_grad=grad)
        weight = torch.empty(V, d, requires_grad=grad)
        with torch.autocast("cpu", dtype=BF16), torch.set_grad_enabled(grad):
            out = linear_token_logprobs(hidden, weight, _targets(N), temperature=temperature,
                                        return_entropy=entropy, backend="triton")
        if grad:
            outs = out if entropy else (out,)
            torch.autograd.grad(outs, (hidden, weight), [torch.empty_like(o) for o in outs])
    return run


def _grpo_inputs(N, beta):
    t = lambda: torch.empty(N)  # noqa: E731
    return _targets(N), t(), t() if beta else None, t(), t()


def grpo_case(N, V, *, temperature=1.0, beta=0.0, entropy=False, grad=True):
    from kernels import grpo_loss

    def run():
        logits = torch.empty(N, V, dtype=BF16, requires_grad=grad)
        with torch.set_grad_enabled(grad):
            loss, _ = grpo_loss(logits, *_grpo_inputs(N, beta), temperature=temperature, beta=beta,
                                return_entropy=entropy, backend="triton")
        if grad:
            loss.backward()
    return run


def linear_grpo_case(N, d, V, *, temperature=1.0, beta=0.04, entropy=True):
    from kernels import linear_grpo_loss

    def run():
        hidden = torch.empty(N, d, requires_grad=True)
        weight = torch.empty(V, d, requires_grad=True)
        with torch.autocast("cpu", dtype=BF16):
            loss, _ = linear_grpo_loss(hidden, weight, *_grpo_inputs(N, beta), temperature=temperature, beta=beta,
                                       return_entropy=entropy, backend="triton")
        loss.backward()
    return run


def advantages_case(P, G, *, scale_std=True):
    from kernels import group_advantages

    def run():
        group_advantages(torch.empty(P * G), G, scale_std=scale_std, backend="triton")
    return run


# ----------------------------------------------------------------------------------------- the model's own code
def _model(dtype=None):
    from model.gpt import GPT
    from train.config import load_preset

    cfg = load_preset("default")
    cfg.model.kernels = "triton"
    cfg.model.vocab_size = cfg.vocab_size
    torch.manual_seed(0)
    model = GPT(cfg.model)
    return (model if dtype is None else model.to(dtype)), cfg


def model_pretrain_step():
    """The pretraining objective, forward and backward, on packed documents under bf16 autocast."""
    from train.data import Batch
    from train.supervised import NextTokenLoss

    model, cfg = _model()
    B, T, V = 4, cfg.model.seq_len, cfg.model.vocab_size
    idx = torch.randint(0, V, (B, T))
    batch = Batch(idx=idx, targets=torch.randint(0, V, (B, T)), doc_ids=(torch.arange(T) // 50).int().expand(B, T),
                  normaliser=float(B * T))
    with torch.autocast("cpu", dtype=BF16):
        loss, _ = NextTokenLoss(cfg.model.kernels)(model, batch)
    loss.backward()


def model_grpo_step():
    """GRPO's rollout scoring, group advantages and the policy objective's forward and backward."""
    from kernels import group_advantages
    from train.data import IGNORE
    from train.grpo import GRPOObjective
    from train.heads import completion_logprobs
    from train.rollout import RolloutBatch

    model, cfg = _model()
    phase = cfg.phase("grpo")
    o = phase.options["grpo"]
    o.beta = 0.04
    B, T, V, prompt = 16, 96, cfg.model.vocab_size, 40
    idx = torch.randint(0, V, (B, T))
    targets = torch.randint(0, V, (B, T))
    targets[:, :prompt] = IGNORE
    doc_ids = torch.zeros(B, T, dtype=torch.int32)
    doc_ids[:, :5] = -1  # left padding
    batch = RolloutBatch(idx=idx, targets=targets, doc_ids=doc_ids, normaliser=float((targets != IGNORE).sum()))
    with torch.autocast("cpu", dtype=BF16):
        with torch.no_grad():
            old = completion_logprobs(model, batch, o.temperature, cfg.model.kernels)
        adv = group_advantages(torch.rand(B), o.group_size, backend="triton").advantages
        batch.old_logp, batch.ref_logp = old, old.clone()
        batch.advantages = adv[:, None].expand(B, T).contiguous()
        batch.weights = torch.full((B, T), 1.0 / batch.normaliser)
        loss, _ = GRPOObjective(phase, cfg.model.kernels)(model, batch)
    loss.backward()


def model_sampler():
    """The KV-cache sampler: a left-padded prefill, then one-token decode steps (greedy)."""
    from model.sampler import generate

    model, _ = _model(BF16)
    prompts = [[1 + i for i in range(n)] for n in (7, 12, 3, 20)]
    generate(model, prompts, max_new_tokens=4, temperature=0.0)


# ----------------------------------------------------------------------------------------- the list
def cases() -> list[Case]:
    """Every case, in the order the table lists them."""
    return [
        # training attention: head dims 32/64/128, with and without GQA and documents, odd lengths
        Case("attn-train D16 H8/Hkv2 T1024 bf16 docs", attention_train(4, 8, 2, 1024, 16, docs="packed")),
        Case("attn-train D32 H8 T2048 bf16", attention_train(4, 8, 8, 2048, 32)),
        Case("attn-train D32 H4/Hkv2 T1000 bf16 docs", attention_train(8, 4, 2, 1000, 32, docs="packed")),
        Case("attn-train D64 H12 T1024 bf16 (GPT-2)", attention_train(8, 12, 12, 1024, 64)),
        Case("attn-train D64 H12 T1024 bf16 docs", attention_train(8, 12, 12, 1024, 64, docs="packed")),
        Case("attn-train D64 H16/Hkv4 T1531 bf16 docs", attention_train(2, 16, 4, 1531, 64, docs="padded")),
        Case("attn-train D128 H16 T4096 bf16", attention_train(2, 16, 16, 4096, 128)),
        Case("attn-train D128 H16/Hkv4 T1531 bf16 docs", attention_train(2, 16, 4, 1531, 128, docs="padded")),
        Case("attn-train D128 H32/Hkv8 T2048 bf16 non-causal", attention_train(2, 32, 8, 2048, 128, causal=False)),
        Case("attn-train D64 H8 T4096 fp16 non-causal", attention_train(2, 8, 8, 4096, 64, causal=False, dtype=FP16)),
        Case("attn-train D128 H16/Hkv4 T1531 fp16 docs", attention_train(2, 16, 4, 1531, 128, docs="padded",
                                                                         dtype=FP16)),
        Case("attn-train D64 H8 T1000 fp32 docs", attention_train(2, 8, 2, 1000, 64, docs="packed", dtype=FP32)),
        Case("attn-train D128 H8/Hkv2 T1000 fp32", attention_train(2, 8, 2, 1000, 128, dtype=FP32)),
        # prefill and decode (no gradient) against a cache slice
        Case("attn-prefill D64 H12 T37 bf16 padded", attention_infer(16, 12, 12, 37, 37, 64, capacity=1024)),
        Case("attn-decode D64 H12 Tq1 Tk1000 bf16", attention_infer(16, 12, 12, 1, 1000, 64, capacity=1024)),
        Case("attn-decode D128 H32/Hkv4 Tq1 Tk4000 bf16", attention_infer(4, 32, 4, 1, 4000, 128, capacity=4096)),
        Case("attn-decode D128 H32/Hkv4 Tq16 Tk4000 bf16", attention_infer(4, 32, 4, 16, 4000, 128, capacity=4096)),
        Case("attn-decode D128 H16 Tq16 Tk4000 bf16", attention_infer(4, 16, 16, 16, 4000, 128, docs=None)),
        Case("attn-decode D32 H4/Hkv2 Tq1 Tk200 fp16", attention_infer(64, 4, 2, 1, 200, 32, dtype=FP16)),
        Case("attn-decode D128 H32/Hkv4 Tq16 Tk4000 fp32", attention_infer(4, 32, 4, 16, 4000, 128, dtype=FP32)),
        # losses at hidden 768, vocab 50304 and 131072
        Case("ce V50304 bf16 mean", cross_entropy_case(8192, 50304)),
        Case("ce V50304 fp32 none", cross_entropy_case(8192, 50304, dtype=FP32, reduction="none")),
        Case("ce V131072 bf16 none softcap z-loss inplace",
             cross_entropy_case(4096, 131072, reduction="none", softcap=30.0, z_loss=1e-4, inplace_backward=True)),
        Case("lce d768 V50304 bf16 sum", linear_cross_entropy_case(8192, 768, 50304)),
        Case("lce d768 V131072 bf16 mean", linear_cross_entropy_case(8192, 768, 131072, reduction="mean")),
        Case("logprobs V50304 bf16 T0.7 entropy", logprobs_case(8192, 50304, temperature=0.7, entropy=True)),
        Case("logprobs V131072 fp32 T1", logprobs_case(4096, 131072, dtype=FP32)),
        Case("linear-logprobs d768 V50304 T0.7 scoring", linear_logprobs_case(8192, 768, 50304, temperature=0.7,
                                                                               grad=False)),
        Case("linear-logprobs d768 V131072 entropy grad", linear_logprobs_case(8192, 768, 131072, entropy=True)),
        Case("grpo V50304 bf16 T0.7 beta0.04 entropy", grpo_case(8192, 50304, temperature=0.7, beta=0.04,
                                                                 entropy=True)),
        Case("grpo V131072 bf16 scoring", grpo_case(4096, 131072, grad=False)),
        Case("linear-grpo d768 V50304 T0.7 beta0.04", linear_grpo_case(8192, 768, 50304, temperature=0.7)),
        Case("linear-grpo d768 V131072 beta0", linear_grpo_case(8192, 768, 131072, beta=0.0, entropy=False)),
        Case("advantages G8", advantages_case(64, 8)),
        Case("advantages G256 no-std", advantages_case(4, 256, scale_std=False)),
        # the model's own code, default preset
        Case("model pretrain step (bf16 autocast, docs)", model_pretrain_step, fake=False),
        Case("model GRPO step (scoring, advantages, loss)", model_grpo_step, fake=False),
        Case("model sampler (bf16, prefill + decode)", model_sampler, fake=False),
    ]
