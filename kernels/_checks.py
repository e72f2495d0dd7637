"""Argument checks shared by every public function of `kernels`, run before the choice of path.

Each public function calls one `*_args` function here before it dispatches to its Triton kernel or to its
PyTorch reference, so both paths refuse the same inputs with the same exception and the same message. One
rule for every op:

    TypeError    not a tensor where one is needed, a tensor of the wrong dtype (float targets, integer
                 logits, bool GRPO weights), or a float where an int count is needed;
    ValueError   a wrong shape, a tensor on another device than the op's first input, an empty dimension,
                 or a value out of range (temperature <= 0, an unknown reduction, a target outside the
                 vocabulary).

Every message names the argument and prints what it got. Empty dimensions: the batch may be empty (N = 0
rows, B = 0 sequences; outputs are then empty and sums and means 0), every other dimension (vocabulary V,
hidden size d, heads, head dim, query rows) must be at least 1.

Targets outside the vocabulary. A target t >= V, or t < 0 where the op does not ignore it, is a ValueError
on every path: cross_entropy and linear_cross_entropy ignore exactly `ignore_index`; the log-prob and GRPO
ops ignore every negative target (log-prob 0, no gradient). Unchecked, the kernels would give a NaN loss
(cross-entropy) or a silent log-prob of 0, i.e. probability 1 (the others), and the references would fail
inside a gather. The check reads the targets' extremes back to the host. On a CPU that is free; on CUDA it is
one device-to-host synchronisation per call (a few small kernels over the N targets, then a read of one or
two numbers): the host waits for the work queued before the call (the model's forward) and the GPU idles until
the host launches the next kernel. We pay it because a clear error beats a silently wrong loss. The training
loop already reads each micro-batch's loss back (train/loop.py), and the GRPO callers select completion tokens
with a boolean mask, which synchronises too, so the host never ran more than one micro-batch ahead; what the
extra wait costs per step has not been measured on a GPU. Every other check reads only shapes, dtypes and
devices and never synchronises.
"""
import math
import numbers

import torch
from torch._subclasses.fake_tensor import is_fake

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what the kernels load as activations
INDEX_DTYPES = (torch.int64, torch.int32)
REDUCTIONS = ("none", "sum", "mean")
LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")


# ----------------------------------------------------------------------------------------------------------
# Single checks
# ----------------------------------------------------------------------------------------------------------
def _tensor(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def _activations(name, t):
    _tensor(name, t)
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be fp32, fp16 or bf16, got {t.dtype}")


def _indices(name, t):
    _tensor(name, t)
    if t.dtype not in INDEX_DTYPES:
        raise TypeError(f"{name} must be int64 or int32, got {t.dtype}")


def _floating(name, t):
    _tensor(name, t)
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")


def _count(name, x, low):
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(x).__name__} {x!r}")
    if x < low:
        raise ValueError(f"{name} must be >= {low}, got {x}")


def _chunk_size(chunk_size):
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"chunk_size must be an int or None, got {type(chunk_size).__name__} {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of tokens, got {chunk_size}")


def _positive(name, x):
    if not (isinstance(x, numbers.Real) and math.isfinite(x) and x > 0):
        raise ValueError(f"{name} must be a positive number, got {x!r}")


def _non_negative(name, x):
    if not (isinstance(x, numbers.Real) and math.isfinite(x) and x >= 0):
        raise ValueError(f"{name} must be a number >= 0, got {x!r}")


def _choice(name, x, allowed):
    if x not in allowed:
        raise ValueError(f"{name}={x!r} is not one of {allowed}")


def _layout(name, t, ndim, layout):
    """t has `ndim` dimensions, or at least one when ndim is None (the (..., V) layouts)."""
    ok = t.dim() >= 1 if ndim is None else t.dim() == ndim
    if not ok:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(t.shape)}")


def _non_empty(name, t, dim, what):
    if t.shape[dim] == 0:
        raise ValueError(f"{name} has an empty {what} dimension: shape {tuple(t.shape)}")


def _shape(name, t, want, what):
    if t.shape != want:
        raise ValueError(f"{name} must {what} {tuple(want)}, got shape {tuple(t.shape)}")


def _same_device(first_name, first, **others):
    for name, t in others.items():
        if t is not None and t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}")


