"""kernels.attention: forward and dQ, dK, dV against the fp32 reference, the decode path against the general
one, the "sdpa" backend against the reference, and doc_ids_from_cu_seqlens.

On CPU the Triton kernels run in the interpreter at small shapes, in fp32 and fp16 (the interpreter's bf16
matmul is unusable); the GPU-marked tests cover full shapes and judge fp16/bf16 three ways against fp32.
"""
import pytest
import torch
import torch.nn.functional as F

from kernels._attention_common import autotune_configs
from kernels.attention import (attention, attention_decode, attention_fwd, attention_reference,
                               doc_ids_from_cu_seqlens)
from tests.helpers import assert_close, assert_lowp

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(B, H, Hkv, Tq, Tk, D, dtype=torch.float32, device=DEVICE, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(B, H, Tq, D, generator=g).to(device, dtype)
    k = torch.randn(B, Hkv, Tk, D, generator=g).to(device, dtype)
    v = torch.randn(B, Hkv, Tk, D, generator=g).to(device, dtype)
    do = torch.randn(B, H, Tq, D, generator=g).to(device, dtype)
    return q, k, v, do


def make_docs(kind, B, Tk, device=DEVICE, seed=0):
    """Document ids (B, Tk) of a named layout, or None."""
    if kind is None:
        return None
    g = torch.Generator(device="cpu").manual_seed(seed)
    if kind == "packed":  # random document lengths, including documents of length 1
        ends = torch.randint(0, 4, (B, Tk), generator=g) == 0
        ids = ends.long().cumsum(1)
        ids[:, 1] = ids[:, 0] + 1  # a document of length 1 at the start
    elif kind == "singletons":  # every token its own document
        ids = torch.arange(Tk).expand(B, Tk).clone()
    elif kind == "padded":  # row 0 right-padded, row 1 left-padded, the last row all padding
        ids = torch.zeros(B, Tk, dtype=torch.long)
        ids[0, Tk * 2 // 3:] = -1
        if B > 1:
            ids[1, :Tk // 3] = -1
        ids[-1] = -1
    else:
        raise ValueError(kind)
    return ids.to(device=device, dtype=torch.int32)


def run(q, k, v, do, backend, **kw):
    """Output and (dq, dk, dv) of attention for upstream gradient do."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    if backend == "reference":
        o = attention_reference(q, k, v, **kw)
    else:
        o = attention(q, k, v, backend=backend, **kw)
    o.backward(do)
    return o.detach(), q.grad, k.grad, v.grad


def check_against_reference(q, k, v, do, tol_dtype, **kw):
    o, dq, dk, dv = run(q, k, v, do, "triton", **kw)
    ro, rdq, rdk, rdv = run(q.float(), k.float(), v.float(), do.float(), "reference", **kw)
    for name, got, want in (("out", o, ro), ("dq", dq, rdq), ("dk", dk, rdk), ("dv", dv, rdv)):
        assert_close(got, want, tol_dtype, name, "attention")


# ------------------------------------------------------------------------------ Triton vs reference, CPU sizes
# (B, H, Hkv, Tq, Tk, D, causal, docs)
SHAPES = [
    (1, 1, 1, 1, 1, 32, True, None),           # T = 1
    (2, 2, 2, 37, 37, 32, True, None),         # T not a multiple of the block
    (2, 2, 2, 37, 37, 32, False, None),
    (1, 4, 2, 33, 33, 32, True, None),         # GQA 2
    (1, 4, 1, 19, 19, 32, False, None),        # GQA 4
    (1, 2, 1, 17, 17, 64, True, None),         # head dim 64
    (1, 2, 2, 17, 17, 128, True, None),        # head dim 128
    (2, 2, 1, 40, 40, 32, True, "packed"),     # packed documents, some of length 1
    (2, 2, 1, 40, 40, 32, False, "packed"),
    (1, 2, 2, 18, 18, 32, True, "singletons"),
    (3, 4, 2, 29, 29, 32, True, "padded"),     # right, left and fully padded rows
    (2, 2, 1, 21, 37, 32, True, "packed"),     # Tq < Tk with gradients: a chunk of queries against a cache
    (1, 4, 2, 20, 37, 32, False, None),
]


@pytest.mark.parametrize("B,H,Hkv,Tq,Tk,D,causal,docs", SHAPES)
def test_triton_matches_reference_fp32(B, H, Hkv, Tq, Tk, D, causal, docs):
    q, k, v, do = make_inputs(B, H, Hkv, Tq, Tk, D)
    check_against_reference(q, k, v, do, torch.float32, causal=causal, doc_ids=make_docs(docs, B, Tk))


@pytest.mark.parametrize("causal,docs", [(True, None), (True, "packed")])
def test_triton_matches_reference_fp16(causal, docs):
    q, k, v, do = make_inputs(2, 4, 2, 23, 23, 32, dtype=torch.float16)
    check_against_reference(q, k, v, do, torch.float16, causal=causal, doc_ids=make_docs(docs, 2, 23))


def test_triton_honours_strides():
    # q from a (B, T, H, D) projection, k and v views of a longer (B, T, Hkv, D) buffer, docs a strided slice.
    q, k, v, do = make_inputs(2, 4, 2, 25, 25, 32)
    q_view = q.transpose(1, 2).contiguous().transpose(1, 2)
    k_buf = torch.randn(2, 40, 2, 32, device=DEVICE)
    k_buf[:, :25] = k.transpose(1, 2)
    k_view = k_buf.transpose(1, 2)[:, :, :25]
    v_view = torch.cat([v, torch.randn_like(v)], dim=-1)[..., :32]
    docs = make_docs("packed", 2, 50)[:, ::2]
    assert not (q_view.is_contiguous() or k_view.is_contiguous() or v_view.is_contiguous() or docs.is_contiguous())
    o, dq, dk, dv = run(q_view, k_view, v_view, do.transpose(2, 3).contiguous().transpose(2, 3), "triton",
                        doc_ids=docs)
    ro, rdq, rdk, rdv = run(q, k, v, do, "reference", doc_ids=docs.contiguous())
    for name, got, want in (("out", o, ro), ("dq", dq, rdq), ("dk", dk, rdk), ("dv", dv, rdv)):
        assert_close(got, want, torch.float32, name, "attention")


def test_gqa_gradients_sum_over_group():
    # dK of a shared kv head must equal the sum of the dK each query head gets from its own copy of that head.
    q, k, v, do = make_inputs(1, 4, 1, 19, 19, 32)
    _, _, dk, dv = run(q, k, v, do, "triton")
    _, _, dk_rep, dv_rep = run(q, k.expand(1, 4, 19, 32).contiguous(), v.expand(1, 4, 19, 32).contiguous(), do,
                               "triton")
    assert_close(dk, dk_rep.sum(1, keepdim=True), torch.float32, "dk", "attention")
    assert_close(dv, dv_rep.sum(1, keepdim=True), torch.float32, "dv", "attention")


def test_padding_does_not_leak_into_real_tokens():
    # Changing keys and values at padded positions must not change any real token's output.
    q, k, v, _ = make_inputs(2, 2, 1, 24, 24, 32)
    docs = make_docs("padded", 2, 24)
    pad = (docs == -1)[:, None, :, None]  # (B, 1, Tk, 1)
    o1 = attention(q, k, v, doc_ids=docs, backend="triton")
    o2 = attention(q, torch.where(pad, 100.0, k), torch.where(pad, -100.0, v), doc_ids=docs, backend="triton")
    real = ~pad.expand_as(o1)
    assert_close(o2[real], o1[real], torch.float32, "real-token output", "exact")


# ------------------------------------------------------------------------------ decode
@pytest.mark.parametrize("Tq", [1, 3])
@pytest.mark.parametrize("H,Hkv", [(2, 2), (4, 1)])
@pytest.mark.parametrize("num_splits", [1, 3, None])
def test_decode_matches_general_path(Tq, H, Hkv, num_splits):
    # A cache of capacity 48 holding 37 positions, passed as the view k_cache[:, :, :37].
    B, Tk, D = 2, 37, 32
    q, _, _, _ = make_inputs(B, H, Hkv, Tq, Tk, D)
    k_cache = torch.randn(B, Hkv, 48, D, device=DEVICE)
    v_cache = torch.randn(B, Hkv, 48, D, device=DEVICE)
    k, v = k_cache[:, :, :Tk], v_cache[:, :, :Tk]
    for causal, docs in ((True, None), (False, None), (True, make_docs("packed", B, Tk))):
        got = attention_decode(q, k, v, docs, causal, D ** -0.5, num_splits=num_splits)
        general, _ = attention_fwd(q, k, v, docs, causal, D ** -0.5)
        want = attention_reference(q, k, v, causal=causal, doc_ids=docs)
        assert_close(got, general, torch.float32, f"decode vs general (causal={causal}, docs={docs is not None})",
                     "attention")
        assert_close(got, want, torch.float32, f"decode vs reference (causal={causal}, docs={docs is not None})",
                     "attention")


def test_public_attention_routes_small_tq_to_decode_without_grad():
    q, k, v, do = make_inputs(1, 4, 2, 2, 37, 32)
    with torch.no_grad():
        fast = attention(q, k, v, backend="triton")
    assert_close(fast, attention_decode(q, k, v, None, True, 32 ** -0.5), torch.float32, "no-grad decode", "exact")
    # With gradients required the same call goes through the general path and is differentiable.
    o, dq, dk, dv = run(q, k, v, do, "triton")
    ro, rdq, rdk, rdv = run(q, k, v, do, "reference")
    for name, got, want in (("out", o, ro), ("dq", dq, rdq), ("dk", dk, rdk), ("dv", dv, rdv)):
        assert_close(got, want, torch.float32, name, "attention")


# ------------------------------------------------------------------------------ compiled for a GPU
def test_fp32_runs_through_sdpa_when_compiled(monkeypatch):
    """Compiled (not interpreted), the kernels take fp16/bf16 only: fp32 attention goes to SDPA, and the
    launchers refuse fp32 rather than launch kernels that spill and overflow an A100's shared memory."""
    q, k, v, _ = make_inputs(1, 4, 2, 23, 23, 32)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="fp16 or bf16"):
        attention_fwd(q, k, v, None, True, 32 ** -0.5)
    want = attention_reference(q, k, v, causal=True)
    assert_close(attention(q, k, v, backend="triton"), want, torch.float32, "fp32 via SDPA", "attention")


def test_autotune_offers_each_head_dim_its_own_configs(monkeypatch):
    """A head dim gets the list of the smallest listed head dim at or above it, and only that list."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    tune = autotune_configs({32: [(128, 64, 8, 3)], 128: [(64, 64, 8, 3), (32, 64, 4, 3)]})
    assert len(tune["configs"]) == 3
    offered = lambda d: [(c.kwargs["BLOCK_M"], c.num_warps)  # noqa: E731
                         for c in tune["prune_configs_by"]["early_config_prune"](tune["configs"], {}, HEAD_DIM=d)]
    assert offered(16) == offered(32) == [(128, 8)]
    assert offered(64) == offered(128) == [(64, 8), (32, 4)]


# ------------------------------------------------------------------------------ sdpa backend and reference
@pytest.mark.parametrize("Tq,Tk,causal,docs", [
    (23, 23, True, None), (23, 23, False, None), (5, 23, True, None), (23, 23, True, "padded"),
    (23, 23, False, "packed"), (1, 23, True, "packed")])
def test_sdpa_backend_matches_reference(Tq, Tk, causal, docs):
    q, k, v, do = make_inputs(3, 4, 2, Tq, Tk, 16)
    kw = dict(causal=causal, doc_ids=make_docs(docs, 3, Tk))
    o, dq, dk, dv = run(q, k, v, do, "sdpa", **kw)
    ro, rdq, rdk, rdv = run(q, k, v, do, "reference", **kw)
    for name, got, want in (("out", o, ro), ("dq", dq, rdq), ("dk", dk, rdk), ("dv", dv, rdv)):
        assert_close(got, want, torch.float32, name, "attention")


def test_reference_matches_torch_sdpa():
    q, k, v, _ = make_inputs(2, 4, 2, 19, 19, 16)
    want = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True)
    assert_close(attention_reference(q, k, v), want, torch.float32, "reference", "attention")


def test_invalid_inputs_raise_with_shapes():
    q, k, v, _ = make_inputs(1, 3, 2, 4, 4, 32)
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 32\)"):
        attention(q, k, v)
    q, k, v, _ = make_inputs(1, 2, 1, 5, 4, 32)
    with pytest.raises(ValueError, match="Tq <= Tk"):
        attention(q, k, v)
    q, k, v, _ = make_inputs(1, 2, 1, 4, 4, 48)
    with pytest.raises(ValueError, match="head dims"):
        attention(q, k, v, backend="triton")
    q, k, v, _ = make_inputs(1, 2, 1, 4, 4, 32)
    with pytest.raises(ValueError, match="doc_ids"):
        attention(q, k, v, doc_ids=torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="backend"):
        attention(q, k, v, backend="flash")


# ------------------------------------------------------------------------------ doc_ids_from_cu_seqlens
def test_doc_ids_from_cu_seqlens():
    ids = doc_ids_from_cu_seqlens(torch.tensor([0, 3, 4, 4, 7]), 9)
    assert ids.dtype == torch.int32
    assert ids.tolist() == [0, 0, 0, 1, 3, 3, 3, -1, -1]  # doc 2 is empty; positions 7, 8 are padding
    assert doc_ids_from_cu_seqlens(torch.tensor([0, 5], dtype=torch.int32), 5).tolist() == [0] * 5
    assert doc_ids_from_cu_seqlens(torch.tensor([0]), 3).tolist() == [-1] * 3
    for bad in ([1, 3], [0, 4, 2], [0, 10]):
        with pytest.raises(ValueError, match="cu_seqlens"):
            doc_ids_from_cu_seqlens(torch.tensor(bad), 5)


def test_cu_seqlens_docs_equal_separate_documents():
    # Packed attention over ids from cu_seqlens equals attending each document on its own.
    cu = torch.tensor([0, 5, 6, 13])
    docs = doc_ids_from_cu_seqlens(cu, 16).to(DEVICE)[None]
    q, k, v, _ = make_inputs(1, 2, 1, 16, 16, 32)
    packed = attention(q, k, v, doc_ids=docs, backend="triton")
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        alone = attention_reference(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b])
        assert_close(packed[:, :, a:b], alone, torch.float32, f"document [{a}, {b})", "attention")


# ------------------------------------------------------------------------------ GPU: full shapes, low precision
@pytest.mark.gpu
@pytest.mark.parametrize("T", [128, 1000, 4096])
@pytest.mark.parametrize("H,Hkv,D", [(8, 8, 64), (8, 2, 128), (4, 4, 32)])
@pytest.mark.parametrize("causal,docs", [(True, None), (False, None), (True, "packed")])
def test_gpu_fp32_full_shapes(T, H, Hkv, D, causal, docs):
    """fp32 on a GPU runs through SDPA (kernels/attention.py, Dtypes): the route, against the reference."""
    q, k, v, do = make_inputs(2, H, Hkv, T, T, D)
    check_against_reference(q, k, v, do, torch.float32, causal=causal, doc_ids=make_docs(docs, 2, T))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("T", [256, 1531, 4096])
@pytest.mark.parametrize("H,Hkv,D", [(8, 8, 64), (16, 4, 128)])
@pytest.mark.parametrize("causal,docs", [(True, None), (False, None), (True, "padded")])
def test_gpu_low_precision_three_ways(dtype, T, H, Hkv, D, causal, docs):
    """(1) kernel in `dtype` vs fp32 reference, (2) torch's SDPA in `dtype` vs the same fp32 reference,
    (3) error (1) <= factor · error (2) + floor (tests/helpers.py, TOLERANCES), for the output and every
    gradient."""
    q, k, v, do = make_inputs(2, H, Hkv, T, T, D, dtype=dtype)
    kw = dict(causal=causal, doc_ids=make_docs(docs, 2, T))
    exact = run(q.float(), k.float(), v.float(), do.float(), "reference", **kw)
    ours = run(q, k, v, do, "triton", **kw)
    torch_lowp = run(q, k, v, do, "sdpa", **kw)
    for name, e, o, t in zip(("out", "dq", "dk", "dv"), exact, ours, torch_lowp):
        assert_lowp(o, t, e, dtype, f"{name} (T={T}, D={D})", "attention")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])  # compiled, fp32 runs through SDPA
@pytest.mark.parametrize("Tq", [1, 4, 16])
@pytest.mark.parametrize("H,Hkv", [(16, 16), (32, 4)])
def test_gpu_decode_long_cache(dtype, Tq, H, Hkv):
    B, Tk, D = 3, 4000, 128
    q, _, _, _ = make_inputs(B, H, Hkv, Tq, Tk, D, dtype=dtype)
    k_cache = torch.randn(B, Hkv, 4096, D, device=DEVICE, dtype=dtype)
    v_cache = torch.randn(B, Hkv, 4096, D, device=DEVICE, dtype=dtype)
    k, v = k_cache[:, :, :Tk], v_cache[:, :, :Tk]
    docs = make_docs("padded", B, Tk)
    for kw in (dict(causal=True), dict(causal=True, doc_ids=docs)):
        with torch.no_grad():
            got = attention(q, k, v, backend="triton", **kw)
            general, _ = attention_fwd(q, k, v, kw.get("doc_ids"), True, D ** -0.5)
            want = attention_reference(q.float(), k.float(), v.float(), **kw)
        assert_close(got, general, dtype, "decode vs general", "attention")
        assert_close(got, want, dtype, "decode vs reference", "attention")
