"""Backend selection: argument > use_backend > FACT_FAST_BACKEND > auto."""
import pytest
import torch

from fact_fast import ops
from fact_fast.ops import _backend


def _args():
    return torch.randn(4, 3), torch.randn(5, 3)


def test_every_op_has_a_reference():
    expected = {"vq_nearest", "vq_quantize", "gcn_propagate", "sigmoid_attention", "sigmoid_interface",
                "fuzzy_membership", "fuzzy_loss"}
    assert expected <= set(ops.registered_ops())
    for op in expected:
        assert "reference" in ops.available_backends(op)


def test_precedence(monkeypatch):
    z, cb = _args()
    monkeypatch.setenv("FACT_FAST_BACKEND", "reference")
    assert ops.requested_backend() == "reference"
    with ops.use_backend("auto"):
        assert ops.requested_backend() == "auto"
        with ops.use_backend("reference"):
            assert ops.requested_backend() == "reference"
        assert ops.requested_backend("cpu") == "cpu"
    assert ops.requested_backend() == "reference"
    monkeypatch.delenv("FACT_FAST_BACKEND")
    assert ops.requested_backend() == "auto"
    name, _ = _backend.resolve("vq_nearest", "reference", z.device, z, cb)
    assert name == "reference"


def test_invalid_backend_names(monkeypatch):
    z, cb = _args()
    with pytest.raises(ValueError, match="backend"):
        ops.vq_nearest(z, cb, backend="fast")
    with pytest.raises(ValueError, match="use_backend"):
        with ops.use_backend("gpu"):
            pass
    monkeypatch.setenv("FACT_FAST_BACKEND", "nope")
    with pytest.raises(ValueError, match="FACT_FAST_BACKEND"):
        ops.vq_nearest(z, cb)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for a missing GPU")
def test_forced_cuda_on_cpu_tensors_raises():
    z, cb = _args()
    with pytest.raises(ops.BackendUnavailableError, match="cuda"):
        ops.vq_nearest(z, cb, backend="cuda")


def test_auto_picks_compiled_cpu_when_built():
    z, cb = _args()
    name, _ = _backend.resolve("vq_nearest", None, z.device, z, cb)
    from fact_fast import _extension
    assert name == ("cpu" if _extension.has_kernel("vq_nearest", "cpu") else "reference")


def test_auto_falls_back_to_reference_for_float64_triton_only():
    # auto never picks Triton for CPU tensors, even under the interpreter
    x = torch.randn(3, 2)
    name, _ = _backend.resolve("sigmoid_attention", None, x.device, x, x, x, 1.0, 0.0)
    assert name in ("cpu", "reference")


def test_triton_is_the_gpu_default_of_every_family():
    for op in ops.registered_ops():
        assert _backend.auto_order(op, "cuda")[0] == "triton", op
        assert "triton" not in _backend.auto_order(op, "cpu"), op


class _CudaLike:
    """Stands in for a CUDA tensor: the Triton predicate reads only .device and .dtype."""

    def __init__(self, dtype=torch.float32):
        self.device, self.dtype = torch.device("cuda", 0), dtype


def test_triton_refuses_gpus_below_sm80_with_a_reason(monkeypatch):
    from fact_fast.ops import _support
    if not _support.triton_available():
        pytest.skip("triton not installed")
    monkeypatch.setattr(_support, "cuda_capability", lambda index: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Tesla T4")
    reason = _support.triton(_CudaLike())
    assert reason is not None and "8.0" in reason and "Tesla T4" in reason and "7.5" in reason
    monkeypatch.setattr(_support, "cuda_capability", lambda index: (8, 0))
    assert _support.triton(_CudaLike()) is None
    monkeypatch.setattr(_support, "cuda_capability", lambda index: (9, 0))
    assert _support.triton(_CudaLike(torch.bfloat16)) is None
    assert "dtype" in _support.triton(_CudaLike(torch.float64))
