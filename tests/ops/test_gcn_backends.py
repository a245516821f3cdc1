"""gcn_propagate: every fused backend against the reference and an independent dense formulation."""
from __future__ import annotations

import contextlib
import gc

import pytest
import torch

from fact_fast import _extension, ops
from fact_fast.ops import gcn as gcn_ops
from fact_fast.ops import reference, tolerances
from fact_fast.ops.gcn import CSRGraph, prepare_graph
from tests.helpers.op_utils import assert_close, fused_backends, non_contiguous

OP = "gcn_propagate"

# (dtype, atol, rtol) for outputs and gradients against the float32/float64 reference.
TOLERANCES = [(dtype, *tol) for dtype, tol in tolerances.GCN.items()]


def make_graph(n: int, nnz: int, *, int32: bool = False, weighted: bool = True, zero_rows: int = 0,
               device="cpu", generator=None):
    """Random asymmetric CSR with duplicates and self loops; the last ``zero_rows`` rows are empty."""
    g = generator or torch.Generator().manual_seed(n * 1000 + nnz)
    live = max(n - zero_rows, 1)
    row = torch.randint(0, live, (nnz,), generator=g).sort().values if n else torch.zeros(0, dtype=torch.long)
    col = torch.randint(0, max(n, 1), (nnz,), generator=g) if n else torch.zeros(0, dtype=torch.long)
    if nnz >= 4 and n >= 2:
        col[0] = row[0]  # an existing self loop
        col[2] = col[1] = col[1]  # a duplicate entry (same row after sorting is likely; make sure)
        row[2] = row[1]
    rowptr = torch.zeros(n + 1, dtype=torch.long)
    if n:
        rowptr[1:] = torch.bincount(row, minlength=n).cumsum(0)
    value = (torch.rand(nnz, generator=g, dtype=torch.float64) + 0.25) if weighted else None
    idx = torch.int32 if int32 else torch.int64
    return (rowptr.to(device, idx), col.to(device, idx),
            None if value is None else value.to(device))


def dense_propagate(x, rowptr, col, value, add_self_loops=True, normalize=True):
    """Independent oracle: dense Â from index_put_(accumulate=True), float64, differentiable in x and value."""
    n = x.shape[0]
    row = torch.repeat_interleave(torch.arange(n, device=x.device), (rowptr[1:] - rowptr[:-1]).long())
    w = value.double() if value is not None else torch.ones(col.shape[0], dtype=torch.float64, device=x.device)
    a = torch.zeros(n, n, dtype=torch.float64, device=x.device).index_put((row, col.long()), w, accumulate=True)
    if add_self_loops:
        a = a + torch.eye(n, dtype=torch.float64, device=x.device)
    if normalize:
        deg = a.sum(1)
        dinv = torch.where(deg > 0, deg.clamp_min(1e-300).rsqrt(), torch.zeros_like(deg))
        a = dinv[:, None] * a * dinv[None, :]
    return a @ x.double()


def _backends(x, rowptr, col, value=None):
    return fused_backends(OP, x, rowptr, col, value, True, True)


def _cases():
    return [pytest.param(d, a, r, id=str(d).replace("torch.", "")) for d, a, r in TOLERANCES]


