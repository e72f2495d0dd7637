"""Backward kernels of `kernels.attention` (the math is derived in that module's docstring).

Three launches, FlashAttention-2 style, none of them with atomics:
  1. `_attention_bwd_preprocess_kernel`: Δ_i = Σ_d dO_id · O_id                         (B, H, Tq) fp32
  2. `_attention_bwd_dkdv_kernel`: one program per (key block, b, kv head). It holds K_j, V_j and loops over
     the G query heads of its group and their query blocks, so the GQA sums dK = Σ_h scale·dSᵀQ and
     dV = Σ_h Pᵀ dO happen in registers.
  3. `_attention_bwd_dq_kernel`: one program per (query block, b, h); loops over key blocks for dQ = scale·dS K.
P is recomputed in both 2 and 3 from the saved base-2 log-sum-exp: P = exp2(S·log2(e) − lse2).

The tile loads and the visibility rule are the helpers in `kernels._attention_common`, shared with the forward.
"""
import torch
import triton
import triton.language as tl

from kernels._attention_common import LOG2E, autotune_configs, causal_key_end, keep_mask, load_doc_ids, load_tile


@triton.jit
def _attention_bwd_preprocess_kernel(
    o_ptr, do_ptr, delta_ptr,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dob, stride_doh, stride_dom, stride_dod,
    H, Tq,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < Tq
    o = load_tile(o_ptr + b * stride_ob + h * stride_oh, offs_m, offs_d, stride_om, stride_od, row_ok, False)
    do = load_tile(do_ptr + b * stride_dob + h * stride_doh, offs_m, offs_d, stride_dom, stride_dod, row_ok, False)
    o, do = o.to(tl.float32), do.to(tl.float32)
    tl.store(delta_ptr + pid_bh * Tq + offs_m, tl.sum(o * do, axis=1), mask=row_ok)


# (BLOCK_M, BLOCK_N, warps, stages) per head dim, each free of spills on sm_90 and sm_80 (bench/compile.py).
# dK/dV keeps K, V and two fp32 (BLOCK_N, D) accumulators live for the whole loop: at head dim 128 that
# leaves room for 16- or 32-row query blocks only, and for 64 keys at most over 4 warps.
DKDV_CONFIGS = {
    64: [(32, 128, 8, 3), (64, 128, 8, 3), (32, 64, 4, 3), (64, 64, 8, 3)],
    128: [(32, 64, 8, 3), (16, 128, 8, 3), (32, 32, 4, 3), (16, 64, 4, 3)],
}
# dQ keeps Q, dO and the fp32 dQ accumulator (BLOCK_M, D) live: 128 rows need 8 warps, and at head dim 128
# so does a 64 x 64 tile (64 x 32 fits 4).
DQ_CONFIGS = {
    32: [(128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3), (64, 32, 4, 4)],
    64: [(128, 32, 8, 3), (64, 32, 4, 3), (64, 32, 4, 4), (32, 64, 4, 3)],
    128: [(64, 64, 8, 3), (64, 32, 4, 3), (64, 32, 4, 4), (32, 64, 4, 3)],
}


@triton.autotune(**autotune_configs(DKDV_CONFIGS),
                 key=["HEAD_DIM", "IS_CAUSAL", "HAS_DOCS", "GROUP", "t_bucket"])
@triton.jit
def _attention_bwd_dkdv_kernel(
    # pointers
    q_ptr, k_ptr, v_ptr, doc_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    # strides (dk and dv share the contiguous (B, Hkv, Tk, D) layout)
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_docb, stride_docn,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    # sizes
    Hkv, Tq, Tk, GROUP, sm_scale, qk_scale, t_bucket,
    # meta-parameters
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_DOCS: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)  # int64: b·stride_b overflows int32 for large batches
    b = pid_bh // Hkv
    hk = pid_bh % Hkv
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = offs_n < Tk

    # 1. This program's key block: K_j, V_j (BLOCK_N, D) stay in registers for the whole loop.
    k = load_tile(k_ptr + b * stride_kb + hk * stride_kh, offs_n, offs_d, stride_kn, stride_kd, col_ok, False)
    v = load_tile(v_ptr + b * stride_vb + hk * stride_vh, offs_n, offs_d, stride_vn, stride_vd, col_ok, False)
    doc_base = doc_ptr + b * stride_docb
    doc_k = load_doc_ids(doc_base, offs_n, col_ok, stride_docn, HAS_DOCS)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    # Causal: query row i sees key s only if s <= i + Tk − Tq, so rows before the block's first key
    # minus (Tk − Tq) see none of it; start at the query block holding that row.
    lo = 0
    if IS_CAUSAL:
        lo = tl.maximum(pid_n * BLOCK_N - (Tk - Tq), 0) // BLOCK_M * BLOCK_M

    # 2. Every (query head of the group, query block that can see this key block) pair, as one flat loop: a
    #    loop nested in the head loop keeps more values live across both, and spilled at head dim 128 with GQA.
    n_m = tl.cdiv(Tq - lo, BLOCK_M)  # query blocks per head
    for it in range(0, GROUP * n_m):
        g = it // n_m
        h = hk * GROUP + g
        start_m = lo + (it - g * n_m) * BLOCK_M
        row_base = (b * Hkv * GROUP + h) * Tq  # into lse and Δ, (B, H, Tq) contiguous
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < Tq
        q = load_tile(q_ptr + b * stride_qb + h * stride_qh, offs_m, offs_d, stride_qm, stride_qd, row_ok, False)
        do = load_tile(do_ptr + b * stride_dob + h * stride_doh, offs_m, offs_d, stride_dom, stride_dod, row_ok,
                       False)
        lse = tl.load(lse_ptr + row_base + offs_m, mask=row_ok, other=float("inf"))
        delta = tl.load(delta_ptr + row_base + offs_m, mask=row_ok, other=0.0)
        # 3. Pᵀ = exp2(Sᵀ·log2 e − lse2), transposed so that dV and dK come out as plain products.
        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_N, BLOCK_M)
        doc_q = load_doc_ids(doc_base, offs_m + Tk - Tq, row_ok, stride_docn, HAS_DOCS)
        keep = keep_mask(offs_m[None, :], offs_n[:, None], doc_q[None, :], doc_k[:, None], Tq, Tk,
                         IS_CAUSAL, HAS_DOCS)
        # An empty row has lse2 = +inf, so exp2 gives 0 there rather than NaN.
        p_t = tl.where(keep, tl.math.exp2(s_t - lse[None, :]), 0.0)
        # 4. dV += Pᵀ dO
        dv += tl.dot(p_t.to(do.dtype), do, input_precision=DOT_PRECISION)
        # 5. dPᵀ = V dOᵀ;  dSᵀ = Pᵀ∘(dPᵀ − Δ);  dK += dSᵀ Q  (scale applied once at the end)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += tl.dot(ds_t.to(q.dtype), q, input_precision=DOT_PRECISION)

    out = b * stride_dkb + hk * stride_dkh + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd
    tl.store(dk_ptr + out, (dk * sm_scale).to(dk_ptr.dtype.element_ty), mask=col_ok[:, None])
    tl.store(dv_ptr + out, dv.to(dv_ptr.dtype.element_ty), mask=col_ok[:, None])