def _targets_in_vocab(target, V, ignore_index=None):
    """The one check that reads values (a host sync on CUDA; see the module docstring). With ignore_index
    None every negative target is ignored; otherwise exactly ignore_index is. Tensors without values (meta
    and fake tensors, as in shape tracing and in bench/compile.py's launch capture) have nothing to check."""
    if target.numel() == 0 or target.is_meta or is_fake(target):
        return
    if ignore_index is None:
        hi = int(target.max())
        if hi >= V:
            raise ValueError(f"target holds {hi}, not below V={V} (a negative target is ignored)")
        return
    t = torch.where(target == ignore_index, torch.zeros((), dtype=target.dtype, device=target.device), target)
    lo, hi = torch.stack(torch.aminmax(t)).tolist()  # one read back for both extremes
    if hi >= V or lo < 0:
        raise ValueError(f"target holds {hi if hi >= V else lo}, outside [0, V={V}) and not "
                         f"ignore_index={ignore_index}")


# ----------------------------------------------------------------------------------------------------------
# Shared layouts: rows of logits, and the LM head
# ----------------------------------------------------------------------------------------------------------
def _logits_rows(logits, target, flat):
    """logits (N, V) when flat, else (..., V); target int of the leading shape, on the same device."""
    _activations("logits", logits)
    _indices("target", target)
    _layout("logits", logits, 2 if flat else None, "(N, V)" if flat else "(..., V)")
    _non_empty("logits", logits, -1, "vocabulary")
    _shape("target", target, logits.shape[:-1], "be (N,) =" if flat else "be logits' leading shape")
    _same_device("logits", logits, target=target)


def _head(hidden, weight, target, chunk_size, flat):
    """hidden (N, d) when flat, else (..., d); weight (V, d); their dtypes may differ (e.g. an fp32 master
    weight): the head runs in hidden's dtype, or the autocast dtype."""
    _activations("hidden", hidden)
    _activations("weight", weight)
    _indices("target", target)
    _layout("hidden", hidden, 2 if flat else None, "(N, d)" if flat else "(..., d)")
    _layout("weight", weight, 2, "(V, d)")
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must be (V, d) with d = {hidden.shape[-1]} as in hidden {tuple(hidden.shape)}, "
                         f"got shape {tuple(weight.shape)}")
    _non_empty("weight", weight, 0, "vocabulary")
    _non_empty("hidden", hidden, -1, "hidden size")
    _shape("target", target, hidden.shape[:-1], "be (N,) =" if flat else "be hidden's leading shape")
    _same_device("hidden", hidden, weight=weight, target=target)
    _chunk_size(chunk_size)


def _cross_entropy_options(reduction, softcap):
    _choice("reduction", reduction, REDUCTIONS)
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap must be positive or None, got {softcap}")


def _grpo_terms(target, old_logp, ref_logp, advantages, weights, eps_low, eps_high, beta):
    """Per-token GRPO inputs: floating tensors of target's shape on its device; old_logp and ref_logp may be
    None (on-policy; no KL term)."""
    terms = dict(old_logp=old_logp, ref_logp=ref_logp, advantages=advantages, weights=weights)
    for name, t in terms.items():
        if t is None and name in ("old_logp", "ref_logp"):
            continue
        _floating(name, t)
        _shape(name, t, target.shape, "have target's shape")
    _same_device("target", target, **terms)
    if ref_logp is None and beta != 0:
        raise ValueError(f"beta={beta} needs ref_logp")
    for name, x in (("eps_low", eps_low), ("eps_high", eps_high), ("beta", beta)):
        _non_negative(name, x)


# ----------------------------------------------------------------------------------------------------------
# One function per public op
# ----------------------------------------------------------------------------------------------------------
def cross_entropy_args(logits, target, *, ignore_index, reduction, softcap):
    _logits_rows(logits, target, flat=True)
    _cross_entropy_options(reduction, softcap)
    _targets_in_vocab(target, logits.shape[1], ignore_index)


def linear_cross_entropy_args(hidden, weight, target, *, ignore_index, reduction, softcap, chunk_size):
    _head(hidden, weight, target, chunk_size, flat=True)
    _cross_entropy_options(reduction, softcap)
    _targets_in_vocab(target, weight.shape[0], ignore_index)


