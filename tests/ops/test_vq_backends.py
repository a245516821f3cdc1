"""vq_nearest / vq_quantize: every fused backend against float64 oracles and the reference.

Indices: a fused index may differ from the reference (or from the exact argmin) only where the two
candidates' exact float64 distances are within the rounding of the fp32 expanded distance; values:
dist, z_q, loss and gradients are checked against float64 computations with a per-dtype tolerance.
Exact ties use integer-valued data, where every backend's arithmetic is exact, so the expected
index (the lowest among equal integer distances) is known independently of any float rounding.
"""
import pytest
import torch

from fact_fast import _extension, ops
from fact_fast.ops import reference, tolerances
from tests.helpers.op_utils import fused_backends, non_contiguous

# (backend, device); CUDA variants run only on a GPU machine.
BACKENDS = [
    pytest.param("cpu", "cpu", id="cpu"),
    pytest.param("triton", "cpu", id="triton-interp"),
    pytest.param("cuda", "cuda", id="cuda", marks=pytest.mark.cuda),
    pytest.param("triton", "cuda", id="triton-cuda", marks=pytest.mark.cuda),
]
# (dtype, atol, rtol) for values (dist, loss, gradients) against float64 oracles: tolerances.VQ
DTYPES = [pytest.param(dtype, atol, rtol, id=tolerances.DTYPE_NAMES[dtype])
          for dtype, (atol, rtol) in tolerances.VQ.items()]
SHAPES = [(0, 5, 7), (1, 1, 3), (1, 9, 16), (33, 17, 19), (65, 7, 40), (20, 70, 24)]


def _skip_unless_runs(backend, device, dtype, op="vq_nearest"):
    z = torch.zeros(2, 3, dtype=dtype, device=device)
    if backend not in fused_backends(op, z, z):
        pytest.skip(f"backend {backend} cannot run {dtype} on {device} here")


def _inputs(n, k, d, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64).to(device, dtype),
            torch.randn(k, d, generator=g, dtype=torch.float64).to(device, dtype))


def _exact(z, codebook):
    """Exact squared distances in float64 [N, K] (test sizes only)."""
    z64, p64 = z.detach().double().cpu(), codebook.detach().double().cpu()
    return (z64[:, None, :] - p64[None, :, :]).pow(2).sum(-1)