@triton.autotune(**autotune_configs(DQ_CONFIGS),
                 key=["HEAD_DIM", "IS_CAUSAL", "HAS_DOCS", "t_bucket"])
@triton.jit
def _attention_bwd_dq_kernel(
    # pointers
    q_ptr, k_ptr, v_ptr, doc_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    # strides (dq has q's shape, contiguous)
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_docb, stride_docn,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    # sizes
    H, Tq, Tk, GROUP, sm_scale, qk_scale, t_bucket,
    # meta-parameters
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_DOCS: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // GROUP
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < Tq

    # 1. This program's query block with its dO, lse2 and Δ.
    q = load_tile(q_ptr + b * stride_qb + h * stride_qh, offs_m, offs_d, stride_qm, stride_qd, row_ok, False)
    do = load_tile(do_ptr + b * stride_dob + h * stride_doh, offs_m, offs_d, stride_dom, stride_dod, row_ok, False)
    lse = tl.load(lse_ptr + pid_bh * Tq + offs_m, mask=row_ok, other=float("inf"))
    delta = tl.load(delta_ptr + pid_bh * Tq + offs_m, mask=row_ok, other=0.0)
    doc_base = doc_ptr + b * stride_docb
    doc_q = load_doc_ids(doc_base, offs_m + Tk - Tq, row_ok, stride_docn, HAS_DOCS)
    k_base = k_ptr + b * stride_kb + hk * stride_kh
    v_base = v_ptr + b * stride_vb + hk * stride_vh
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # 2. Every key block this query block can see.
    for start_n in range(0, causal_key_end(pid_m, Tq, Tk, BLOCK_M, IS_CAUSAL), BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_ok = offs_n < Tk
        k_t = load_tile(k_base, offs_n, offs_d, stride_kn, stride_kd, col_ok, True)  # (D, BLOCK_N)
        v_t = load_tile(v_base, offs_n, offs_d, stride_vn, stride_vd, col_ok, True)
        # 3. P = exp2(S·log2 e − lse2) on the visible entries, 0 elsewhere.
        s = tl.dot(q, k_t, input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        doc_k = load_doc_ids(doc_base, offs_n, col_ok, stride_docn, HAS_DOCS)
        keep = keep_mask(offs_m[:, None], offs_n[None, :], doc_q[:, None], doc_k[None, :], Tq, Tk,
                         IS_CAUSAL, HAS_DOCS)
        p = tl.where(keep, tl.math.exp2(s - lse[:, None]), 0.0)
        # 4. dP = dO Vᵀ;  dS = P∘(dP − Δ);  dQ += dS K
        dp = tl.dot(do, v_t, input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k_t.dtype), tl.trans(k_t), input_precision=DOT_PRECISION)

    out = b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqm + offs_d[None, :] * stride_dqd
    tl.store(dq_ptr + out, (dq * sm_scale).to(dq_ptr.dtype.element_ty), mask=row_ok[:, None])


def attention_bwd(q, k, v, o, lse, do, doc_ids, causal: bool, scale: float):
    """dQ, dK, dV of `attention` given the saved output `o` and base-2 log-sum-exp `lse` (B, H, Tq) fp32."""
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    if do.shape != o.shape:
        raise ValueError(f"attention backward: grad_output shape {tuple(do.shape)} != output shape {tuple(o.shape)}")
    delta = torch.empty((B, H, Tq), device=q.device, dtype=torch.float32)
    dq = torch.empty((B, H, Tq, D), device=q.device, dtype=q.dtype)
    dk = torch.empty((B, Hkv, Tk, D), device=q.device, dtype=k.dtype)
    dv = torch.empty((B, Hkv, Tk, D), device=q.device, dtype=v.dtype)
    has_docs = doc_ids is not None
    doc = doc_ids if has_docs else lse  # a placeholder pointer, never read when HAS_DOCS is False
    doc_strides = (doc_ids.stride(0), doc_ids.stride(1)) if has_docs else (0, 0)
    precision = "ieee" if q.dtype == torch.float32 else "tf32"  # fp32 in means fp32 products, not TF32
    t_bucket = triton.next_power_of_2(Tk)  # autotune once per power-of-two length, not per length

    _attention_bwd_preprocess_kernel[(triton.cdiv(Tq, 64), B * H)](
        o, do, delta, *o.stride(), *do.stride(), H, Tq, HEAD_DIM=D, BLOCK_M=64)
    _attention_bwd_dkdv_kernel[lambda meta: (triton.cdiv(Tk, meta["BLOCK_N"]), B * Hkv)](
        q, k, v, doc, do, lse, delta, dk, dv,
        *q.stride(), *k.stride(), *v.stride(), *doc_strides, *do.stride(), *dk.stride(),
        Hkv, Tq, Tk, H // Hkv, scale, scale * LOG2E, t_bucket,
        HEAD_DIM=D, IS_CAUSAL=causal, HAS_DOCS=has_docs, DOT_PRECISION=precision)
    _attention_bwd_dq_kernel[lambda meta: (triton.cdiv(Tq, meta["BLOCK_M"]), B * H)](
        q, k, v, doc, do, lse, delta, dq,
        *q.stride(), *k.stride(), *v.stride(), *doc_strides, *do.stride(), *dq.stride(),
        H, Tq, Tk, H // Hkv, scale, scale * LOG2E, t_bucket,
        HEAD_DIM=D, IS_CAUSAL=causal, HAS_DOCS=has_docs, DOT_PRECISION=precision)
    return dq, dk, dv