FLAGS = [(True, True), (True, False), (False, True), (False, False)]


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("dtype,atol,rtol", _cases())
@pytest.mark.parametrize("weighted,int32", [(False, False), (True, True)], ids=["unweighted-int64", "weighted-int32"])
def test_forward_matches_reference_and_dense(backend, dtype, atol, rtol, weighted, int32):
    rowptr, col, value = make_graph(13, 50, weighted=weighted, zero_rows=3, int32=int32)
    x = torch.randn(13, 20, dtype=torch.float64).to(dtype)
    if backend not in _backends(x, rowptr, col):
        pytest.skip(f"{backend} cannot run {dtype} here")
    v = None if value is None else value.float()
    for add_loops, normalize in FLAGS:
        out = ops.gcn_propagate(x, rowptr, col, v, add_loops, normalize, backend=backend)
        assert out.dtype == dtype and out.shape == x.shape
        ref = reference.gcn_propagate(x, rowptr, col, v, add_loops, normalize)
        dense = dense_propagate(x, rowptr, col, v, add_loops, normalize)
        what = f"{backend} {dtype} self_loops={add_loops} normalize={normalize}"
        assert_close(out, ref, atol, rtol, what + " vs reference")
        assert_close(out, dense, max(atol, 1e-5), max(rtol, 1e-5), what + " vs dense")


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_edge_cases(backend):
    x0 = torch.randn(0, 8)
    rp0, c0, _ = make_graph(0, 0)
    if backend not in _backends(x0, rp0, c0):
        pytest.skip(f"{backend} unavailable")
    assert ops.gcn_propagate(x0, rp0, c0, backend=backend).shape == (0, 8)  # n = 0
    # nnz = 0: with self loops Â = I (deg 1), without them every row has degree 0 and gives 0.
    x = torch.randn(5, 7)
    rp, c = torch.zeros(6, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    assert_close(ops.gcn_propagate(x, rp, c, backend=backend), x, 1e-6, 1e-6, "nnz=0 with self loops")
    assert torch.count_nonzero(ops.gcn_propagate(x, rp, c, add_self_loops=False, backend=backend)) == 0
    # one row with a self loop of weight 3: Â = (3 + 1) / 4 = 1
    x1 = torch.randn(1, 3)
    out = ops.gcn_propagate(x1, torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([3.0]), backend=backend)
    assert_close(out, x1, 1e-6, 1e-6, "one row")
    # zero-degree rows (last 4 rows have no edges), f = 1, int32 indices, non-contiguous x
    rowptr, col, value = make_graph(11, 30, int32=True, zero_rows=4)
    xs = non_contiguous(torch.randn(11, 9))
    for add_loops in (True, False):
        out = ops.gcn_propagate(xs, rowptr, col, value.float(), add_loops, backend=backend)
        assert_close(out, dense_propagate(xs, rowptr, col, value, add_loops), 1e-5, 1e-5, "int32/non-contig")
        if not add_loops:
            assert torch.count_nonzero(out[-4:]) == 0
    out = ops.gcn_propagate(xs[:, :1], rowptr, col, backend=backend)
    assert_close(out, dense_propagate(xs[:, :1], rowptr, col, None), 1e-5, 1e-5, "f=1")
    # mixed index dtypes (int64 rowptr, int32 col)
    out = ops.gcn_propagate(xs, rowptr.long(), col, backend=backend)
    assert_close(out, dense_propagate(xs, rowptr, col, None), 1e-5, 1e-5, "mixed index dtypes")


def test_negative_degree_rows_give_zero():
    # row 0's weights sum to -2 (+1 self loop = -1 < 0): dinv = 0 there, as in the reference
    rowptr, col = torch.tensor([0, 2, 3]), torch.tensor([0, 1, 0])
    value = torch.tensor([-1.0, -1.0, 0.5])
    x = torch.randn(2, 4)
    for backend in fused_backends(OP, x, rowptr, col, value, True, True):
        out = ops.gcn_propagate(x, rowptr, col, value, backend=backend)
        assert_close(out, dense_propagate(x, rowptr, col, value), 1e-6, 1e-6, backend)
        assert torch.count_nonzero(out[0]) == 0
    if "cpu" in fused_backends(OP, x, rowptr, col, value, True, True):  # no degree term where dinv = 0
        inputs = (x.double().requires_grad_(True), value.double().requires_grad_(True))
        assert torch.autograd.gradcheck(lambda x, v: ops.gcn_propagate(x, rowptr, col, v, backend="cpu"), inputs)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: f"loops{int(f[0])}-norm{int(f[1])}")