def assert_near_optimal(z, codebook, index, ref_index=None):
    """index is the exact argmin except where the candidates are within rounding of each other."""
    index = index.cpu()
    assert index.dtype == torch.int64
    exact = _exact(z, codebook)
    if exact.shape[0] == 0:
        return
    assert ((index >= 0) & (index < codebook.shape[0])).all()
    tol = tolerances.vq_index_band(z, codebook)
    got = exact.gather(1, index[:, None]).squeeze(1)
    assert (got - exact.min(1).values <= tol).all(), "index is not within rounding of the nearest codeword"
    if ref_index is not None:
        other = exact.gather(1, ref_index.cpu()[:, None]).squeeze(1)
        differ = index != ref_index.cpu()
        assert ((got - other).abs()[differ] <= tol[differ]).all(), \
            "index differs from the reference where the two distances are not within rounding"


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype,atol,rtol", DTYPES)
@pytest.mark.parametrize("n,k,d", SHAPES)
def test_nearest_matches_oracle(backend, device, dtype, atol, rtol, n, k, d):
    _skip_unless_runs(backend, device, dtype)
    z, codebook = _inputs(n, k, d, dtype, device, seed=n + k + d)
    index, dist = ops.vq_nearest(z, codebook, backend=backend)
    ref_index, _ = ops.vq_nearest(z, codebook, backend="reference")
    assert index.shape == (n,) and dist.shape == (n,) and dist.dtype == dtype
    assert_near_optimal(z, codebook, index, ref_index)
    expected = _exact(z, codebook).gather(1, index.cpu()[:, None]).squeeze(1)
    torch.testing.assert_close(dist.cpu().double(), expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_exact_ties_pick_lowest_index(backend, device, dtype):
    _skip_unless_runs(backend, device, dtype)
    g = torch.Generator().manual_seed(1)
    base = torch.randint(-2, 3, (9, 21), generator=g)
    # duplicates, spread over several codebook tiles (Triton/CUDA tiles are 32/64 wide)
    codebook = torch.cat([base, base[[3, 0]], torch.randint(-2, 3, (60, 21), generator=g), base.flip(0)])
    z = torch.cat([base, torch.randint(-2, 3, (40, 21), generator=g)])
    dist = (z[:, None, :] - codebook[None, :, :]).pow(2).sum(-1)  # exact integers
    expected = torch.stack([torch.nonzero(row == row.min())[0, 0] for row in dist])
    index, d = ops.vq_nearest(z.to(device, dtype), codebook.to(device, dtype), backend=backend)
    assert torch.equal(index.cpu(), expected)
    assert torch.equal(d.cpu().double(), dist.min(1).values.double())
    # equidistant distinct codewords: p_a = c + e, p_b = c − e, z = c
    c = torch.randint(-2, 3, (1, 21), generator=g)
    e = torch.zeros(1, 21, dtype=torch.int64)
    e[0, 5] = 1
    cb2 = torch.cat([c + 3, c + e, c - e, c - e]).to(device, dtype)
    index, _ = ops.vq_nearest(c.to(device, dtype), cb2, backend=backend)
    assert index.item() == 1


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_nearest_k1_and_noncontiguous(backend, device):
    _skip_unless_runs(backend, device, torch.float32)
    z, codebook = _inputs(13, 1, 11, torch.float32, device)
    index, dist = ops.vq_nearest(z, codebook, backend=backend)
    assert torch.equal(index.cpu(), torch.zeros(13, dtype=torch.int64))
    z, codebook = _inputs(37, 23, 18, torch.float32, device, seed=3)
    znc, cbnc = non_contiguous(z), non_contiguous(codebook)
    index, dist = ops.vq_nearest(znc, cbnc, backend=backend)
    index_c, dist_c = ops.vq_nearest(z, codebook, backend=backend)
    assert torch.equal(index, index_c)
    torch.testing.assert_close(dist, dist_c)
    zt = z.t().contiguous().t()  # column-major rows
    assert torch.equal(ops.vq_nearest(zt, codebook, backend=backend)[0], index_c)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype,atol,rtol", DTYPES)
@pytest.mark.parametrize("shape,k", [((0, 6), 4), ((2, 0, 6), 4), ((5,), 3), ((1, 5), 1), ((3, 7, 19), 11), ((45, 32), 40)])
def test_quantize_forward(backend, device, dtype, atol, rtol, shape, k):
    _skip_unless_runs(backend, device, dtype, "vq_quantize")
    g = torch.Generator().manual_seed(sum(shape) + k)
    z = torch.randn(*shape, generator=g, dtype=torch.float64).to(device, dtype)
    codebook = torch.randn(k, shape[-1], generator=g, dtype=torch.float64).to(device, dtype)
    beta = 0.3
    v, index, loss = ops.vq_quantize(z, codebook, beta, backend=backend)
    _, ref_index, _ = ops.vq_quantize(z, codebook, beta, backend="reference")
    assert v.shape == z.shape and v.dtype == dtype and index.shape == shape[:-1] and loss.shape == ()
    assert loss.dtype == dtype
    flat = z.reshape(-1, shape[-1])
    assert_near_optimal(flat, codebook, index.reshape(-1), ref_index.reshape(-1))
    assert torch.equal(v, codebook[index])  # the forward value of z + sg(z_q − z) is z_q
    z64, cb64 = flat.double().cpu(), codebook.double().cpu()
    expected = (1 + beta) * (z64 - cb64[index.reshape(-1).cpu()]).pow(2).sum() / max(z64.numel(), 1)
    torch.testing.assert_close(loss.cpu().double(), expected, atol=atol, rtol=rtol)


def _oracle_grads(z, codebook, beta, index, gv, gl):
    """Gradients of docs/design.md §2.3 in float64 for given indices: returns (dz, dcodebook) as float64."""
    z64, cb64 = z.detach().double().cpu(), codebook.detach().double().cpu()
    zq = cb64[index.cpu()]
    denom = max(z64.numel(), 1)
    dz = gv.double().cpu() + gl * 2 * beta * (z64 - zq) / denom
    dcb = torch.zeros_like(cb64).index_add_(0, index.cpu(), gl * 2 * (zq - z64) / denom)
    return dz, dcb


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype,atol,rtol", DTYPES)
@pytest.mark.parametrize("deterministic", [True, False], ids=["det", "atomic"])
def test_quantize_gradients(backend, device, dtype, atol, rtol, deterministic):
    _skip_unless_runs(backend, device, dtype, "vq_quantize")
    z, codebook = _inputs(50, 9, 21, dtype, device, seed=7)  # 50 rows on 9 codes: heavy scatter
    z = non_contiguous(z).requires_grad_(True)
    codebook = codebook.requires_grad_(True)
    beta = 0.25
    v, index, loss = ops.vq_quantize(z, codebook, beta, deterministic=deterministic, backend=backend)
    gv = torch.randn(z.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device, dtype)
    gl = 1.7
    dz, dcb = torch.autograd.grad([v, loss], [z, codebook], [gv, torch.tensor(gl, dtype=dtype, device=device)])
    ez, ecb = _oracle_grads(z, codebook, beta, index, gv, gl)
    torch.testing.assert_close(dz.cpu().double(), ez, atol=atol, rtol=rtol)
    torch.testing.assert_close(dcb.cpu().double(), ecb, atol=atol, rtol=rtol)
    if dtype in (torch.float32, torch.float64):  # the reference scatters in the input dtype
        rv, _, rl = ops.vq_quantize(z, codebook, beta, backend="reference")
        rz, rcb = torch.autograd.grad([rv, rl], [z, codebook], [gv, torch.tensor(gl, dtype=dtype, device=device)])
        torch.testing.assert_close(dz, rz, atol=atol, rtol=rtol)
        torch.testing.assert_close(dcb, rcb, atol=atol, rtol=rtol)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype,atol,rtol", DTYPES)
def test_nearest_gradients(backend, device, dtype, atol, rtol):
    _skip_unless_runs(backend, device, dtype)
    z, codebook = _inputs(30, 6, 13, dtype, device, seed=11)
    z.requires_grad_(True)
    codebook.requires_grad_(True)
    index, dist = ops.vq_nearest(z, codebook, backend=backend)
    gd = torch.rand(30, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device, dtype)
    dz, dcb = torch.autograd.grad(dist, [z, codebook], gd)
    z64, cb64 = z.detach().double().cpu(), codebook.detach().double().cpu()
    r = z64 - cb64[index.cpu()]
    ez = 2 * gd.double().cpu()[:, None] * r
    ecb = torch.zeros_like(cb64).index_add_(0, index.cpu(), -ez)
    torch.testing.assert_close(dz.cpu().double(), ez, atol=atol, rtol=rtol)
    torch.testing.assert_close(dcb.cpu().double(), ecb, atol=atol, rtol=rtol)


def test_gradcheck_cpu_float64():
    if "cpu" not in ops.available_backends("vq_nearest", torch.zeros(1, 1, dtype=torch.float64),
                                           torch.zeros(1, 1, dtype=torch.float64)):
        pytest.skip("compiled cpu backend not built")
    z, codebook = _inputs(12, 5, 7, torch.float64, "cpu", seed=5)
    z.requires_grad_(True)
    codebook.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ops.vq_nearest(a, b, backend="cpu")[1], (z, codebook))
    zn = non_contiguous(z.detach()).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ops.vq_nearest(a, b, backend="cpu")[1], (zn, codebook))
    # vq_quantize's stop-gradients make its autograd gradient differ from the numerical derivative by
    # design; gradcheck its pieces that are true derivatives: v's straight-through identity and the
    # codebook term (beta = 0 leaves d loss / d codebook = d mean‖z − p‖² / d p).
    gz = torch.autograd.grad(ops.vq_quantize(z, codebook, 0.0, backend="cpu")[0].sum(), z)[0]
    assert torch.equal(gz, torch.ones_like(z))
    assert torch.autograd.gradcheck(lambda b: ops.vq_quantize(z.detach(), b, 0.0, backend="cpu")[2], (codebook,))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_deterministic_codebook_gradient_is_bitwise_reproducible(backend, device, dtype):
    _skip_unless_runs(backend, device, dtype, "vq_quantize")
    n = 3000 if device == "cuda" else 200
    z, codebook = _inputs(n, 5, 24, dtype, device, seed=2)  # few codes: long segments
    codebook.requires_grad_(True)
    z.requires_grad_(True)

    def codebook_grad(deterministic):
        _, _, loss = ops.vq_quantize(z, codebook, deterministic=deterministic, backend=backend)
        return torch.autograd.grad(loss, codebook)[0]

    grads = [codebook_grad(True) for _ in range(3)]
    assert all(torch.equal(grads[0], g) for g in grads[1:])
    torch.testing.assert_close(codebook_grad(False).float(), grads[0].float(), atol=1e-2, rtol=1e-2)


