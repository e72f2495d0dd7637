"""Shared `@triton.jit` helpers: an online log-sum-exp over one row of logits, read in vocabulary blocks.

Every kernel that normalises logits over the vocabulary (cross-entropy, per-token log-probs, GRPO) builds on
these helpers, so that all of them see the same numbers for the same row.

The math, for one row x of V logits, an optional temperature tau and an optional soft-cap c:

    z_j   = c · tanh((x_j / tau) / c)            (the transform applied on load; each part optional)
    lse   = log Σ_j exp(z_j)
    p_j   = exp(z_j − lse)                       (the softmax)
    dz_j/dx_j = (1 − (z_j / c)²) / tau           (`transform_grad`; chain rule for gradients w.r.t. x)

The row is read in blocks of BLOCK_V. Two fp32 scalars carry the state from block to block:

    m  running max of z seen so far
    s  running Σ exp(z − m)

    block b:  m' = max(m, max_b z)
              s' = s · exp(m − m') + Σ_b exp(z − m')
    end:      lse = m + log(s)

Exponentials use `exp2` with log2(e) folded into the argument (exp(a) = exp2(a · LOG2E)); logs use
`log2` times ln(2). The state is fp32 whatever the logits' dtype; loads upcast to fp32 first.

Masked lanes (the tail of the last block) load −inf, so they add exp(−inf) = 0 to s and never raise m.
The soft-cap maps −inf to −c, so `load_logits_block` puts −inf back on masked lanes after the transform.
A row whose logits are all −inf (for instance a vocabulary-masked row) gives m = −inf; the update then uses
0 instead of m' inside the exponentials to avoid (−inf) − (−inf) = NaN, so s stays 0 and lse = −inf.

How to use them (a kernel with one program per row):

    row_ptr = logits_ptr + row.to(tl.int64) * stride_row     # int64: row · stride overflows int32 for
                                                             # N·V beyond 2³¹ (e.g. 16k × 131k)
    lse = row_logsumexp(row_ptr, V, temperature, softcap,
                        HAS_TEMPERATURE, HAS_SOFTCAP, BLOCK_V)
    z_t = load_logit(row_ptr, t, temperature, softcap, HAS_TEMPERATURE, HAS_SOFTCAP)  # target's z
    logp_t = z_t - lse

or, to fuse other per-block work into the same pass, keep the state yourself:

    m, s = lse_init()
    for start in range(0, V, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        z = load_logits_block(row_ptr, offs, V, temperature, softcap, HAS_TEMPERATURE, HAS_SOFTCAP)
        m, s = lse_update(m, s, z)
        ...                                       # e.g. gather the target, accumulate Σ z·exp(z)
    lse = lse_finalize(m, s)

and in a second pass `p = softmax_block(z, lse)` (0 on masked lanes), then multiply gradients w.r.t. z by
`transform_grad(z, temperature, softcap, ...)` to get gradients w.r.t. the stored logits x.

Conventions: the vocabulary dimension of the logits must be contiguous (stride 1; launchers check);
`temperature` and `softcap` are fp32 runtime scalars, read only when HAS_TEMPERATURE / HAS_SOFTCAP are set
(pass 1.0 otherwise); temperature divides (x / tau, as the references do), it is not multiplied by 1/tau.
"""
import triton
import triton.language as tl

# Globals read inside @triton.jit must be tl.constexpr objects: an annotation (`LOG2E: tl.constexpr = ...`)
# satisfies the interpreter but not the compiler. Keep the constant on the right of a product with a tensor
# (`t * LOG2E`): the interpreter evaluates `LOG2E * t` as a constexpr wrapping the tensor.
LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): exp(a) = exp2(a · LOG2E)
LN2 = tl.constexpr(0.6931471805599453)  # ln(2):   log(a) = log2(a) · LN2