def test_gradcheck_cpu_float64(weighted, flags):
    rowptr, col, value = make_graph(7, 18, weighted=True, zero_rows=2)
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    if "cpu" not in _backends(x, rowptr, col):
        pytest.skip("compiled cpu backend unavailable")
    inputs = (x, value.clone().requires_grad_(True)) if weighted else (x,)

    def fn(x, value=None):
        return ops.gcn_propagate(x, rowptr, col, value, *flags, backend="cpu")

    assert torch.autograd.gradcheck(fn, inputs)
    # the same gradients as the independent dense formulation (degrees depend on value)
    out, dense = fn(*inputs), dense_propagate(inputs[0], rowptr, col, inputs[1] if weighted else None, *flags)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, inputs, g)
    want = torch.autograd.grad(dense, inputs, g)
    for a, b in zip(got, want):
        assert_close(a, b, 1e-10, 1e-10, "cpu gradient vs dense")


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("dtype,atol,rtol", _cases())
def test_gradients_match_reference(backend, dtype, atol, rtol):
    rowptr, col, value = make_graph(12, 40, zero_rows=2)
    x = torch.randn(12, 24, dtype=torch.float64).to(dtype)
    if backend not in _backends(x, rowptr, col):
        pytest.skip(f"{backend} cannot run {dtype} here")
    value = value.to(torch.float64 if dtype == torch.float64 else torch.float32)
    g = torch.randn(12, 24, dtype=torch.float64).to(dtype)
    for add_loops, normalize in FLAGS:
        grads = []
        for b in (backend, "reference"):
            xr, vr = x.clone().requires_grad_(True), value.clone().requires_grad_(True)
            out = ops.gcn_propagate(xr, rowptr, col, vr, add_loops, normalize, backend=b)
            grads.append(torch.autograd.grad(out, (xr, vr), g))
        what = f"{backend} {dtype} loops={add_loops} normalize={normalize}"
        assert_close(grads[0][0], grads[1][0], atol, rtol, what + " dx")
        assert_close(grads[0][1], grads[1][1], *tolerances.gcn_value_grad(dtype), what + " dvalue")



@pytest.mark.parametrize("weighted", [False, True])
def test_triton_several_rows_per_program(monkeypatch, weighted):
    """With few multiprocessors each Triton program walks MAX_ROWS rows, the last program a partial
    set: outputs and gradients still match the reference."""
    rowptr, col, value = make_graph(70, 250, zero_rows=3, weighted=weighted)
    x = torch.randn(70, 20, dtype=torch.float64).float()
    if "triton" not in _backends(x, rowptr, col):
        pytest.skip("triton unavailable")
    from fact_fast.kernels import gcn as kernels
    monkeypatch.setattr(kernels, "multiprocessors", lambda device: 1)
    assert kernels._rows_per_program(70, 1, torch.device("cpu")) == kernels.MAX_ROWS  # 9 programs, the last of 6
    value = value.float() if weighted else None
    g = torch.randn(70, 20)
    for add_loops, normalize in FLAGS:
        grads = []
        for b in ("triton", "reference"):
            xr = x.clone().requires_grad_(True)
            vr = value.clone().requires_grad_(True) if weighted else None
            out = ops.gcn_propagate(xr, rowptr, col, vr, add_loops, normalize, backend=b)
            grads.append((out,) + torch.autograd.grad(out, (xr, vr) if weighted else (xr,), g))
        what = f"loops={add_loops} normalize={normalize}"
        assert_close(grads[0][0], grads[1][0], 1e-5, 1e-5, what + " out")
        assert_close(grads[0][1], grads[1][1], 1e-5, 1e-5, what + " dx")
        if weighted:
            assert_close(grads[0][2], grads[1][2], 1e-4, 1e-4, what + " dvalue")


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_graph_object_matches_raw_and_caches(backend):
    rowptr, col, value = make_graph(10, 35, int32=True)
    value = value.float().requires_grad_(True)
    x = torch.randn(10, 6, requires_grad=True)
    if backend not in _backends(x, rowptr, col):
        pytest.skip(f"{backend} unavailable")
    graph = prepare_graph(rowptr, col, value, requires_grad=True)
    assert isinstance(graph, CSRGraph) and graph.num_nodes == 10 and graph.nnz == 35
    out_graph = ops.gcn_propagate(x, graph, backend=backend)
    out_raw = ops.gcn_propagate(x, rowptr, col, value, backend=backend)
    assert_close(out_graph, out_raw, 1e-6, 1e-6, "graph vs raw")
    g = torch.randn_like(out_raw)
    assert_close(torch.autograd.grad(out_graph, (x, value), g)[1], torch.autograd.grad(out_raw, (x, value), g)[1],
                 1e-5, 1e-5, "graph vs raw dvalue")
    dinv = graph.dinv()
    assert graph.dinv() is dinv  # cached
    with torch.no_grad():
        value.mul_(2.0)  # an optimizer step: the version counter moves, the degrees are recomputed
    assert graph.dinv() is not dinv
    assert_close(ops.gcn_propagate(x, graph, backend=backend), dense_propagate(x, rowptr, col, value), 1e-5, 1e-5,
                 "after in-place value update")
    # other flags than the precomputed ones still work
    assert_close(ops.gcn_propagate(x, graph, add_self_loops=False, backend=backend),
                 dense_propagate(x, rowptr, col, value, False), 1e-5, 1e-5, "graph without self loops")


