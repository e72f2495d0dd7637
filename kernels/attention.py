"""Causal / document-masked grouped-query attention: FlashAttention-2 forward and backward, and a decode kernel.

Shapes and symbols (per batch row b):
    q (B, H, Tq, D)   k, v (B, Hkv, Tk, D)   G = H // Hkv   query head h reads kv head h // G
    Tq <= Tk; query row i sits at key position p_i = Tk − Tq + i (bottom-right aligned), so Tq == Tk is
    training and a few rows against a long Tk is decoding with a KV cache.
    visible(i, s) = (not causal or s <= p_i) and (doc_ids is None or doc_ids[b, s] == doc_ids[b, p_i])
Document ids express packed documents and padding (pad tokens carry their own id, e.g. -1).

Forward, for one (b, h), with scale = D^-1/2 unless given:
    S = scale · q kᵀ                       (Tq, Tk), −inf where not visible
    m_i = max_s S_is    l_i = Σ_s exp(S_is − m_i)    P = exp(S − m) / l    O = P v        (Tq, D)
    lse_i = m_i + log l_i
The kernel never holds S or P whole: it walks key blocks j with the online softmax
    m' = max(m, rowmax S_j), α = exp(m − m'), l ← α l + rowsum exp(S_j − m'), A ← α A + exp(S_j − m') v_j
and ends with O = A / l. Exponentials are exp2 with log2(e) folded into the scale (one multiply per score),
so the saved log-sum-exp is in base 2: lse2_i = lse_i · log2(e), and P = exp2(S·log2(e) − lse2).
Saved for backward: O (the output, in q's dtype) and lse2 (B, H, Tq) fp32, i.e. O(T) memory, not O(T²).

Backward, given dO = ∂L/∂O:
    dv_s = Σ_i P_is dO_i                      dV = Pᵀ dO
    dP = dO vᵀ                                (Tq, Tk)
    dS_is = P_is (dP_is − Δ_i)                the softmax Jacobian, with
    Δ_i  = Σ_s P_is dP_is = Σ_s P_is (dO_i · v_s) = dO_i · O_i      (a row-dot of dO and O: no P needed)
    dQ = scale · dS k                         dK = scale · dSᵀ q
Masked entries have P = 0, so their dS is 0. With GQA, dK and dV of kv head c are summed over the G query
heads h with h // G == c; the dK/dV kernel loops over those heads so no atomics are needed.
P is recomputed from q, k and lse2 in the backward (kernels/attention_bwd.py): preprocess Δ, then dK/dV with
one program per key block, then dQ with one program per query block.

Rows with no visible key: the rule above always shows query p_i its own key, so this cannot happen through the
public API, but the kernels and the reference still define it as O = 0 with zero gradients (l = 0 gives O = 0
and lse2 = +inf, so P = exp2(−inf) = 0 in the backward), never NaN. The SDPA path relies on it never happening.

Decode (Tq <= 16, no gradient needed): one program holds all G·Tq query rows of a kv head as a single tile, so
K and V are read once per kv head rather than once per query head, and the cache is split into NUM_SPLITS
chunks along Tk (split-K) so short batches still fill the GPU. Each split c writes (O_c, lse2_c) in fp32 and a
second kernel merges them with the same online softmax: lse2 = log2 Σ_c 2^lse2_c, O = Σ_c 2^(lse2_c − lse2) O_c.

FLOPs: forward 4·B·H·Tq·Tk·D (two matmuls), about half of that when causal with Tq == Tk; the backward does
five matmuls (S, dV, dP, dQ, dK), 2.5× the forward.
Dtypes: fp32, fp16, bf16 (same for q, k, v); output in q's dtype; every accumulation in fp32. Compiled for a
GPU, the kernels take fp16 and bf16, and fp32 attention runs through SDPA (same mask and results): with IEEE
fp32 products (no TF32) Triton emits FMA loops that spill heavily and, at head dim 128, need more shared
memory than an A100 has. Under the interpreter fp32 runs the kernels, which is how the CPU tests check them
exactly. Head dims 16, 32, 64, 128 on the Triton path. Inputs may be non-contiguous views (strides are
honoured), e.g. `k_cache[:, :, :length]`.
Simplifications: key blocks are skipped by the causal bound only, not by document ids; the decode kernel is
forward-only (with gradients required, small Tq takes the general path).
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels._attention_common import (
    LOG2E, autotune_configs, causal_key_end, keep_mask, load_doc_ids, load_tile, online_softmax_end,
    online_softmax_init, online_softmax_step,
)
from kernels._checks import attention_args
from kernels._dispatch import attention_path, interpreting
from kernels.attention_bwd import attention_bwd

HEAD_DIMS = (16, 32, 64, 128)
DECODE_MAX_TQ = 16  # query rows up to which the decode kernel is used (when no gradient is needed)
DECODE_MAX_ROWS = 128  # G·Tq rows in one decode tile


# ----------------------------------------------------------------------------------------------- reference
def _visible(Tq: int, Tk: int, causal: bool, doc_ids, device) -> torch.Tensor | None:
    """The visibility rule as a bool mask (B or 1, 1, Tq, Tk), or None when everything is visible."""
    keep = None
    if causal:
        pos = torch.arange(Tk - Tq, Tk, device=device)  # (Tq,) key position of each query row
        keep = torch.arange(Tk, device=device)[None, :] <= pos[:, None]  # (Tq, Tk)
        keep = keep[None, None]
    if doc_ids is not None:
        same = doc_ids[:, Tk - Tq:, None] == doc_ids[:, None, :]  # (B, Tq, Tk)
        keep = same[:, None] if keep is None else keep & same[:, None]
    return keep


def attention_reference(q, k, v, *, causal=True, doc_ids=None, scale=None) -> torch.Tensor:
    """Plain fp32 PyTorch attention with the module's visibility rule; materialises S and P (B, H, Tq, Tk)."""
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    scale = D ** -0.5 if scale is None else scale
    kf = k.float().repeat_interleave(H // Hkv, dim=1)  # (B, H, Tk, D): the reference may repeat K/V
    vf = v.float().repeat_interleave(H // Hkv, dim=1)
    s = (q.float() @ kf.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
    keep = _visible(Tq, Tk, causal, doc_ids, q.device)
    if keep is not None:
        s = s.masked_fill(~keep, float("-inf"))
    # A softmax written out so that a row with no visible key gives P = 0 (and zero gradients), not NaN.
    m = s.amax(dim=-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    l = e.sum(dim=-1, keepdim=True)
    p = e / torch.where(l > 0, l, torch.ones_like(l))
    return (p @ vf).to(q.dtype)  # (B, H, Tq, D)


def doc_ids_from_cu_seqlens(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Document id of each of `total` packed positions from cumulative lengths [0, n0, n0+n1, ...]:
    position t gets id j when cu_seqlens[j] <= t < cu_seqlens[j+1], and -1 at or after cu_seqlens[-1]
    (padding). Returns (total,) int32; use `ids[None]` (or stack rows) as `doc_ids`."""
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1 or cu_seqlens.is_floating_point():
        raise ValueError(f"cu_seqlens must be a 1-D integer tensor, got {cu_seqlens.dtype} {tuple(cu_seqlens.shape)}")
    cu = cu_seqlens.long()
    if cu[0].item() != 0 or bool((cu[1:] < cu[:-1]).any()) or cu[-1].item() > total:
        raise ValueError(f"cu_seqlens must start at 0, be non-decreasing and end <= total={total}, got {cu.tolist()}")
    t = torch.arange(total, device=cu.device)
    ids = torch.searchsorted(cu[1:], t, right=True)  # number of documents that end at or before t
    return torch.where(t < cu[-1], ids, torch.full_like(ids, -1)).to(torch.int32)


def sdpa_mask(Tq: int, Tk: int, causal: bool, doc_ids, dtype: torch.dtype, device) -> torch.Tensor:
    """The visibility rule as SDPA's additive mask (B or 1, 1, Tq, Tk): 0 where visible, −inf elsewhere.

    Additive and in q's dtype because SDPA turns a boolean mask into exactly this in every call (a `where`
    over B·Tq·Tk); with `mask_cache` a model builds it once per forward instead of once per layer. Every
    row has a visible key (query p_i always sees its own key), so no row of P is 0/0.
    """
    keep = _visible(Tq, Tk, causal, doc_ids, device)  # (B or 1, 1, Tq, Tk) bool
    return torch.zeros(keep.shape, dtype=dtype, device=device).masked_fill_(~keep, float("-inf"))


def _attention_sdpa(q, k, v, causal, doc_ids, scale, mask_cache):
    """SDPA with GQA (K/V not repeated); a mask only for documents or a causal Tq < Tk (the cache's)."""
    Tq, Tk = q.shape[2], k.shape[2]
    if doc_ids is None and (not causal or Tq == Tk):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=True)
    key = (Tq, Tk, causal, q.dtype)
    mask = mask_cache.get(key) if mask_cache is not None else None
    if mask is None:
        mask = sdpa_mask(Tq, Tk, causal, doc_ids, q.dtype, q.device)
        if mask_cache is not None:
            mask_cache[key] = mask
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)


# ----------------------------------------------------------------------------------------------- kernels
# (BLOCK_M, BLOCK_N, warps, stages) per head dim, each free of spills on sm_90 and sm_80 (bench/compile.py).
# A 128-row tile takes 8 warps: over 4 its fp32 accumulator and scores spill at head dim 128 (and with
# documents at 32 and 64); 128 x 128 tiles spill too, and at head dim 128 64-row tiles over 4 warps reach the
# 255-register limit or spill.
FWD_CONFIGS = {
    32: [(128, 64, 8, 3), (128, 64, 8, 4), (64, 64, 4, 3), (64, 128, 4, 3)],
    64: [(128, 64, 8, 3), (128, 64, 8, 4), (64, 64, 4, 3), (64, 128, 4, 3)],
    128: [(128, 64, 8, 3), (128, 64, 8, 4), (128, 32, 8, 3), (64, 64, 8, 3)],
}


@triton.autotune(**autotune_configs(FWD_CONFIGS),
                 key=["HEAD_DIM", "IS_CAUSAL", "HAS_DOCS", "t_bucket"])
@triton.jit
def _attention_fwd_kernel(
    # pointers
    q_ptr, k_ptr, v_ptr, doc_ptr, o_ptr, lse_ptr,
    # strides
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_docb, stride_docn,
    stride_ob, stride_oh, stride_om, stride_od,
    # sizes
    H, Tq, Tk, GROUP, qk_scale, t_bucket,
    # meta-parameters
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_DOCS: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)  # int64: b·stride_b overflows int32 for large batches and caches
    b = pid_bh // H
    h = pid_bh % H
    hk = h // GROUP
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < Tq

    # 1. The query block (BLOCK_M, D) and the document id at each query row's position.
    q = load_tile(q_ptr + b * stride_qb + h * stride_qh, offs_m, offs_d, stride_qm, stride_qd, row_ok, False)
    doc_base = doc_ptr + b * stride_docb
    doc_q = load_doc_ids(doc_base, offs_m + Tk - Tq, row_ok, stride_docn, HAS_DOCS)
    k_base = k_ptr + b * stride_kb + hk * stride_kh
    v_base = v_ptr + b * stride_vb + hk * stride_vh
    m_i, l_i, acc = online_softmax_init(BLOCK_M, HEAD_DIM)

    # 2. Online softmax over the key blocks this query block can see.
    for start_n in range(0, causal_key_end(pid_m, Tq, Tk, BLOCK_M, IS_CAUSAL), BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_ok = offs_n < Tk
        k_t = load_tile(k_base, offs_n, offs_d, stride_kn, stride_kd, col_ok, True)  # (D, BLOCK_N)
        v = load_tile(v_base, offs_n, offs_d, stride_vn, stride_vd, col_ok, False)  # (BLOCK_N, D)
        doc_k = load_doc_ids(doc_base, offs_n, col_ok, stride_docn, HAS_DOCS)
        keep = keep_mask(offs_m[:, None], offs_n[None, :], doc_q[:, None], doc_k[None, :], Tq, Tk,
                         IS_CAUSAL, HAS_DOCS)
        m_i, l_i, acc = online_softmax_step(q, k_t, v, keep, m_i, l_i, acc, qk_scale, DOT_PRECISION)

    # 3. O = A / l and lse2 = m + log2 l; an empty row gets O = 0 and lse2 = +inf (P = 0 in the backward).
    o, lse = online_softmax_end(m_i, l_i, acc, float("inf"))
    tl.store(o_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
             o.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])
    tl.store(lse_ptr + pid_bh * Tq + offs_m, lse, mask=row_ok)


@triton.jit
def _attention_decode_kernel(
    # pointers: partial outputs po (B·Hkv, NUM_SPLITS, G·Tq, D) and plse (B·Hkv, NUM_SPLITS, G·Tq), fp32
    q_ptr, k_ptr, v_ptr, doc_ptr, po_ptr, plse_ptr,
    # strides
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_docb, stride_docn,
    # sizes
    Hkv, Tq, Tk, GROUP, qk_scale, keys_per_split, NUM_SPLITS,
    # meta-parameters
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_DOCS: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_bh = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    b = pid_bh // Hkv
    hk = pid_bh % Hkv
    # 1. Tile row r is query row i = r mod Tq of query head h = hk·G + r div Tq: all heads sharing this K, V.
    rows = tl.arange(0, BLOCK_M)
    n_rows = GROUP * Tq
    row_ok = rows < n_rows
    i = rows % Tq
    h = hk * GROUP + rows // Tq
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + b * stride_qb + h[:, None] * stride_qh + i[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None], other=0.0)
    doc_base = doc_ptr + b * stride_docb
    doc_q = load_doc_ids(doc_base, i + Tk - Tq, row_ok, stride_docn, HAS_DOCS)
    k_base = k_ptr + b * stride_kb + hk * stride_kh
    v_base = v_ptr + b * stride_vb + hk * stride_vh
    m_i, l_i, acc = online_softmax_init(BLOCK_M, HEAD_DIM)

    # 2. The same online softmax as the forward kernel, over this split's keys only.
    lo = split * keys_per_split
    hi = tl.minimum(lo + keys_per_split, Tk)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_ok = offs_n < hi
        k_t = load_tile(k_base, offs_n, offs_d, stride_kn, stride_kd, col_ok, True)
        v = load_tile(v_base, offs_n, offs_d, stride_vn, stride_vd, col_ok, False)
        doc_k = load_doc_ids(doc_base, offs_n, col_ok, stride_docn, HAS_DOCS)
        # i < Tq holds for the padding rows too (i = r mod Tq), and keys past hi belong to the next split.
        keep = keep_mask(i[:, None], offs_n[None, :], doc_q[:, None], doc_k[None, :], Tq, Tk, IS_CAUSAL, HAS_DOCS)
        keep = keep & row_ok[:, None] & col_ok[None, :]
        m_i, l_i, acc = online_softmax_step(q, k_t, v, keep, m_i, l_i, acc, qk_scale, DOT_PRECISION)

    # 3. This split's (O_c, lse2_c); a split that saw no visible key writes O_c = 0, lse2_c = −inf (weight 0).
    o, lse = online_softmax_end(m_i, l_i, acc, float("-inf"))
    part = (pid_bh * NUM_SPLITS + split) * n_rows + rows
    tl.store(po_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], o, mask=row_ok[:, None])
    tl.store(plse_ptr + part, lse, mask=row_ok)


@triton.jit
def _attention_decode_combine_kernel(
    po_ptr, plse_ptr, o_ptr,
    stride_ob, stride_oh, stride_om, stride_od,
    Hkv, Tq, GROUP, NUM_SPLITS,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    pid_bh = tl.program_id(0).to(tl.int64)
    b = pid_bh // Hkv
    hk = pid_bh % Hkv
    rows = tl.arange(0, BLOCK_M)
    n_rows = GROUP * Tq
    row_ok = rows < n_rows
    offs_d = tl.arange(0, HEAD_DIM)
    m_i, l_i, acc = online_softmax_init(BLOCK_M, HEAD_DIM)
    # Online softmax over splits, each weighted by its own l_c = 2^lse2_c.
    for split in range(0, NUM_SPLITS):
        part = (pid_bh * NUM_SPLITS + split) * n_rows + rows
        lse = tl.load(plse_ptr + part, mask=row_ok, other=float("-inf"))
        o_c = tl.load(po_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], mask=row_ok[:, None], other=0.0)
        m_new = tl.maximum(m_i, lse)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.math.exp2(m_i - m_safe)
        w = tl.math.exp2(lse - m_safe)
        l_i = l_i * alpha + w
        acc = acc * alpha[:, None] + w[:, None] * o_c
        m_i = m_new
    o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    i = rows % Tq
    h = hk * GROUP + rows // Tq
    tl.store(o_ptr + b * stride_ob + h[:, None] * stride_oh + i[:, None] * stride_om + offs_d[None, :] * stride_od,
             o.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])


# ----------------------------------------------------------------------------------------------- launchers
def _check(q, k, v, doc_ids):
    attention_args(q, k, v, doc_ids)  # shared with the public function: every path refuses the same inputs


def _check_triton(q):
    if q.shape[-1] not in HEAD_DIMS:
        raise ValueError(f"the Triton attention supports head dims {HEAD_DIMS}; got q {tuple(q.shape)}")
    if q.dtype == torch.float32 and not interpreting():
        raise ValueError("the compiled Triton attention takes fp16 or bf16; `attention` runs fp32 through SDPA")


def _doc_args(doc_ids, placeholder):
    if doc_ids is None:
        return placeholder, (0, 0)  # never read: HAS_DOCS is False
    return doc_ids, (doc_ids.stride(0), doc_ids.stride(1))


def attention_fwd(q, k, v, doc_ids, causal: bool, scale: float):
    """General forward. Returns O (B, H, Tq, D) in q's dtype and lse2 (B, H, Tq) fp32 (base 2)."""
    _check(q, k, v, doc_ids)
    _check_triton(q)
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    o = torch.empty((B, H, Tq, D), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, H, Tq), device=q.device, dtype=torch.float32)
    doc, doc_strides = _doc_args(doc_ids, lse)
    _attention_fwd_kernel[lambda meta: (triton.cdiv(Tq, meta["BLOCK_M"]), B * H)](
        q, k, v, doc, o, lse,
        *q.stride(), *k.stride(), *v.stride(), *doc_strides, *o.stride(),
        H, Tq, Tk, H // Hkv, scale * LOG2E, triton.next_power_of_2(Tk),
        HEAD_DIM=D, IS_CAUSAL=causal, HAS_DOCS=doc_ids is not None,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32")
    return o, lse


def attention_decode(q, k, v, doc_ids, causal: bool, scale: float, num_splits: int | None = None):
    """Forward-only attention for a few query rows (Tq <= 16, G·Tq <= 128) against a long Tk, split-K over Tk."""
    _check(q, k, v, doc_ids)
    _check_triton(q)
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    group = H // Hkv
    if Tq > DECODE_MAX_TQ or group * Tq > DECODE_MAX_ROWS:
        raise ValueError(f"decode needs Tq <= {DECODE_MAX_TQ} and G·Tq <= {DECODE_MAX_ROWS}; got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}")
    if B == 0:  # an empty batch: nothing to launch (and no programs to share the SMs among)
        return torch.empty((0, H, Tq, D), device=q.device, dtype=q.dtype)
    interpret = interpreting()
    block_n = 16 if interpret else 64
    n_blocks = triton.cdiv(Tk, block_n)
    if num_splits is None:  # about two programs per SM, never a split without keys
        sms = 1 if interpret else torch.cuda.get_device_properties(q.device).multi_processor_count
        num_splits = min(n_blocks, max(1, triton.cdiv(2 * sms, B * Hkv)), 64)
    keys_per_split = triton.cdiv(n_blocks, max(1, min(num_splits, n_blocks))) * block_n
    num_splits = triton.cdiv(Tk, keys_per_split)
    n_rows = group * Tq
    po = torch.empty((B * Hkv, num_splits, n_rows, D), device=q.device, dtype=torch.float32)
    plse = torch.empty((B * Hkv, num_splits, n_rows), device=q.device, dtype=torch.float32)
    o = torch.empty((B, H, Tq, D), device=q.device, dtype=q.dtype)
    doc, doc_strides = _doc_args(doc_ids, plse)
    block_m = max(16, triton.next_power_of_2(n_rows))
    # Both kernels hold (BLOCK_M, D) fp32 tiles: up to 64 x 128 fit 4 warps; 128 rows at head dim 128 spill
    # registers over 4 warps (bench/compile.py), so they take 8.
    warps = 4 if block_m * D <= 64 * 128 else 8
    _attention_decode_kernel[(B * Hkv, num_splits)](
        q, k, v, doc, po, plse,
        *q.stride(), *k.stride(), *v.stride(), *doc_strides,
        Hkv, Tq, Tk, group, scale * LOG2E, keys_per_split, num_splits,
        HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n, IS_CAUSAL=causal, HAS_DOCS=doc_ids is not None,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=warps, num_stages=1 if interpret else 3)
    _attention_decode_combine_kernel[(B * Hkv,)](
        po, plse, o, *o.stride(), Hkv, Tq, group, num_splits, HEAD_DIM=D, BLOCK_M=block_m, num_warps=warps)
    return o


# ----------------------------------------------------------------------------------------------- autograd
class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, doc_ids, causal, scale):
        o, lse = attention_fwd(q, k, v, doc_ids, causal, scale)
        ctx.save_for_backward(q, k, v, doc_ids, o, lse)  # lse2 (B, H, Tq), not P
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, doc_ids, o, lse = ctx.saved_tensors
        dq, dk, dv = attention_bwd(q, k, v, o, lse, do, doc_ids, ctx.causal, ctx.scale)
        return dq, dk, dv, None, None, None