def test_deterministic_default_follows_torch_flag(monkeypatch):
    seen = []
    z, codebook = _inputs(4, 3, 2, torch.float32, "cpu")

    def spy(z, codebook, deterministic):
        seen.append(deterministic)
        return reference.vq_nearest(z, codebook)

    from fact_fast.ops import _backend
    monkeypatch.setitem(_backend._registry["vq_nearest"], "reference", _backend.Impl(spy, _backend._always))
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        ops.vq_nearest(z, codebook, backend="reference")
        torch.use_deterministic_algorithms(False)
        ops.vq_nearest(z, codebook, backend="reference")
        ops.vq_nearest(z, codebook, deterministic=True, backend="reference")
    finally:
        torch.use_deterministic_algorithms(previous)
    assert seen == [True, False, True]


@pytest.mark.parametrize("backend,device", [pytest.param("reference", "cpu", id="reference")] + BACKENDS)
def test_bad_inputs_raise(backend, device):
    z = torch.randn(4, 3, device=device)
    cb = torch.randn(5, 3, device=device)
    cases = [
        (ValueError, "codebook", lambda: ops.vq_nearest(z, cb[:0], backend=backend)),
        (ValueError, "codebook", lambda: ops.vq_quantize(z, cb[:0], backend=backend)),
        (ValueError, "codebook", lambda: ops.vq_nearest(z, torch.randn(5, 4, device=device), backend=backend)),
        (ValueError, "codebook", lambda: ops.vq_quantize(z, torch.randn(5, 4, device=device), backend=backend)),
        (TypeError, "codebook", lambda: ops.vq_nearest(z, cb.half(), backend=backend)),
        (TypeError, "codebook", lambda: ops.vq_quantize(z, cb.double(), backend=backend)),
        (ValueError, "z", lambda: ops.vq_nearest(z[None], cb, backend=backend)),
        (ValueError, "z", lambda: ops.vq_nearest(z[0], cb, backend=backend)),
        (ValueError, "z", lambda: ops.vq_quantize(torch.randn((), device=device), cb, backend=backend)),
        (ValueError, "codebook", lambda: ops.vq_nearest(z, cb[0], backend=backend)),
        (TypeError, "z", lambda: ops.vq_nearest(z.long(), cb.long(), backend=backend)),
        (TypeError, "z", lambda: ops.vq_nearest(z.tolist(), cb, backend=backend)),
        (ValueError, "beta", lambda: ops.vq_quantize(z, cb, float("nan"), backend=backend)),
        (TypeError, "beta", lambda: ops.vq_quantize(z, cb, "0.25", backend=backend)),
        (TypeError, "deterministic", lambda: ops.vq_nearest(z, cb, deterministic=1, backend=backend)),
    ]
    for err, name, call in cases:
        with pytest.raises(err, match=name):
            call()