def test_transposed_csr_maps_edges_back():
    rowptr, col, value = make_graph(9, 30)
    t_rowptr, t_col, t_perm = CSRGraph(rowptr, col, value).transposed()
    row = torch.repeat_interleave(torch.arange(9), rowptr[1:] - rowptr[:-1])
    t_row = torch.repeat_interleave(torch.arange(9), t_rowptr[1:] - t_rowptr[:-1])
    assert torch.equal(t_row, col[t_perm]) and torch.equal(t_col, row[t_perm])
    assert torch.equal(t_perm.sort().values, torch.arange(30))
    a = torch.zeros(9, 9, dtype=torch.float64).index_put_((row, col), value, accumulate=True)
    at = torch.zeros(9, 9, dtype=torch.float64).index_put_((t_row, t_col), value[t_perm], accumulate=True)
    assert torch.equal(a.t(), at)


def test_graph_mismatch_errors():
    rowptr, col, _ = make_graph(6, 10)
    graph = prepare_graph(rowptr, col)
    with pytest.raises(ValueError, match="nodes"):
        ops.gcn_propagate(torch.randn(5, 3), graph)
    with pytest.raises(ValueError, match="either"):
        ops.gcn_propagate(torch.randn(6, 3), graph, col)
    with pytest.raises(TypeError, match="col"):
        ops.gcn_propagate(torch.randn(6, 3), rowptr)


