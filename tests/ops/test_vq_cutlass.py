"""The CuTe tensor-core VQ search (csrc/vq/vq_cutlass.cu) on a GPU, against float64 oracles.

The kernel is opt-in (FACT_FAST_VQ_CUTLASS=1) until a GPU has measured it; these tests set
FACT_FAST_VQ_CUTLASS=require, which makes the `cuda` backend raise instead of falling back, so a pass
means the CuTe kernel ran. Its scores are approximate (fp32 inputs go through TF32 tensor cores;
fp16/bf16 products accumulate in fp32), and the two best-scored codewords of each row are re-ranked
on exact float distances: the index may differ from the exact argmin only where the codewords are
within the scores' rounding, and dist is the exact distance of the chosen codeword.
"""
from __future__ import annotations

import pytest
import torch

from fact_fast import _extension, ops


def _built_with_cutlass() -> bool:
    if not _extension.load():
        return False
    from fact_fast import _C
    return bool(getattr(_C, "WITH_CUTLASS", 0))


pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not _built_with_cutlass(), reason="fact_fast._C built without CUTLASS")]

# (dtype, relative rounding band of the scores as a fraction of ‖z‖² + max‖p‖², atol/rtol of dist)
DTYPES = [
    pytest.param(torch.float32, 4e-3, 1e-4, 1e-5, id="fp32-tf32"),  # TF32: 10-bit mantissa products
    pytest.param(torch.float16, 1e-5, 2e-2, 2e-3, id="fp16"),
    pytest.param(torch.bfloat16, 1e-5, 1e-1, 1.6e-2, id="bf16"),
]
# (n, k, d): one row, one codeword, ragged row/codeword tiles (128), k slices of 32 with a remainder,
# several codebook splits, the minimum d (16 bytes of elements: 8 for 16-bit, 4 for fp32).
SHAPES = [(1, 1, 8), (1, 300, 64), (129, 129, 40), (200, 1000, 520), (4099, 257, 136), (6272, 1024, 512)]


@pytest.fixture
def cutlass(monkeypatch):
    monkeypatch.setenv("FACT_FAST_VQ_CUTLASS", "require")


def _inputs(n, k, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64).to("cuda", dtype),
            torch.randn(k, d, generator=g, dtype=torch.float64).to("cuda", dtype))


def _exact(z, codebook):
    """Exact squared distances [N, K] in float64, in row chunks (bounded memory)."""
    p = codebook.double()
    return torch.cat([torch.cdist(zc.double(), p).pow(2) for zc in z.split(1024)]) if len(z) else \
        z.new_zeros(0, len(codebook), dtype=torch.float64)


def _assert_near_optimal(z, codebook, index, band):
    exact = _exact(z, codebook)
    assert index.dtype == torch.int64 and ((index >= 0) & (index < codebook.shape[0])).all()
    scale = z.double().pow(2).sum(1) + codebook.double().pow(2).sum(1).max()
    got = exact.gather(1, index[:, None]).squeeze(1)
    gap = got - exact.min(1).values
    assert (gap <= band * scale).all(), f"worst gap {(gap / scale).max().item():.3g} of the scale, band {band}"
    return got


