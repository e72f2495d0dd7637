"""Shared `@triton.jit` helpers of the attention kernels (`kernels.attention`, `kernels.attention_bwd`).

The math is in `kernels.attention`'s docstring; this module holds the pieces that the forward, decode, dK/dV
and dQ kernels would otherwise each write out, so that all of them see the same visibility rule and the same
online-softmax numbers:

    load_tile            a masked (rows, D) tile of q, k, v or dO, or its transpose (D, rows)
    load_doc_ids         document ids at some positions (zeros, never compared, without documents)
    keep_mask            visible(i, s): in range, causal, same document
    causal_key_end       the last key (exclusive) a causal query block can see
    online_softmax_init  the empty running state m = −inf, l = 0, A = 0
    online_softmax_step  fold one key block into the running (m, l, A)
    online_softmax_end   O = A / l and lse2 = m + log2 l

Scores are in base-2 units throughout (S·log2 e, with log2 e folded into `qk_scale`), so the running max m
and the saved lse2 are base 2 too.
"""
import triton
import triton.language as tl

from kernels._dispatch import interpreting

LOG2E = 1.4426950408889634  # exp(x) = exp2(x · log2 e); host side only (launchers fold it into qk_scale)


def autotune_configs(by_head_dim: dict[int, list[tuple]]) -> dict:
    """`triton.autotune` arguments from per-head-dim lists of (BLOCK_M, BLOCK_N, num_warps, num_stages): a
    launch with head dim D is offered only the list of the smallest key >= D. Every listed configuration
    compiles without spilling registers on sm_90 and sm_80 at its head dims (bench/compile.py checks each one
    the autotuner can pick), so the autotuner never picks a spilling tile because it happened to time fastest."""
    # Under the interpreter every program runs in numpy, so one small tile keeps tests fast and still makes
    # short sequences span several blocks (tails get exercised).
    if interpreting():
        return dict(configs=[triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1)])
    table = {d: [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in tiles]
             for d, tiles in sorted(by_head_dim.items())}

    def for_head_dim(configs, named_args, **kwargs):
        return table[min(d for d in table if d >= kwargs["HEAD_DIM"])]

    configs = list(dict.fromkeys(c for tiles in table.values() for c in tiles))  # the union, each once
    return dict(configs=configs, prune_configs_by={"early_config_prune": for_head_dim})


@triton.jit
def load_tile(base, offs_r, offs_d, stride_r, stride_d, row_ok, TRANSPOSE: tl.constexpr):
    """base[offs_r, offs_d] as a (rows, D) tile, or as its transpose (D, rows) when TRANSPOSE (K for S = Q Kᵀ);
    rows outside row_ok read 0."""
    if TRANSPOSE:
        tile = tl.load(base + offs_r[None, :] * stride_r + offs_d[:, None] * stride_d, mask=row_ok[None, :], other=0.0)
    else:
        tile = tl.load(base + offs_r[:, None] * stride_r + offs_d[None, :] * stride_d, mask=row_ok[:, None], other=0.0)
    return tile


@triton.jit
def load_doc_ids(doc_base, pos, ok, stride_docn, HAS_DOCS: tl.constexpr):
    """Document ids of one batch row at key positions `pos` (0 where not ok). Without documents no load
    happens and the zeros returned are never compared (keep_mask ignores them)."""
    if HAS_DOCS:
        ids = tl.load(doc_base + pos * stride_docn, mask=ok, other=0)
    else:
        ids = tl.full(pos.shape, 0, tl.int32)
    return ids


@triton.jit
def keep_mask(q_idx, k_idx, doc_q, doc_k, Tq, Tk, IS_CAUSAL: tl.constexpr, HAS_DOCS: tl.constexpr):
    """visible(i, s) for query rows q_idx and key positions k_idx, already shaped to broadcast (e.g.
    offs_m[:, None] and offs_n[None, :]), with their document ids shaped alike. Query row i sits at key
    position i + (Tk − Tq) (bottom-right aligned); out-of-range rows and keys are not visible."""
    keep = (q_idx < Tq) & (k_idx < Tk)
    if IS_CAUSAL:
        keep = keep & (k_idx <= q_idx + (Tk - Tq))
    if HAS_DOCS:
        keep = keep & (doc_q == doc_k)
    return keep


@triton.jit
def causal_key_end(pid_m, Tq, Tk, BLOCK_M: tl.constexpr, IS_CAUSAL: tl.constexpr):
    """End of the key loop for query block pid_m: keys after the block's last query position are invisible
    to the whole block when causal, so the loop stops there (and runs to Tk otherwise)."""
    hi = Tk
    if IS_CAUSAL:
        hi = tl.minimum(Tk, (pid_m + 1) * BLOCK_M + Tk - Tq)
    return hi


@triton.jit
def online_softmax_init(BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):
    """The empty state of BLOCK_M rows: running max m = −inf (base 2), l = 0, A = 0 (BLOCK_M, HEAD_DIM), fp32."""
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    return m_i, l_i, acc


@triton.jit
def online_softmax_step(q, k_t, v, keep, m_i, l_i, acc, qk_scale, DOT_PRECISION: tl.constexpr):
    """Fold one key block into the running state: S = q k_t · qk_scale (base 2), −inf where not keep;
    m' = max(m, rowmax S), α = 2^(m − m'), l ← α l + rowsum 2^(S − m'), A ← α A + 2^(S − m') v.
    q (M, D), k_t (D, N), v (N, D) in the inputs' dtype; m_i, l_i (M,) and acc (M, D) fp32."""
    s = tl.dot(q, k_t, input_precision=DOT_PRECISION) * qk_scale  # (M, N)
    s = tl.where(keep, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    # A row that has seen no visible key yet keeps m = −inf; subtracting 0 instead avoids −inf − (−inf).
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_safe)
    p = tl.math.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l_i, acc


@triton.jit
def online_softmax_end(m_i, l_i, acc, EMPTY_LSE: tl.constexpr):
    """O = A / l (M, D) and lse2 = m + log2 l (M,), both fp32. A row that saw no visible key (l = 0) gets
    O = 0 and lse2 = EMPTY_LSE: +inf where lse2 is saved for the backward (P = 0 there), −inf for a
    decode split (weight 0 in the merge)."""
    empty = l_i == 0.0
    o = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, EMPTY_LSE, m_i + tl.math.log2(tl.where(empty, 1.0, l_i)))
    return o, lse