@triton.jit
def _tanh(x):
    # tanh(x) = sign(x) · (1 − e) / (1 + e) with e = exp(−2|x|) ∈ (0, 1]: no overflow for any x, and ±inf
    # map to ±1. Written out because the interpreter and every GPU backend all have exp2.
    e = tl.exp2(tl.abs(x) * (-2.0 * LOG2E))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def transform_logits(x, temperature, softcap, HAS_TEMPERATURE: tl.constexpr, HAS_SOFTCAP: tl.constexpr):
    """z = softcap · tanh((x / temperature) / softcap), each step only when its switch is on; x is fp32."""
    if HAS_TEMPERATURE:
        x = x / temperature
    if HAS_SOFTCAP:
        x = softcap * _tanh(x / softcap)
    return x


@triton.jit
def transform_grad(z, temperature, softcap, HAS_TEMPERATURE: tl.constexpr, HAS_SOFTCAP: tl.constexpr):
    """dz/dx for z = transform_logits(x), written in terms of z: (1 − (z / softcap)²) / temperature."""
    g = tl.full(z.shape, 1.0, tl.float32)
    if HAS_SOFTCAP:
        zc = z / softcap
        g = 1.0 - zc * zc
    if HAS_TEMPERATURE:
        g = g / temperature
    return g


@triton.jit
def load_logits_block(row_ptr, offs, V, temperature, softcap,
                      HAS_TEMPERATURE: tl.constexpr, HAS_SOFTCAP: tl.constexpr):
    """Load logits row_ptr[offs] as fp32 z (transformed); lanes with offs >= V are −inf."""
    mask = offs < V
    x = tl.load(row_ptr + offs, mask=mask, other=float("-inf")).to(tl.float32)
    z = transform_logits(x, temperature, softcap, HAS_TEMPERATURE, HAS_SOFTCAP)
    # the soft-cap maps the −inf padding to −softcap: restore it so masked lanes stay out of the sum
    return tl.where(mask, z, float("-inf"))


@triton.jit
def load_logit(row_ptr, idx, temperature, softcap, HAS_TEMPERATURE: tl.constexpr, HAS_SOFTCAP: tl.constexpr):
    """The transformed logit z at one index (e.g. the target), fp32. The caller guarantees 0 <= idx < V."""
    x = tl.load(row_ptr + idx).to(tl.float32)
    return transform_logits(x, temperature, softcap, HAS_TEMPERATURE, HAS_SOFTCAP)


@triton.jit
def lse_init():
    """The empty state: m = −inf, s = 0 (fp32 scalars)."""
    m = tl.full((), float("-inf"), tl.float32)
    s = tl.full((), 0.0, tl.float32)
    return m, s


@triton.jit
def lse_update(m, s, z):
    """Fold one block z (fp32, −inf on masked lanes) into the running (max, sum of exponentials)."""
    m_new = tl.maximum(m, tl.max(z, axis=0))
    # while every z so far is −inf, shift by 0 instead of −inf so that exp2 sees −inf, not NaN
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    s = s * tl.exp2((m - m_safe) * LOG2E) + tl.sum(tl.exp2((z - m_safe) * LOG2E), axis=0)
    return m_new, s


@triton.jit
def lse_finalize(m, s):
    """lse = m + log(s); −inf for a row with no finite logit."""
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    return m_safe + tl.log2(s) * LN2


@triton.jit
def softmax_block(z, lse):
    """p = exp(z − lse) for a block of z (fp32); 0 on masked lanes (z = −inf), also when lse = −inf."""
    return tl.where(z == float("-inf"), 0.0, tl.exp2((z - lse) * LOG2E))


@triton.jit
def row_logsumexp(row_ptr, V, temperature, softcap,
                  HAS_TEMPERATURE: tl.constexpr, HAS_SOFTCAP: tl.constexpr, BLOCK_V: tl.constexpr):
    """log Σ_j exp(z_j) over one contiguous row of V logits, in blocks of BLOCK_V; fp32 scalar."""
    m, s = lse_init()
    for start in range(0, V, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        z = load_logits_block(row_ptr, offs, V, temperature, softcap, HAS_TEMPERATURE, HAS_SOFTCAP)
        m, s = lse_update(m, s, z)
    return lse_finalize(m, s)