MALFORMED = {
    "decreasing rowptr": (torch.tensor([0, 3, 1, 4]), torch.tensor([0, 1, 2, 0]), "non-decreasing"),
    "out-of-range col": (torch.tensor([0, 2, 3, 4]), torch.tensor([0, 3, 1, 2]), "col"),
    "negative col": (torch.tensor([0, 2, 3, 4]), torch.tensor([0, -1, 1, 2]), "col"),
    "rowptr end != nnz": (torch.tensor([0, 2, 3, 3]), torch.tensor([0, 1, 2, 0]), "nnz"),
    "rowptr start != 0": (torch.tensor([1, 2, 3, 4]), torch.tensor([0, 1, 2, 0]), "start at 0"),
    "rowptr length": (torch.tensor([0, 2, 4]), torch.tensor([0, 1, 2, 0]), "n \\+ 1"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_csr_raises(case):
    rowptr, col, match = MALFORMED[case]
    x = torch.randn(3, 4)
    for backend in ["reference"] + fused_backends(OP, x, torch.tensor([0, 0, 0, 0]), col, None, True, True):
        with pytest.raises(ValueError, match=match):
            ops.gcn_propagate(x, rowptr, col, backend=backend)
    with pytest.raises(ValueError, match=match):
        prepare_graph(rowptr, col, num_nodes=3)


@pytest.mark.parametrize("case", [c for c in MALFORMED if c != "rowptr length"])
def test_compiled_op_rejects_malformed_csr_directly(case):
    if not _extension.has_kernel("gcn_spmm", "cpu"):
        pytest.skip("compiled cpu op unavailable")
    rowptr, col, _ = MALFORMED[case]
    x, dinv, empty = torch.randn(3, 4), torch.ones(3), torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="rowptr|col"):
        torch.ops.fact_fast.gcn_spmm(x, rowptr, col, None, dinv, empty, empty, empty, True, True)
    with pytest.raises(ValueError, match="rowptr|col"):
        torch.ops.fact_fast.gcn_spmm_value_grad(x, x, rowptr, col, None, dinv, x, True, True)


def test_compiled_op_checks_shapes_and_dtypes():
    if not _extension.has_kernel("gcn_spmm", "cpu"):
        pytest.skip("compiled cpu op unavailable")
    rowptr, col, _ = make_graph(4, 6)
    x, empty = torch.randn(4, 2), torch.zeros(0, dtype=torch.long)
    spmm = torch.ops.fact_fast.gcn_spmm
    with pytest.raises(ValueError, match="dinv"):
        spmm(x, rowptr, col, None, torch.ones(3), empty, empty, empty, True, True)
    with pytest.raises(TypeError, match="dinv"):
        spmm(x, rowptr, col, None, torch.ones(4, dtype=torch.float64), empty, empty, empty, True, True)
    with pytest.raises(ValueError, match="value"):
        spmm(x, rowptr, col, torch.ones(5), torch.ones(4), empty, empty, empty, True, True)
    with pytest.raises(TypeError, match="same dtype"):
        spmm(x, rowptr.int(), col, None, torch.ones(4), empty, empty, empty, True, True)
    with pytest.raises(ValueError, match="rowptr"):
        spmm(x, rowptr[:-1], col, None, torch.ones(4), empty, empty, empty, True, True)


def test_front_end_type_errors():
    rowptr, col, _ = make_graph(4, 6)
    with pytest.raises(TypeError, match="rowptr"):
        ops.gcn_propagate(torch.randn(4, 2), rowptr.float(), col)
    with pytest.raises(ValueError, match="value"):
        ops.gcn_propagate(torch.randn(4, 2), rowptr, col, torch.ones(5))
    with pytest.raises(ValueError, match="x"):
        ops.gcn_propagate(torch.randn(4), rowptr, col)


def test_cpu_is_deterministic():
    rowptr, col, value = make_graph(50, 400)
    x = torch.randn(50, 33)
    if "cpu" not in _backends(x, rowptr, col):
        pytest.skip("compiled cpu backend unavailable")
    outs = [ops.gcn_propagate(x, rowptr, col, value.float(), backend="cpu") for _ in range(3)]
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def _opcheck_args(dtype=torch.float32):
    rowptr, col, value = make_graph(6, 14)
    x = torch.randn(6, 5, dtype=dtype)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    dinv = gcn_ops.degree_inv_sqrt(rowptr, value, True, compute)
    t = gcn_ops.transpose_csr(rowptr, col, 6)
    return x, rowptr, col, value.to(compute), dinv, t


def test_opcheck_compiled():
    if not _extension.has_kernel("gcn_spmm", "cpu"):
        pytest.skip("compiled cpu op unavailable")
    x, rowptr, col, value, dinv, t = _opcheck_args()
    torch.library.opcheck(torch.ops.fact_fast.gcn_spmm,
                          (x.requires_grad_(True), rowptr, col, value.requires_grad_(True), dinv, *t, True, True))
    torch.library.opcheck(torch.ops.fact_fast.gcn_spmm_value_grad,
                          (torch.randn_like(x), x.detach(), rowptr, col, value.detach(), dinv, torch.randn_like(x),
                           True, True))


def test_opcheck_triton():
    x, rowptr, col, value, dinv, t = _opcheck_args()
    if "triton" not in _backends(x, rowptr, col):
        pytest.skip("triton unavailable")
    torch.library.opcheck(torch.ops.fact_fast.gcn_spmm_triton,
                          (x.requires_grad_(True), rowptr, col, value.requires_grad_(True), dinv, *t, True, True),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_torch_compile_fullgraph():
    rowptr, col, value = make_graph(8, 20)
    x = torch.randn(8, 4)
    backend = "cpu" if "cpu" in _backends(x, rowptr, col) else "reference"
    fn = torch.compile(lambda x, v: ops.gcn_propagate(x, rowptr, col, v, backend=backend), fullgraph=True)
    assert_close(fn(x, value.float()), dense_propagate(x, rowptr, col, value), 1e-5, 1e-5, "compiled")


# --- CUDA (run where a GPU is lent) ----------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype,atol,rtol", _cases()[:3])
@pytest.mark.parametrize("int32", [False, True], ids=["int64", "int32"])
def test_cuda_forward_backward(backend, dtype, atol, rtol, int32):
    rowptr, col, value = make_graph(300, 3000, int32=int32, zero_rows=20, device="cuda")
    x = torch.randn(300, 72, device="cuda", dtype=torch.float64).to(dtype)
    if backend not in _backends(x, rowptr, col):
        pytest.skip(f"{backend} unavailable")
    atol, rtol = tolerances.gcn(dtype, "cuda")  # TF32-free but reordered float sums
    value = value.float()
    g = torch.randn_like(x)
    for add_loops, normalize in FLAGS:
        res = []
        for b in (backend, "reference"):
            xr, vr = x.clone().requires_grad_(True), value.clone().requires_grad_(True)
            out = ops.gcn_propagate(xr, rowptr, col, vr, add_loops, normalize, backend=b)
            res.append((out, *torch.autograd.grad(out, (xr, vr), g)))
        what = f"{backend} {dtype} loops={add_loops} normalize={normalize}"
        assert_close(res[0][0], res[1][0], atol, rtol, what + " out")
        assert_close(res[0][1], res[1][1], atol, rtol, what + " dx")
        assert_close(res[0][2], res[1][2], *tolerances.gcn_value_grad(dtype, "cuda"), what + " dvalue")
    for f in (1, 3, 130):  # unaligned feature widths take the scalar path
        xf = torch.randn(300, f, device="cuda", dtype=dtype)
        assert_close(ops.gcn_propagate(xf, rowptr, col, value, backend=backend),
                     dense_propagate(xf, rowptr, col, value), atol, rtol, f"{backend} f={f}")
    empty_x = torch.randn(0, 8, device="cuda", dtype=dtype)
    assert ops.gcn_propagate(empty_x, torch.zeros(1, dtype=torch.long, device="cuda"),
                             torch.zeros(0, dtype=torch.long, device="cuda"), backend=backend).shape == (0, 8)


@pytest.mark.cuda
def test_cuda_deterministic_and_graph_object():
    rowptr, col, value = make_graph(500, 8000, device="cuda")
    x = torch.randn(500, 128, device="cuda", requires_grad=True)
    if "cuda" not in _backends(x, rowptr, col):
        pytest.skip("cuda backend unavailable")
    graph = prepare_graph(rowptr, col, value.float(), requires_grad=True)
    g = torch.randn(500, 128, device="cuda")
    runs = []
    for _ in range(2):
        out = ops.gcn_propagate(x, graph, backend="cuda")
        runs.append((out, torch.autograd.grad(out, x, g)[0]))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert_close(runs[0][0], dense_propagate(x, rowptr, col, value), 1e-4, 1e-4, "cuda graph")


# --- no per-step host syncs: the raw-tensor call validates once and caches ----------------------

@contextlib.contextmanager
def host_reads():
    """Records every host read of a tensor's values (.item(), .tolist(), bool()) inside the block:
    on a GPU each one is a device sync."""
    reads, real = [], {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__bool__")}

    def spy(name):
        return lambda self, *a: reads.append(name) or real[name](self, *a)

    try:
        for name in real:
            setattr(torch.Tensor, name, spy(name))
        yield reads
    finally:
        for name, fn in real.items():
            setattr(torch.Tensor, name, fn)


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_raw_tensor_calls_validate_once_and_never_sync_again(backend, monkeypatch):
    rowptr, col, value = make_graph(12, 40)
    value = value.float().requires_grad_(True)
    x = torch.randn(12, 5, requires_grad=True)
    if backend != "reference" and backend not in _backends(x, rowptr, col):
        pytest.skip(f"{backend} unavailable")
    validations = gcn_ops._raw_graphs.validations
    sorts = []
    real_transpose = gcn_ops.transpose_csr
    monkeypatch.setattr(gcn_ops, "transpose_csr", lambda *a: sorts.append(1) or real_transpose(*a))
    with host_reads() as reads:
        first = ops.gcn_propagate(x, rowptr, col, value, backend=backend)
        first.sum().backward()
    assert reads == ["tolist"]  # the first call validates: one read of all the checks at once
    assert gcn_ops._raw_graphs.validations == validations + 1
    sorts_before = len(sorts)
    with host_reads() as reads:  # later training steps: no read, no re-validation, no re-sort
        for _ in range(3):
            out = ops.gcn_propagate(x, rowptr, col, value, backend=backend)
            out.sum().backward()
        with torch.no_grad():
            value.mul_(3.0)  # new weights: the raw call uses them (degrees are recomputed every call)
        updated = ops.gcn_propagate(x, rowptr, col, value, backend=backend)
    assert reads == []
    assert gcn_ops._raw_graphs.validations == validations + 1
    assert len(sorts) == sorts_before
    assert_close(out, first, 0, 0, "cached call")
    assert_close(updated, dense_propagate(x, rowptr, col, value), 1e-5, 1e-5, "after a weight update")


def test_raw_cache_revalidates_modified_graphs_and_forgets_dead_ones():
    rowptr, col, _ = make_graph(6, 10)
    x = torch.randn(6, 3)
    ops.gcn_propagate(x, rowptr, col)
    count = gcn_ops._raw_graphs.validations
    ops.gcn_propagate(x, rowptr, col)
    assert gcn_ops._raw_graphs.validations == count
    col[0] = 9  # an in-place edit that breaks the graph is caught
    with pytest.raises(ValueError, match="col"):
        ops.gcn_propagate(x, rowptr, col)
    col[0] = 1
    ops.gcn_propagate(x, rowptr, col)
    assert gcn_ops._raw_graphs.validations == count + 1  # the edited graph, validated again
    key = (id(rowptr), id(col), 6)
    assert key in gcn_ops._raw_graphs._entries
    del rowptr, col
    gc.collect()  # the pytest.raises traceback above still referenced them
    assert key not in gcn_ops._raw_graphs._entries  # the entry died with its tensors


# --- torch.compile of a weighted graph (its degree cache must not guard on a version counter) --

@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_weighted_graph_compiles_fullgraph(backend):
    rowptr, col, value = make_graph(9, 30)
    x = torch.randn(9, 4)
    if backend not in _backends(x, rowptr, col):
        pytest.skip(f"{backend} unavailable")
    value = value.float().requires_grad_(True)
    graph = prepare_graph(rowptr, col, value, requires_grad=True)
    torch._dynamo.reset()
    fn = torch.compile(lambda x: ops.gcn_propagate(x, graph, backend=backend), fullgraph=True, backend="aot_eager")
    xr = x.clone().requires_grad_(True)
    out = fn(xr)
    g = torch.randn_like(out)
    dx, dvalue = torch.autograd.grad(out, (xr, value), g)
    xd, vd = x.clone().requires_grad_(True), value.detach().clone().requires_grad_(True)
    want = dense_propagate(xd, rowptr, col, vd)
    want_dx, want_dvalue = torch.autograd.grad(want, (xd, vd), g.double())
    assert_close(out, want, 1e-5, 1e-5, "compiled out")
    assert_close(dx, want_dx, 1e-5, 1e-5, "compiled dx")
    assert_close(dvalue, want_dvalue, 1e-4, 1e-4, "compiled dvalue")
    with torch.no_grad():
        value.mul_(0.5)  # the compiled graph computes the degrees itself, so it sees new weights
    assert_close(fn(x), dense_propagate(x, rowptr, col, value), 1e-5, 1e-5, "compiled, after an update")


def test_raw_cache_holds_no_reference_to_mixed_index_tensors():
    rowptr, col, _ = make_graph(7, 12)
    col = col.int()  # int64 rowptr + int32 col: the graph keeps an int64 copy of col
    x = torch.randn(7, 2)
    assert_close(ops.gcn_propagate(x, rowptr, col), dense_propagate(x, rowptr, col, None), 1e-5, 1e-5, "mixed")
    key = (id(rowptr), id(col), 7)
    assert key in gcn_ops._raw_graphs._entries
    del rowptr, col
    gc.collect()
    assert key not in gcn_ops._raw_graphs._entries