@pytest.mark.parametrize("dtype,band,atol,rtol", DTYPES)
@pytest.mark.parametrize("n,k,d", SHAPES)
def test_nearest_matches_oracle(cutlass, dtype, band, atol, rtol, n, k, d):
    z, codebook = _inputs(n, k, d, dtype, seed=n + k + d)
    index, dist = ops.vq_nearest(z, codebook, backend="cuda")
    assert index.shape == (n,) and dist.shape == (n,) and dist.dtype == dtype
    got = _assert_near_optimal(z, codebook, index, band)
    torch.testing.assert_close(dist.double(), got.to(dist.dtype).double(), atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype,band,atol,rtol", DTYPES)
def test_agrees_with_the_default_cuda_kernels(monkeypatch, dtype, band, atol, rtol):
    z, codebook = _inputs(3000, 700, 96, dtype, seed=3)
    monkeypatch.setenv("FACT_FAST_VQ_CUTLASS", "require")
    index, dist = ops.vq_nearest(z, codebook, backend="cuda")
    monkeypatch.setenv("FACT_FAST_VQ_CUTLASS", "0")
    index_ref, dist_ref = ops.vq_nearest(z, codebook, backend="cuda")
    exact = _exact(z, codebook)
    differ = index != index_ref
    scale = z.double().pow(2).sum(1) + codebook.double().pow(2).sum(1).max()
    gap = (exact.gather(1, index[:, None]) - exact.gather(1, index_ref[:, None])).squeeze(1).abs()
    assert (gap[differ] <= band * scale[differ]).all()
    torch.testing.assert_close(dist[~differ], dist_ref[~differ], atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_exact_ties_go_to_the_lowest_index(cutlass, dtype):
    # Integer data: every score and distance is exact in each dtype. Codeword j + 150 repeats codeword
    # j, so every row has a tie across codebook tiles (128) and, with few rows, across splits.
    g = torch.Generator().manual_seed(5)
    half = torch.randint(-3, 4, (150, 16), generator=g).double()
    codebook = torch.cat([half, half]).to("cuda", dtype)
    z = torch.randint(-3, 4, (300, 16), generator=g).double().to("cuda", dtype)
    index, dist = ops.vq_nearest(z, codebook, backend="cuda")
    exact = _exact(z, codebook)
    expected = (exact == exact.min(1, keepdim=True).values).int().argmax(1)  # first minimal index
    assert torch.equal(index, expected)
    assert torch.equal(dist.double(), exact.min(1).values.to(dtype).double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_nan_row_reports_codeword_zero_like_the_default_kernels(cutlass, dtype):
    z, codebook = _inputs(40, 200, 32, dtype, seed=6)
    z[7] = float("nan")
    index, dist = ops.vq_nearest(z, codebook, backend="cuda")
    assert index[7].item() == 0 and dist[7].isnan().item()
    keep = torch.arange(40, device="cuda") != 7
    _assert_near_optimal(z[keep], codebook, index[keep], band=4e-3)


@pytest.mark.parametrize("dtype,band,atol,rtol", DTYPES)
def test_quantize_gathers_and_averages_exactly(cutlass, dtype, band, atol, rtol):
    z, codebook = _inputs(500, 300, 64, dtype, seed=7)
    v, index, loss = ops.vq_quantize(z, codebook, beta=0.25, backend="cuda")
    got = _assert_near_optimal(z, codebook, index, band)
    assert torch.equal(v, codebook[index])
    torch.testing.assert_close(loss.double(), (1.25 * got.sum() / z.numel()).to(dtype).double(), atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_match_the_reference(cutlass, dtype):
    z, codebook = _inputs(300, 200, 64, dtype, seed=8)
    z.requires_grad_(True)
    codebook.requires_grad_(True)
    index, dist = ops.vq_nearest(z, codebook, backend="cuda")
    g = torch.randn_like(dist)
    gz, gc = torch.autograd.grad((dist * g).sum(), (z, codebook))
    # The gradient of ‖z − p_index‖² for the index the kernel chose, in float64.
    diff = z.detach().double() - codebook.detach().double()[index]
    gz_ref = 2 * g.double()[:, None] * diff
    gc_ref = torch.zeros_like(codebook, dtype=torch.float64).index_add_(0, index, -gz_ref)
    tol = dict(atol=1e-3, rtol=1e-4) if dtype == torch.float32 else dict(atol=0.3, rtol=2e-2)
    torch.testing.assert_close(gz.double(), gz_ref, **tol)
    torch.testing.assert_close(gc.double(), gc_ref, **tol)


def test_inputs_it_cannot_take_fall_back_or_raise(monkeypatch):
    # d not a multiple of 16 bytes, and a z view that is not 16-byte aligned: "1" falls back to the
    # default kernels (still correct), "require" says why it cannot run.
    z, codebook = _inputs(100, 50, 7, torch.float16, seed=9)
    wide = torch.randn(100 * 8 + 1, device="cuda", dtype=torch.float16)
    misaligned = wide[1:].view(100, 8)  # contiguous, storage offset of one element: 2-byte aligned
    cases = [(z, codebook), (misaligned, _inputs(100, 50, 8, torch.float16, seed=10)[1])]
    for zz, cb in cases:
        monkeypatch.setenv("FACT_FAST_VQ_CUTLASS", "1")
        index, _ = ops.vq_nearest(zz, cb, backend="cuda")
        _assert_near_optimal(zz, cb, index, band=1e-5)
        monkeypatch.setenv("FACT_FAST_VQ_CUTLASS", "require")
        with pytest.raises(ValueError, match="cannot run these inputs"):
            ops.vq_nearest(zz, cb, backend="cuda")
