"""Fused sigmoid_attention / sigmoid_interface backends against the reference.

Tolerances are set the flash-attention way: a fused backend's max error against a float64
reference must stay within a small multiple of the reference implementation's own error in the
same dtype (plus a small atol), so the bound tracks what the dtype can deliver.
"""
import math

import pytest
import torch
from tests.helpers.op_utils import FUSED_BACKENDS, fused_backends, non_contiguous

from fact_fast import ops
from fact_fast.ops import reference, tolerances

CUDA = pytest.mark.cuda

# (backend, device): CPU tensors run the compiled cpu kernels and Triton through the interpreter.
BACKENDS = [pytest.param("cpu", "cpu", id="cpu"), pytest.param("triton", "cpu", id="triton-interp"),
            pytest.param("cuda", "cuda", id="cuda", marks=CUDA),
            pytest.param("triton", "cuda", id="triton-cuda", marks=CUDA)]

# dtypes of fact_fast.ops.tolerances.ATTENTION (error factor vs the reference's own error, atol)
DTYPES = [pytest.param(dtype, id=tolerances.DTYPE_NAMES[dtype]) for dtype in tolerances.ATTENTION]

# (q shape, k shape, v shape)
SHAPES = {
    "basic": ((2, 7, 32), (2, 13, 32), (2, 13, 32)),
    "lq1": ((3, 1, 24), (3, 9, 24), (3, 9, 24)),
    "lk1": ((2, 5, 16), (2, 1, 16), (2, 1, 16)),
    "odd_dims": ((3, 17, 20), (3, 33, 20), (3, 33, 12)),
    "shared_q": ((6, 40), (4, 19, 40), (4, 19, 40)),
    "broadcast": ((2, 1, 5, 8), (1, 3, 7, 8), (2, 3, 7, 24)),
    "no_batch": ((5, 16), (9, 16), (9, 16)),
    "multi_block": ((1, 300, 8), (1, 520, 8), (1, 520, 8)),  # several tiles on every backend
    "fact_head_dim": ((1, 3, 512), (1, 5, 512), (1, 5, 512)),
}


def _skip_unsupported(backend, device, dtype):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    x = torch.zeros(1, 1, dtype=dtype, device=device)
    if backend not in fused_backends("sigmoid_attention", x, x, x, 1.0, 0.0):
        pytest.skip(f"backend {backend} cannot run {dtype} on {device} here")


def _inputs(shapes, dtype, device, requires_grad=False):
    return [(torch.randn(s, dtype=torch.float64) * 0.8).to(device, dtype).requires_grad_(requires_grad)
            for s in shapes]


def _check_flash(fused, ref_lp, ref64, dtype, what):
    """max|fused − ref64| ≤ factor·max|ref_lp − ref64| + atol (tolerances.flash_bound)."""
    assert fused.shape == ref64.shape, what
    err = (fused.double() - ref64).abs().max().item() if fused.numel() else 0.0
    bound = tolerances.flash_bound(ref_lp, ref64, dtype)
    assert err <= bound, f"{what}: error {err:.3g} vs bound {bound:.3g}"


