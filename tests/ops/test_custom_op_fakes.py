"""Every custom op's fake (meta) kernel promises the shapes, dtypes and strides its real kernel
returns, also for non-contiguous inputs (torch.compile lays out its buffers from the fakes), and
Inductor compiles the fused ops forward and backward.

Inductor generates and compiles C++ on the CPU (seconds per graph on two cores), so each family
gets one small Inductor case here; the fuzzy family's (a transposed e) is in test_fuzzy_backends.
"""
import pytest
import torch

from fact_fast import ops
from fact_fast.ops import gcn as gcn_ops
from tests.helpers.op_utils import assert_close, fresh_inductor, fused_backends


def transposed(*shape):
    """Random values of ``shape`` laid out with the last two dimensions swapped (not contiguous)."""
    return torch.randn(*shape[:-2], shape[-1], shape[-2]).transpose(-1, -2)


def _cases():
    q, k, v, kv, go = (transposed(2, 5, 8), transposed(2, 7, 8), transposed(2, 7, 8), transposed(2, 7, 8),
                       transposed(2, 5, 8))
    z, codebook, index = transposed(6, 4), transposed(5, 4), torch.randint(0, 5, (6,))
    rowptr, col, value = torch.tensor([0, 2, 3, 5]), torch.tensor([0, 1, 2, 0, 2]), torch.rand(5)
    x = transposed(3, 4)
    dinv, t = gcn_ops.degree_inv_sqrt(rowptr, value, True), gcn_ops.transpose_csr(rowptr, col, 3)
    e = torch.randn(4, 3, 5).transpose(0, 1)
    s, y, tau = transposed(4, 5), (torch.rand(3, 4) < 0.5).float(), torch.tensor(2.0)
    cases = {}
    for suffix in ("", "_triton"):
        cases["sigmoid_attention" + suffix] = (q, k, v, 0.3, 0.1)
        cases["sigmoid_attention_kv" + suffix] = (q, kv, 0.3, 0.1, True)
        cases["vq_nearest" + suffix] = (z, codebook, False)
        cases["vq_quantize" + suffix] = (z, codebook, 0.25, False)
        cases["vq_residual_backward" + suffix] = (z, codebook, index, transposed(6, 4), torch.rand(6), torch.rand(6),
                                                  False)
        cases["gcn_spmm" + suffix] = (x, rowptr, col, value, dinv, *t, True, True)
        cases["gcn_spmm_value_grad" + suffix] = (transposed(3, 4), x, rowptr, col, value, dinv, transposed(3, 4),
                                                 True, True)
        cases["fuzzy_loss" + suffix] = (e, s, y, tau, 1.0, 10.0, 0.5, 1.0, "none", "log")
        cases["fuzzy_membership" + suffix] = (e, s, tau)
    cases["sigmoid_attention_backward"] = cases["sigmoid_attention_triton_backward"] = (go, q, k, v, 0.3, 0.1)
    cases["sigmoid_attention_kv_backward"] = cases["sigmoid_attention_kv_triton_backward"] = (go, q, kv, 0.3, 0.1)
    for name in ("fuzzy_backward", "fuzzy_backward_triton"):  # stats (None here) come from the forward
        cases[name] = (torch.tensor(1.0), None, e, s, y, tau, None, 1.0, 10.0, 0.5, "mean", "log")
    return cases


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_fake_matches_real_on_non_contiguous_inputs(name):
    if not hasattr(torch.ops.fact_fast, name):
        pytest.skip(f"fact_fast::{name} is not registered here (extension not built)")
    if name.startswith("fuzzy_backward"):  # needs the forward's real stats
        loss_op = getattr(torch.ops.fact_fast, name.replace("backward", "loss"))
        args = list(CASES[name])
        args[6] = loss_op(*args[2:6], 1.0, 10.0, 0.5, 1.0, "mean", "log")[2]
        args = tuple(args)
    else:
        args = CASES[name]
    torch.library.opcheck(getattr(torch.ops.fact_fast, name).default, args, test_utils=("test_faketensor",))


# --- Inductor, forward and backward, one small case per family ------------------------------------

def _fused(op, *example):
    found = fused_backends(op, *example)
    return "cpu" if "cpu" in found else (found[0] if found else None)


def _compare_compiled(fn, backend, inputs, what):
    """fn(backend, *inputs) compiled with Inductor against the reference, value and gradients."""
    compiled = torch.compile(lambda *a: fn(backend, *a), fullgraph=True, backend="inductor")
    got = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    want = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    with fresh_inductor():
        out = compiled(*got)
        out.backward()
    ref = fn("reference", *want)
    ref.backward()
    assert_close(out.detach(), ref.detach(), 1e-5, 1e-4, what)
    for g, w in zip(got, want):
        if w.grad is not None:
            assert_close(g.grad, w.grad, 1e-4, 1e-4, what + " grad")


def test_inductor_vq_quantize():
    z, codebook = torch.randn(4, 6, 5), torch.randn(7, 5)
    backend = _fused("vq_quantize", z, codebook, 0.25, False)
    if backend is None:
        pytest.skip("no fused vq backend here")

    def fn(backend, z, codebook):  # z is a transposed view made inside the graph
        v, _, loss = ops.vq_quantize((z * 1.5).transpose(0, 1), codebook, 0.25, backend=backend)
        return (v * v).sum() + loss

    _compare_compiled(fn, backend, (z, codebook), f"vq_quantize {backend}")


def test_inductor_gcn_weighted_graph():
    rowptr, col = torch.tensor([0, 2, 3, 5, 6]), torch.tensor([0, 1, 2, 0, 3, 1])
    value = torch.rand(6) + 0.5
    backend = _fused("gcn_propagate", torch.randn(4, 3), rowptr, col, value, True, True)
    if backend is None:
        pytest.skip("no fused gcn backend here")

    def fn(backend, x, value):  # learnable edge weights; x transposed inside the graph
        graph = ops.prepare_graph(rowptr, col, value)
        return ops.gcn_propagate((x * 2.0).t(), graph, backend=backend).pow(2).sum()

    _compare_compiled(fn, backend, (torch.randn(3, 4), value), f"gcn_propagate {backend}")


def test_inductor_sigmoid_attention():
    q, k = torch.randn(2, 8, 5), torch.randn(2, 8, 7)
    backend = _fused("sigmoid_attention", q, q, q, 1.0, 0.0)
    if backend is None:
        pytest.skip("no fused attention backend here")

    def fn(backend, q, k):  # head-major inputs transposed inside the graph
        qt, kt = (q * 1.5).transpose(1, 2), k.transpose(1, 2)
        return ops.sigmoid_attention(qt, kt, kt, bias=0.2, backend=backend).pow(2).sum()

    _compare_compiled(fn, backend, (q, k), f"sigmoid_attention {backend}")