# ----------------------------------------------------------------------------------------------- public
def attention(q, k, v, *, causal: bool = True, doc_ids: torch.Tensor | None = None,
              scale: float | None = None, backend: str = "auto", mask_cache: dict | None = None) -> torch.Tensor:
    """Grouped-query attention with causal and document masks (see the module docstring for the rule).

    q (B, H, Tq, D); k, v (B, Hkv, Tk, D) with H % Hkv == 0 and Tq <= Tk (query rows are the last Tq key
    positions); doc_ids None or (B, Tk) integers; scale defaults to D^-1/2. Returns (B, H, Tq, D) in q's dtype.
    backend: "auto" (Triton on CUDA, SDPA otherwise), "triton", "reference", or "sdpa"
    (`F.scaled_dot_product_attention` with the same mask); see `kernels._dispatch.attention_path`.
    mask_cache: a dict shared by calls with the same `causal` and `doc_ids` (a model's layers in one
    forward): the SDPA path keeps its mask there, so it is built once, not per call. Other paths ignore it.
    """
    _check(q, k, v, doc_ids)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    path = attention_path(backend, q, k, v, doc_ids)
    if path == "triton" and q.dtype == torch.float32 and not interpreting():
        path = "sdpa"  # fp32 on a GPU: the compiled kernels take fp16/bf16 (module docstring, Dtypes)
    if path == "sdpa":
        return _attention_sdpa(q, k, v, causal, doc_ids, scale, mask_cache)
    if path == "reference":
        return attention_reference(q, k, v, causal=causal, doc_ids=doc_ids, scale=scale)
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    group = q.shape[1] // k.shape[1]
    if not needs_grad and q.shape[2] <= DECODE_MAX_TQ and group * q.shape[2] <= DECODE_MAX_ROWS:
        return attention_decode(q, k, v, doc_ids, causal, scale)
    return _Attention.apply(q, k, v, doc_ids, causal, scale)