def _grads(out, inputs, grad):
    return torch.autograd.grad(out, inputs, grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_forward_matches_reference(backend, device, shape, dtype):
    _skip_unsupported(backend, device, dtype)
    q, k, v = _inputs(SHAPES[shape], dtype, device)
    out = ops.sigmoid_attention(q, k, v, bias=-0.7, backend=backend)
    assert out.dtype == dtype and out.device.type == device
    ref64 = reference.sigmoid_attention(q.double(), k.double(), v.double(), bias=-0.7)
    ref_lp = reference.sigmoid_attention(q, k, v, bias=-0.7)
    _check_flash(out, ref_lp, ref64, dtype, f"{backend} {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ["basic", "odd_dims", "shared_q", "broadcast", "multi_block"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_gradients_match_reference(backend, device, shape, dtype):
    _skip_unsupported(backend, device, dtype)
    q, k, v = _inputs(SHAPES[shape], dtype, device, requires_grad=True)
    scale = 0.3
    out = ops.sigmoid_attention(q, k, v, scale=scale, bias=0.25, backend=backend)
    grad = torch.randn(out.shape, dtype=torch.float64).to(device, dtype)
    fused = _grads(out, (q, k, v), grad)
    ref_lp = _grads(reference.sigmoid_attention(q, k, v, scale, 0.25), (q, k, v), grad)
    x64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref64 = _grads(reference.sigmoid_attention(*x64, scale, 0.25), x64, grad.double())
    for name, f, r, r64 in zip("qkv", fused, ref_lp, ref64):
        assert f.shape == r64.shape and f.dtype == dtype
        _check_flash(f, r, r64, dtype, f"{backend} {shape} grad {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shared_q", [True, False], ids=["q_CxD", "q_BxCxD"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_interface_matches_reference(backend, device, shared_q, dtype):
    _skip_unsupported(backend, device, dtype)
    b, c, m, d = 3, 6, 11, 40
    q, v = _inputs([(c, d) if shared_q else (b, c, d), (b, m, d)], dtype, device, requires_grad=True)
    out = ops.sigmoid_interface(q, v, bias=-math.log(m), backend=backend)
    assert out.shape == (b, c, d) and out.dtype == dtype
    grad = torch.randn(out.shape, dtype=torch.float64).to(device, dtype)
    x64 = [t.detach().double().requires_grad_() for t in (q, v)]
    ref64 = reference.sigmoid_interface(*x64, -math.log(m))
    ref_lp = reference.sigmoid_interface(q, v, -math.log(m))
    _check_flash(out, ref_lp, ref64, dtype, f"{backend} interface")
    fused_g = _grads(out, (q, v), grad)
    ref_g = _grads(ref_lp, (q, v), grad)
    ref64_g = _grads(ref64, x64, grad.double())
    for name, f, r, r64 in zip(("q", "v"), fused_g, ref_g, ref64_g):
        _check_flash(f, r, r64, dtype, f"{backend} interface grad {name}")


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_k_is_v(backend, device):
    """Keys = values in sigmoid_attention: one tensor, and its gradient gets both paths."""
    _skip_unsupported(backend, device, torch.float32)
    q, kv = _inputs([(2, 5, 24), (2, 9, 24)], torch.float32, device, requires_grad=True)
    out = ops.sigmoid_attention(q, kv, kv, bias=0.1, backend=backend)
    ref = reference.sigmoid_attention(q, kv, kv, bias=0.1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    for f, r in zip(_grads(out, (q, kv), grad), _grads(ref, (q, kv), grad)):
        torch.testing.assert_close(f, r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_non_contiguous_inputs(backend, device):
    _skip_unsupported(backend, device, torch.float32)
    q, k, v = _inputs(SHAPES["odd_dims"], torch.float32, device)
    qn, kn, vn = non_contiguous(q), non_contiguous(k).transpose(0, 1).contiguous().transpose(0, 1), non_contiguous(v)
    assert not kn.is_contiguous()
    out = ops.sigmoid_attention(qn, kn, vn, backend=backend)
    torch.testing.assert_close(out, reference.sigmoid_attention(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_empty_inputs(backend, device):
    _skip_unsupported(backend, device, torch.float32)
    for shapes in [((0, 4, 16), (0, 6, 16), (0, 6, 16)),  # empty batch
                   ((2, 0, 16), (2, 6, 16), (2, 6, 16)),  # no queries
                   ((2, 4, 16), (2, 0, 16), (2, 0, 16))]:  # no keys: the output is 0
        q, k, v = _inputs(shapes, torch.float32, device, requires_grad=True)
        out = ops.sigmoid_attention(q, k, v, backend=backend)
        ref = reference.sigmoid_attention(q, k, v)
        torch.testing.assert_close(out, ref)
        grad = torch.randn_like(out)
        for f, r in zip(_grads(out, (q, k, v), grad), _grads(ref, (q, k, v), grad)):
            torch.testing.assert_close(f, r)
    q, v = _inputs([(5, 16), (0, 7, 16)], torch.float32, device)
    assert ops.sigmoid_interface(q, v, backend=backend).shape == (0, 5, 16)
    q, v = _inputs([(5, 16), (2, 0, 16)], torch.float32, device)  # no visual tokens: E = q
    torch.testing.assert_close(ops.sigmoid_interface(q, v, backend=backend), q.expand(2, 5, 16))


def test_gradcheck_float64_cpu():
    if "cpu" not in ops.available_backends("sigmoid_attention", torch.zeros(1, 1, dtype=torch.float64),
                                           torch.zeros(1, 1, dtype=torch.float64),
                                           torch.zeros(1, 1, dtype=torch.float64), 1.0, 0.0):
        pytest.skip("compiled cpu backend not built")
    q, k, v = _inputs([(3, 8), (2, 1, 5, 8), (2, 3, 5, 6)], torch.float64, "cpu", requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: ops.sigmoid_attention(a, b, c, bias=0.4, backend="cpu"),
                                    (q, k, v))
    q, v = _inputs([(4, 8), (2, 5, 8)], torch.float64, "cpu", requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.sigmoid_interface(a, b, bias=-1.0, backend="cpu"), (q, v))


def test_broadcast_gradient_is_deterministic():
    q, k, v = _inputs(SHAPES["shared_q"], torch.float32, "cpu", requires_grad=True)
    for backend in [b for b in ("cpu", "triton") if b in ops.available_backends("sigmoid_attention", q, k, v, 1., 0.)]:
        g1 = _grads(ops.sigmoid_attention(q, k, v, backend=backend).sum(), (q,), None)[0]
        g2 = _grads(ops.sigmoid_attention(q, k, v, backend=backend).sum(), (q,), None)[0]
        assert torch.equal(g1, g2), backend


def test_cpu_forward_never_builds_the_score_matrix():
    q, k, v = _inputs([(1, 1024, 8), (1, 2048, 8), (1, 2048, 8)], torch.float32, "cpu")
    if "cpu" not in ops.available_backends("sigmoid_attention", q, k, v, 1.0, 0.0):
        pytest.skip("compiled cpu backend not built")
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        ops.sigmoid_attention(q, k, v, backend="cpu")
    # The profiler misses frees made on worker threads, so bound the largest single allocation: the
    # reference allocates the whole Lq×Lk score matrix at once.
    largest = max(e.cpu_memory_usage for e in prof.events())
    full_scores = 1024 * 2048 * 4
    assert 0 < largest <= full_scores // 32, f"allocation of {largest} bytes vs an Lq×Lk matrix of {full_scores}"


def test_auto_prefers_compiled_cpu():
    q, k, v = _inputs(SHAPES["basic"], torch.float32, "cpu")
    fused = [b for b in ops.available_backends("sigmoid_attention", q, k, v, 1.0, 0.0) if b in FUSED_BACKENDS]
    if "cpu" not in fused:
        pytest.skip("compiled cpu backend not built")
    from fact_fast.ops import _backend
    assert _backend.resolve("sigmoid_attention", None, q.device, q, k, v, 1.0, 0.0)[0] == "cpu"


def test_torch_compile_fullgraph():
    q, k, v = _inputs(SHAPES["shared_q"], torch.float32, "cpu", requires_grad=True)
    for backend in ("reference", "cpu", "triton"):
        if backend not in ops.available_backends("sigmoid_attention", q, k, v, 1.0, 0.0):
            continue
        torch._dynamo.reset()
        fn = torch.compile(lambda a, b, c: ops.sigmoid_attention(a, b, c, bias=0.5, backend=backend),
                           backend="aot_eager", fullgraph=True)
        out = fn(q, k, v)
        torch.testing.assert_close(out, reference.sigmoid_attention(q, k, v, bias=0.5), atol=1e-5, rtol=1e-5)
        out.sum().backward()
        assert q.grad is not None and q.grad.shape == q.shape
        q.grad = None


def _opcheck_args(device):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(s, generator=g).to(device).requires_grad_() for s in ((2, 5, 16), (2, 7, 16), (2, 7, 8)))
    kv = torch.randn(2, 7, 16, generator=g).to(device).requires_grad_()
    shared_q = torch.randn(5, 16, generator=g).to(device).expand(2, 5, 16).detach().requires_grad_()
    grad = torch.randn(2, 5, 8, generator=g).to(device)
    grad16 = torch.randn(2, 5, 16, generator=g).to(device)
    return [("sigmoid_attention", (q, k, v, 0.25, 0.5)),
            ("sigmoid_attention_backward", (grad, q.detach(), k.detach(), v.detach(), 0.25, 0.5)),
            ("sigmoid_attention_kv", (q, kv, 0.25, -0.5, True)),
            ("sigmoid_attention_kv", (shared_q, kv, 0.25, 0.0, False)),
            ("sigmoid_attention_kv_backward", (grad16, q.detach(), kv.detach(), 0.25, -0.5))]


@pytest.mark.parametrize("kind,device", [pytest.param("compiled", "cpu", id="compiled-cpu"),
                                         pytest.param("triton", "cpu", id="triton-interp"),
                                         pytest.param("compiled", "cuda", id="compiled-cuda", marks=CUDA),
                                         pytest.param("triton", "cuda", id="triton-cuda", marks=CUDA)])
def test_opcheck(kind, device):
    from fact_fast import _extension
    if kind == "compiled" and not _extension.has_kernel("sigmoid_attention", device):
        pytest.skip(f"no compiled {device} kernel")
    if kind == "triton" and ops.available_backends("sigmoid_attention", torch.zeros(1, 1, device=device),
                                                   torch.zeros(1, 1, device=device),
                                                   torch.zeros(1, 1, device=device), 1.0, 0.0).count("triton") == 0:
        pytest.skip("triton unavailable")
    for name, args in _opcheck_args(device):
        if kind == "triton":
            name = name[:-len("_backward")] + "_triton_backward" if name.endswith("_backward") else name + "_triton"
        torch.library.opcheck(getattr(torch.ops.fact_fast, name), args)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: ops.sigmoid_attention(torch.randn(4), torch.randn(3, 4), torch.randn(3, 4)), ValueError, "q"),
    (lambda: ops.sigmoid_attention(torch.randn(2, 4), torch.randn(3, 5), torch.randn(3, 4)), ValueError, "k"),
    (lambda: ops.sigmoid_attention(torch.randn(2, 4), torch.randn(3, 4), torch.randn(2, 4)), ValueError, "v"),
    (lambda: ops.sigmoid_attention(torch.randn(2, 4), torch.randn(3, 4), torch.randn(3, 4).double()), TypeError, "v"),
    (lambda: ops.sigmoid_attention(torch.randn(2, 2, 4), torch.randn(3, 3, 4), torch.randn(3, 3, 4)), ValueError,
     "broadcast"),
    (lambda: ops.sigmoid_attention(torch.randn(2, 4), torch.randn(3, 4), torch.randn(3, 4), bias=float("nan")),
     ValueError, "bias"),
    (lambda: ops.sigmoid_attention(torch.randn(2, 4), torch.randn(3, 4), torch.randn(3, 4), scale="x"), TypeError,
     "scale"),
    (lambda: ops.sigmoid_attention([[1.0]], torch.randn(3, 4), torch.randn(3, 4)), TypeError, "q"),
    (lambda: ops.sigmoid_attention(torch.ones(2, 4, dtype=torch.long), torch.ones(3, 4, dtype=torch.long),
                                   torch.ones(3, 4, dtype=torch.long)), TypeError, "q"),
    (lambda: ops.sigmoid_interface(torch.randn(5, 4), torch.randn(2, 3, 6)), ValueError, "v"),
    (lambda: ops.sigmoid_interface(torch.randn(3, 5, 4), torch.randn(2, 3, 4)), ValueError, "q"),
    (lambda: ops.sigmoid_interface(torch.randn(5, 4), torch.randn(3, 4)), ValueError, "v"),
])
@pytest.mark.parametrize("backend", ["cpu", "triton", "reference"])
def test_bad_inputs_raise_naming_the_argument(call, exc, match, backend):
    with ops.use_backend(backend), pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_long_key_sequence(backend, device):
    """Lk well past 8k: many key tiles, gradients included."""
    _skip_unsupported(backend, device, torch.float32)
    q, k, v = _inputs([(2, 3, 8), (2, 8200, 8), (2, 8200, 8)], torch.float32, device, requires_grad=True)
    out = ops.sigmoid_attention(q, k, v, bias=-3.0, backend=backend)
    ref = reference.sigmoid_attention(q, k, v, bias=-3.0)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5)
    grad = torch.randn_like(out)
    for f, r in zip(_grads(out, (q, k, v), grad), _grads(ref, (q, k, v), grad)):
        torch.testing.assert_close(f, r, atol=1e-4, rtol=1e-5)


def test_head_dims_beyond_the_kernel_limits_fall_back():
    from fact_fast.ops import attention
    wide = torch.zeros(2, attention.TRITON_MAX_HEAD_DIM + 8)
    narrow = torch.zeros(2, 8)
    if attention._support.triton(narrow) is None:
        assert "head dim" in attention._triton_supports(narrow, narrow, wide, 1.0, 0.0)
        assert attention._triton_supports(narrow, narrow, narrow, 1.0, 0.0) is None
    assert "head dim" in attention._head_dims_at_most(attention.CUDA_MAX_HEAD_DIM, narrow, wide)
    # auto still runs wide heads (compiled cpu or the reference)
    q, k, v = torch.randn(3, 520), torch.randn(4, 520), torch.randn(4, 520)
    torch.testing.assert_close(ops.sigmoid_attention(q, k, v), reference.sigmoid_attention(q, k, v),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_fused_backends_under_autocast(backend, device):
    """Under bf16 autocast (``--amp``) the fused ops take their bf16 inputs as they are and give the
    reference's result (autocast must not re-cast the compiled CPU kernel's internal matmuls)."""
    _skip_unsupported(backend, device, torch.bfloat16)
    q, k, v = _inputs(SHAPES["basic"], torch.bfloat16, device)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        out = ops.sigmoid_attention(q, k, v, bias=-1.0, backend=backend)
        kv = ops.sigmoid_attention(q, k, k, backend=backend)
        iface = ops.sigmoid_interface(q, k, backend=backend)
    ref64 = reference.sigmoid_attention(q.double(), k.double(), v.double(), 1 / math.sqrt(32), -1.0)
    ref_lp = reference.sigmoid_attention(q, k, v, 1 / math.sqrt(32), -1.0)
    assert out.dtype == kv.dtype == iface.dtype == torch.bfloat16
    _check_flash(out, ref_lp, ref64, torch.bfloat16, "autocast attention")
    ref_kv = reference.sigmoid_attention(q.double(), k.double(), k.double(), 1 / math.sqrt(32), 0.0)
    _check_flash(kv, reference.sigmoid_attention(q, k, k, 1 / math.sqrt(32), 0.0), ref_kv, torch.bfloat16,
                 "autocast kv")
    ref_if = reference.sigmoid_interface(q.double(), k.double(), 0.0)
    _check_flash(iface, reference.sigmoid_interface(q, k, 0.0), ref_if, torch.bfloat16, "autocast interface")


class _MustNotLaunch:
    def __getitem__(self, grid):
        raise AssertionError("the dQ kernel was launched although q needs no gradient")


@pytest.mark.parametrize("kind", ["attention", "interface"])
def test_triton_skips_dq_when_q_needs_no_gradient(monkeypatch, kind):
    _skip_unsupported("triton", "cpu", torch.float32)
    from fact_fast.kernels import _launch
    from fact_fast.kernels import attention as kernels
    q, k, v = _inputs([(2, 5, 16), (2, 7, 16), (2, 7, 16)], torch.float32, "cpu", requires_grad=True)
    q.requires_grad_(False)
    # the launcher's interpreter check would reject the stand-in before its launch could be seen
    check = _launch.check_interpreter
    monkeypatch.setattr(_launch, "check_interpreter",
                        lambda kernel: None if isinstance(kernel, _MustNotLaunch) else check(kernel))

    def run(backend, q, k, v):
        if kind == "attention":
            return ops.sigmoid_attention(q, k, v, bias=0.3, backend=backend)
        return ops.sigmoid_interface(q, v, bias=0.3, backend=backend)

    grad = torch.randn(2, 5, 16)
    inputs = (k, v) if kind == "attention" else (v,)
    want = _grads(run("reference", q, k, v), inputs, grad)
    monkeypatch.setattr(kernels, "_attention_bwd_q_kernel", _MustNotLaunch())
    got = _grads(run("triton", q, k, v), inputs, grad)
    for f, r in zip(got, want):
        torch.testing.assert_close(f, r, atol=1e-5, rtol=1e-5)
    with pytest.raises(AssertionError, match="dQ kernel"):  # the stand-in does catch a launch
        _grads(run("triton", q.clone().requires_grad_(), k, v), inputs, grad)


def test_triton_backward_ops_without_dq_pass_opcheck():
    _skip_unsupported("triton", "cpu", torch.float32)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(s, generator=g) for s in ((2, 5, 16), (2, 7, 16), (2, 7, 8)))
    dq, dk, dv = torch.ops.fact_fast.sigmoid_attention_triton_backward(torch.randn(2, 5, 8), q, k, v, 0.25, 0.5,
                                                                       False)
    assert dq.numel() == 0 and dk.shape == k.shape and dv.shape == v.shape
    torch.library.opcheck(torch.ops.fact_fast.sigmoid_attention_triton_backward,
                          (torch.randn(2, 5, 8), q, k, v, 0.25, 0.5, False))
    torch.library.opcheck(torch.ops.fact_fast.sigmoid_attention_kv_triton_backward,
                          (torch.randn(2, 5, 16), q, k, 0.25, 0.5, False))
