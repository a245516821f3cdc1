"""Under torch.autocast (bf16 AMP) every fused op runs on the dtype it is given, with autocast off
inside it: float32 inputs give exactly the float32 result and gradients, and a FACT training step
works on every CPU backend (autocast must not re-cast the compiled kernels' internal matmuls)."""
import pytest
import torch

from fact_fast import ops
from fact_fast.models import TaskInfo, create_model


def _cases():
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    rowptr = torch.tensor([0, 2, 3, 5, 6])
    col = torch.tensor([1, 2, 0, 1, 3, 2])
    y = (r(2, 3) > 0).float()
    return {
        "vq_quantize": (lambda z, cb: ops.vq_quantize(z, cb)[0], (r(9, 8), r(6, 8))),
        "gcn_propagate": (lambda x: ops.gcn_propagate(x, rowptr, col), (r(4, 5),)),
        "sigmoid_attention": (lambda q, k, v: ops.sigmoid_attention(q, k, v), (r(2, 3, 8), r(2, 5, 8), r(2, 5, 4))),
        "sigmoid_interface": (lambda q, v: ops.sigmoid_interface(q, v), (r(3, 8), r(2, 5, 8))),
        "fuzzy_loss": (lambda e, s, tau: ops.fuzzy_loss(e, s, y, tau)[0],
                       (r(2, 3, 8), r(3, 8), torch.tensor(4.0))),
    }


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("op", sorted(_cases()))
def test_fused_ops_keep_their_input_dtype_under_autocast(op, backend):
    fn, args = _cases()[op]
    with ops.use_backend(backend):
        plain_args = [a.clone().requires_grad_(True) for a in args]
        want = fn(*plain_args)
        want.float().sum().backward()
        amp_args = [a.clone().requires_grad_(True) for a in args]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = fn(*amp_args)
        got.float().sum().backward()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for a, b in zip(amp_args, plain_args):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_fact_training_step_under_bf16_autocast(backend):
    torch.manual_seed(0)
    C = 5
    task = TaskInfo([f"c{i}" for i in range(C)], torch.randn(C, 24),
                    {"rowptr": torch.arange(C + 1) * 0, "col": torch.zeros(0, dtype=torch.int64)})
    model = create_model("fact_test", task)
    x, y = torch.randn(4, 3, 64, 64), (torch.rand(4, C) < 0.4).float()
    model.initialize(x)
    with ops.use_backend(backend):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        loss = model.loss(out, y)["total"]
        loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
