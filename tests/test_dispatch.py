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