def token_logprobs_args(logits, target, *, temperature):
    _logits_rows(logits, target, flat=False)
    _positive("temperature", temperature)
    _targets_in_vocab(target, logits.shape[-1])


def linear_token_logprobs_args(hidden, weight, target, *, temperature, chunk_size):
    _head(hidden, weight, target, chunk_size, flat=False)
    _positive("temperature", temperature)
    _targets_in_vocab(target, weight.shape[0])


def grpo_loss_args(logits, target, old_logp, ref_logp, advantages, weights, *, temperature, eps_low, eps_high,
                   beta):
    _logits_rows(logits, target, flat=False)
    _grpo_terms(target, old_logp, ref_logp, advantages, weights, eps_low, eps_high, beta)
    _positive("temperature", temperature)
    _targets_in_vocab(target, logits.shape[-1])


def linear_grpo_loss_args(hidden, weight, target, old_logp, ref_logp, advantages, weights, *, temperature,
                          eps_low, eps_high, beta, chunk_size):
    _head(hidden, weight, target, chunk_size, flat=False)
    _grpo_terms(target, old_logp, ref_logp, advantages, weights, eps_low, eps_high, beta)
    _positive("temperature", temperature)
    _targets_in_vocab(target, weight.shape[0])


def group_advantages_args(rewards, group_size, completion_mask):
    _tensor("rewards", rewards)
    if rewards.dtype.is_complex:
        raise TypeError(f"rewards must be a real tensor (floating, integer or bool), got {rewards.dtype}")
    _count("group_size", group_size, 1)
    if rewards.dim() != 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards must be (P·G,) with G={group_size} dividing it, got shape {tuple(rewards.shape)}")
    if completion_mask is not None:
        _tensor("completion_mask", completion_mask)
        if completion_mask.dim() != 2 or completion_mask.shape[0] != rewards.numel():
            raise ValueError(f"completion_mask must be (P·G, L) = ({rewards.numel()}, L), got shape "
                             f"{tuple(completion_mask.shape)}")
        _same_device("rewards", rewards, completion_mask=completion_mask)


def token_weights_args(mask, loss_type, num_sequences, num_tokens, max_len):
    _choice("loss_type", loss_type, LOSS_TYPES)
    _tensor("mask", mask)
    _layout("mask", mask, 2, "(B, L)")
    for name, total in (("num_sequences", num_sequences), ("num_tokens", num_tokens)):
        if isinstance(total, torch.Tensor):  # a 0-dim tensor (e.g. all-reduced): its value is not read here
            _layout(name, total, 0, "an int or a 0-dim tensor")
        else:
            _count(name, total, 0)
    _count("max_len", max_len, 0)
    if max_len < mask.shape[1]:
        raise ValueError(f"max_len={max_len} is shorter than the mask's length {mask.shape[1]}")


def attention_args(q, k, v, doc_ids):
    """q (B, H, Tq, D), k and v (B, Hkv, Tk, D), H % Hkv == 0, 1 <= Tq <= Tk; doc_ids None or (B, Tk) ints."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        _activations(name, t)
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention expects 4-D q, k, v (B, H, T, D); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    B, H, Tq, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"k and v must be (B={B}, Hkv, Tk, D={D}) and equal; "
                         f"got k {tuple(k.shape)}, v {tuple(v.shape)}")
    _non_empty("q", q, 3, "head")
    Hkv, Tk = k.shape[1], k.shape[2]
    if H == 0 or Hkv == 0 or H % Hkv != 0:
        raise ValueError(f"query heads H={H} must be a multiple of kv heads Hkv={Hkv}, both >= 1 "
                         f"(q {tuple(q.shape)}, k {tuple(k.shape)})")
    if not 1 <= Tq <= Tk:
        raise ValueError(f"need 1 <= Tq <= Tk; got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if doc_ids is not None:
        _tensor("doc_ids", doc_ids)
        if doc_ids.is_floating_point() or doc_ids.is_complex() or doc_ids.dtype == torch.bool:
            raise TypeError(f"doc_ids must be an integer tensor, got {doc_ids.dtype}")
        _shape("doc_ids", doc_ids, (B, Tk), "be (B, Tk) =")
    _same_device("q", q, k=k, v=v, doc_ids=doc_ids)