@pytest.mark.skipif(not _extension.has_kernel("vq_nearest", "cpu"), reason="compiled cpu backend not built")
def test_compiled_ops_check_their_arguments():
    z, cb = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match="at least one row"):
        torch.ops.fact_fast.vq_nearest(z, cb[:0])
    with pytest.raises(ValueError, match="feature size"):
        torch.ops.fact_fast.vq_quantize(z, torch.randn(5, 2), 0.25)
    with pytest.raises(TypeError, match="dtype"):
        torch.ops.fact_fast.vq_nearest(z, cb.double())
    with pytest.raises(ValueError, match="outside"):
        torch.ops.fact_fast.vq_residual_backward(z, cb, torch.tensor([0, 1, 5, 2]), None, torch.ones(()),
                                                 torch.ones(()), True)
    with pytest.raises(ValueError, match="z_weight"):
        torch.ops.fact_fast.vq_residual_backward(z, cb, torch.tensor([0, 1, 4, 2]), None, torch.ones(3),
                                                 torch.ones(()), True)


def _opcheck_ops():
    ops_ = []
    if _extension.has_kernel("vq_nearest", "cpu"):
        ops_ += [("compiled", torch.ops.fact_fast.vq_nearest.default, torch.ops.fact_fast.vq_quantize.default,
                  torch.ops.fact_fast.vq_residual_backward.default)]
    if "triton" in ops.available_backends("vq_nearest", torch.zeros(1, 1), torch.zeros(1, 1)):
        ops_ += [("triton", torch.ops.fact_fast.vq_nearest_triton.default,
                  torch.ops.fact_fast.vq_quantize_triton.default,
                  torch.ops.fact_fast.vq_residual_backward_triton.default)]
    return [pytest.param(*o[1:], id=o[0]) for o in ops_]


