"""The CuTe FlashAttention-2-style sigmoid-attention forward (csrc/attention/attention_cutlass.cu) on a GPU.

Opt-in (FACT_FAST_ATTENTION_CUTLASS=1) until a GPU has measured it; these tests set
FACT_FAST_ATTENTION_CUTLASS=require, which makes the `cuda` backend raise instead of falling back, so
a pass means the CuTe kernel ran. Tolerances follow tests/ops/test_attention_backends.py (a multiple of
the reference's own error in the same dtype); the factor is a little looser because σ goes through
the approximate tanh (≈2⁻¹¹ relative), about the size of the fp16 rounding of P.
"""
from __future__ import annotations

import pytest
import torch
from tests.ops.test_attention_backends import _check_flash, _inputs

from fact_fast import _extension, ops
from fact_fast.ops import reference


def _built_with_cutlass() -> bool:
    if not _extension.load():
        return False
    from fact_fast import _C
    return bool(getattr(_C, "WITH_CUTLASS", 0))


pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not _built_with_cutlass(), reason="fact_fast._C built without CUTLASS")]

DTYPES = [pytest.param(torch.float16, 4.0, 1e-3, id="fp16"), pytest.param(torch.bfloat16, 4.0, 1e-2, id="bf16")]
# (q, k, v) shapes: one query / one key, ragged 64-row tiles on both sides, FACT's 40 × 196, and a
# long sequence; d = dv ∈ {64, 128}.
SHAPES = {
    "one": ((1, 1, 64), (1, 1, 64), (1, 1, 64)),
    "ragged": ((3, 65, 128), (3, 63, 128), (3, 63, 128)),
    "fact": ((4, 40, 128), (4, 196, 128), (4, 196, 128)),
    "long": ((2, 300, 64), (2, 1029, 64), (2, 1029, 64)),
}


@pytest.fixture
def cutlass(monkeypatch):
    monkeypatch.setenv("FACT_FAST_ATTENTION_CUTLASS", "require")


@pytest.mark.parametrize("dtype,factor,atol", DTYPES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_forward_matches_reference(cutlass, shape, dtype, factor, atol):
    q, k, v = _inputs(SHAPES[shape], dtype, "cuda")
    out = ops.sigmoid_attention(q, k, v, bias=-0.7, backend="cuda")
    ref64 = reference.sigmoid_attention(q.double(), k.double(), v.double(), bias=-0.7)
    _check_flash(out, reference.sigmoid_attention(q, k, v, bias=-0.7), ref64, factor, atol, shape)


@pytest.mark.parametrize("dtype,factor,atol", DTYPES)
def test_interface_with_shared_queries_and_residual(cutlass, dtype, factor, atol):
    # sigmoid_interface: q [C, d] broadcast over the batch (batch stride 0), k = v, + q fused.
    q, v = _inputs(((40, 128), (3, 196, 128)), dtype, "cuda")
    out = ops.sigmoid_interface(q, v, bias=0.3, backend="cuda")
    ref64 = reference.sigmoid_interface(q.double(), v.double(), bias=0.3)
    _check_flash(out, reference.sigmoid_interface(q, v, bias=0.3), ref64, factor, atol, "interface")


@pytest.mark.parametrize("dtype,factor,atol", DTYPES)
def test_gradients_still_match_with_the_cute_forward(cutlass, dtype, factor, atol):
    q, k, v = _inputs(SHAPES["ragged"], dtype, "cuda", requires_grad=True)
    grad = torch.randn(3, 65, 128, device="cuda", dtype=dtype)
    got = torch.autograd.grad(ops.sigmoid_attention(q, k, v, backend="cuda"), (q, k, v), grad)
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    want = torch.autograd.grad(reference.sigmoid_attention(q64, k64, v64), (q64, k64, v64), grad.double())
    lp = [t.detach().requires_grad_(True) for t in (q, k, v)]
    ref_lp = torch.autograd.grad(reference.sigmoid_attention(*lp), lp, grad)
    for name, g, w, r in zip("qkv", got, want, ref_lp):
        _check_flash(g, r, w, factor, atol, f"d{name}")


def test_inputs_it_cannot_take_fall_back_or_raise(monkeypatch):
    # d = 96, float32, and a head dim with stride 2: "1" takes the other kernels (still correct),
    # "require" says why it cannot run.
    base = _inputs(((2, 5, 96), (2, 7, 96), (2, 7, 96)), torch.float16, "cuda")
    fp32 = _inputs(((2, 5, 64), (2, 7, 64), (2, 7, 64)), torch.float32, "cuda")
    strided = [torch.randn(2, n, 128, device="cuda", dtype=torch.float16)[..., ::2] for n in (5, 7, 7)]
    for q, k, v in (base, fp32, strided):
        ref64 = reference.sigmoid_attention(q.double(), k.double(), v.double())
        monkeypatch.setenv("FACT_FAST_ATTENTION_CUTLASS", "1")
        out = ops.sigmoid_attention(q, k, v, backend="cuda")
        _check_flash(out, reference.sigmoid_attention(q, k, v), ref64, 4.0, 1e-3, str(q.dtype))
        monkeypatch.setenv("FACT_FAST_ATTENTION_CUTLASS", "require")
        with pytest.raises(ValueError, match="cannot run these inputs"):
            ops.sigmoid_attention(q, k, v, backend="cuda")