@pytest.mark.parametrize("nearest_op,quantize_op,backward_op", _opcheck_ops())
def test_opcheck(nearest_op, quantize_op, backward_op):
    z, cb = _inputs(9, 4, 5, torch.float32, "cpu", seed=4)
    z.requires_grad_(True)
    cb.requires_grad_(True)
    # opcheck's aot_dispatch test sums the outputs in place starting from the first, which fails for
    # an int64 first output (index); vq_nearest's AOT tracing is covered by test_torch_compile_*.
    torch.library.opcheck(nearest_op, (z, cb, True),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    torch.library.opcheck(quantize_op, (z, cb, 0.25, False))
    index = torch.tensor([0, 3, 3, 1, 0, 2, 2, 2, 1])
    torch.library.opcheck(backward_op, (z.detach(), cb.detach(), index, torch.randn(9, 5), torch.rand(9),
                                        torch.rand(()), True))


def test_torch_compile_fullgraph_cpu():
    backend = "cpu" if _extension.has_kernel("vq_quantize", "cpu") else "reference"
    z, cb = _inputs(16, 6, 8, torch.float32, "cpu", seed=6)
    z.requires_grad_(True)
    cb.requires_grad_(True)

    def step(z, cb):
        v, index, loss = ops.vq_quantize(z, cb, 0.25, backend=backend)
        _, dist = ops.vq_nearest(z, cb, backend=backend)
        return v.square().sum() + loss + dist.sum(), index

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    out, index = compiled(z, cb)
    grads = torch.autograd.grad(out, [z, cb])
    ref_out, ref_index = step(z, cb)
    ref_grads = torch.autograd.grad(ref_out, [z, cb])
    assert torch.equal(index, ref_index)
    torch.testing.assert_close(out, ref_out)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_tensor_cores_agree_with_fallback(dtype, monkeypatch):
    if not _extension.has_kernel("vq_nearest", "cuda"):
        pytest.skip("extension built without CUDA")
    z, codebook = _inputs(1000, 300, 72, dtype, "cuda", seed=8)
    index_tc, dist_tc = ops.vq_nearest(z, codebook, backend="cuda")
    monkeypatch.setenv("FACT_FAST_VQ_TENSOR_CORES", "0")
    index_simt, dist_simt = ops.vq_nearest(z, codebook, backend="cuda")
    assert_near_optimal(z, codebook, index_tc, index_simt)
    assert_near_optimal(z, codebook, index_simt)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_larger_sizes(backend):
    if backend not in ops.available_backends("vq_nearest", torch.zeros(1, 1, device="cuda"),
                                             torch.zeros(1, 1, device="cuda")):
        pytest.skip(f"{backend} not available")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        z, codebook = _inputs(4099, 1027, 200, dtype, "cuda", seed=9)
        index, dist = ops.vq_nearest(z, codebook, backend=backend)
        ref_index, _ = ops.vq_nearest(z, codebook, backend="reference")
        assert_near_optimal(z, codebook, index, ref_index)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_nearest_many_tiles(backend, device):
    """Several row blocks and codebook tiles (CPU tiles: 64 rows × 256 codewords)."""
    _skip_unless_runs(backend, device, torch.float32)
    z, codebook = _inputs(130, 530, 33, torch.float32, device, seed=12)
    index, dist = ops.vq_nearest(z, codebook, backend=backend)
    assert_near_optimal(z, codebook, index, ops.vq_nearest(z, codebook, backend="reference")[0])


def test_cpu_resolves_near_ties_on_exact_distances():
    """Far from the origin the expanded distance cannot separate close codewords; the cpu backend
    compares such candidates on exact distances, so it returns the exact argmin."""
    if "cpu" not in ops.available_backends("vq_nearest", torch.zeros(1, 1), torch.zeros(1, 1)):
        pytest.skip("compiled cpu backend not built")
    g = torch.Generator().manual_seed(13)
    base = 100 + torch.randn(8, 33, generator=g)
    codebook = torch.cat([base, base + 1e-3 * torch.randn(8, 33, generator=g)])
    z = base[torch.randint(0, 8, (200,), generator=g)] + 0.05 * torch.randn(200, 33, generator=g)
    index, dist = ops.vq_nearest(z, codebook, backend="cpu")
    exact = _exact(z, codebook)
    assert torch.equal(index, exact.argmin(1))
    torch.testing.assert_close(dist.double(), exact.min(1).values, atol=1e-6, rtol=1e-4)


# --- Triton search structure: TF32 candidates re-ranked exactly, codebook split over programs -----

def _triton_kernels():
    z = torch.zeros(2, 3)
    if "triton" not in fused_backends("vq_nearest", z, z):
        pytest.skip("triton cannot run here")
    from fact_fast.kernels import vq
    return vq


def _tf32(x: torch.Tensor) -> torch.Tensor:
    """x with the 13 low mantissa bits dropped: what a TF32 tensor-core product reads."""
    return (x.float().view(torch.int32) & -8192).view(torch.float32)


def _close_pairs(n=40, d=32, far=40, seed=21):
    """Each row z_i has two codewords at nearly the same distance (≈1, differing by ~1e-2), every
    other codeword far away: the exact order of each pair is clear in fp32, not in TF32."""
    g = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(n, d, generator=g)
    u = torch.randn(n, d, generator=g)
    u = u / u.norm(dim=1, keepdim=True)
    w = torch.randn(n, d, generator=g)
    w = w - (w * u).sum(1, keepdim=True) * u
    w = w / w.norm(dim=1, keepdim=True)
    r = 1 + 0.01 * torch.rand(n, 1, generator=g)
    pairs = torch.stack([z + u, z + r * w], 1).reshape(2 * n, d)
    codebook = torch.cat([3 * torch.randn(far, d, generator=g) + 20, pairs])
    return z, codebook


@pytest.mark.parametrize("splits", [1, 2, 3])
def test_triton_fp32_reranks_tf32_candidates_exactly(splits):
    vq = _triton_kernels()
    z, codebook = _close_pairs()
    exact = _exact(z, codebook)
    pn = codebook.double().pow(2).sum(1)
    estimate = pn - 2 * (_tf32(z).double() @ _tf32(codebook).double().t())
    misordered = (estimate.argmin(1) != exact.argmin(1)).sum().item()
    assert misordered >= 5, "test premise: a single TF32 pass misorders several rows"
    for want_dist, want_q in ((True, False), (False, True)):
        index, dist, dist_f32, zq = vq.nearest(z, codebook, want_dist=want_dist, want_quantized=want_q,
                                               splits=splits)
        assert torch.equal(index, exact.argmin(1))
        got = dist if want_dist else dist_f32
        torch.testing.assert_close(got.double(), exact.min(1).values, atol=1e-5, rtol=1e-5)
        if want_q:
            assert torch.equal(zq, codebook[index])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("splits", [2, 5, 8])
def test_triton_split_codebook_matches_one_sweep(dtype, splits):
    """Codebook ranges over a second grid axis, merged by estimate (ties to the lower index): the same
    index, distance and z_q as one program sweeping the whole codebook; exact integer ties included."""
    vq = _triton_kernels()
    g = torch.Generator().manual_seed(5)
    base = torch.randint(-2, 3, (9, 21), generator=g)
    codebook = torch.cat([base, torch.randint(-2, 3, (60, 21), generator=g), base.flip(0), base]).to(dtype)
    z = torch.cat([base, torch.randint(-2, 3, (30, 21), generator=g)]).to(dtype)
    z[3] = float("nan")  # a NaN row reports codeword 0, as without a split
    one = vq.nearest(z, codebook, want_dist=True, want_quantized=True, splits=1)
    split = vq.nearest(z, codebook, want_dist=True, want_quantized=True, splits=splits)
    assert torch.equal(split[0], one[0]) and split[0][3] == 0
    for a, b in zip(split[1:], one[1:]):
        torch.testing.assert_close(a, b, equal_nan=True, atol=0, rtol=0)
    ok = torch.ones(z.shape[0], dtype=torch.bool)
    ok[3] = False
    dist = (z[ok, None, :].double() - codebook[None].double()).pow(2).sum(-1)
    expected = torch.stack([torch.nonzero(row == row.min())[0, 0] for row in dist])
    assert torch.equal(split[0][ok], expected)


def test_triton_splits_only_small_row_counts():
    vq = _triton_kernels()
    assert vq.codebook_splits(6272, 1024, 132, 256) == 2  # FACT size: 98 row blocks -> 196 programs
    assert vq.codebook_splits(65536, 8192, 132, 256) == 1  # the large case of docs/design.md §4 fills the GPU already
    assert vq.codebook_splits(100, 8192, 132, 256) == vq.MAX_SPLITS
    assert vq.codebook_splits(100, 300, 132, 256) == 1  # too few codewords to split
