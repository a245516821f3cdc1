"""Normalized sparse GCN propagation: ``gcn_propagate`` (docs/design.md §3) and its graph object ``CSRGraph``.

Front-end (validation + dispatch) and backend registrations of the GCN family.

Every fused backend computes, row by row and without atomics,

    out_i = dinv_i · (Σ_{e ∈ row i} w_e · dinv_{col_e} · x_{col_e} + s · dinv_i · x_i)

with s = 1 when self loops are added and dinv = D̃^{-1/2} precomputed once per graph
(all ones when ``normalize=False``). The backward is the same row-parallel kernel run on the
transposed CSR (dX = Âᵀ dY), plus a row-parallel kernel for the edge-value gradient that includes
the dependence of the degrees on the values.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from fact_fast import _extension

from . import _support, reference
from ._backend import register, resolve
from ._validate import INDEX_DTYPES, check_same_device, check_size, check_tensor, is_compiling

OP_PROPAGATE = "gcn_propagate"


def check_csr_value(value: torch.Tensor, col: torch.Tensor) -> None:
    """Edge weights: a float [nnz] tensor beside ``col`` (metadata only, no sync)."""
    check_tensor("value", value, ndim=1)
    check_same_device(col=col, value=value)
    check_size("value", value, 0, col.shape[0], "the number of edges nnz = len(col)")


def check_csr(n: int, rowptr: torch.Tensor, col: torch.Tensor, value: torch.Tensor | None,
              device: torch.device) -> None:
    """Raise unless (rowptr, col, value) is a well-formed CSR graph with n rows and n columns.

    The value checks (rowptr from 0 to nnz and non-decreasing, columns in [0, n)) are reduced on the
    device into one small tensor read back once: one host sync per validation. They are skipped
    while torch.compile traces (they would break the graph).
    """
    check_tensor("rowptr", rowptr, ndim=1, dtypes=INDEX_DTYPES)
    check_tensor("col", col, ndim=1, dtypes=INDEX_DTYPES)
    check_same_device(x=torch.empty(0, device=device), rowptr=rowptr, col=col)
    if rowptr.shape[0] != n + 1:
        raise ValueError(f"rowptr must have n + 1 = {n + 1} entries for x with n = {n} rows, "
                         f"got {rowptr.shape[0]}")
    if value is not None:
        check_csr_value(value, col)
    if is_compiling():
        return
    nnz = col.shape[0]
    first, last, decreasing, out_of_range = torch.stack([
        rowptr[0].long(), rowptr[-1].long(), (rowptr[1:] < rowptr[:-1]).any().long(),
        ((col < 0) | (col >= n)).any().long()]).tolist()
    if first != 0 or last != nnz:
        raise ValueError(f"rowptr must start at 0 and end at nnz = len(col) = {nnz}, "
                         f"got rowptr[0] = {first}, rowptr[-1] = {last}")
    if decreasing:
        raise ValueError("rowptr must be non-decreasing (a malformed CSR row pointer)")
    if out_of_range:
        raise ValueError(f"col has entries outside [0, {n}) (out-of-range column indices)")


def _compute_dtype(x_dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype of the kernels, also the dtype of dinv and of the values they read."""
    return torch.float64 if x_dtype == torch.float64 else torch.float32


def degree_inv_sqrt(rowptr: torch.Tensor, value: torch.Tensor | None, add_self_loops: bool,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """dinv [n] = D̃^{-1/2}, D̃_i = Σ_{e ∈ row i} value_e (+1 with self loops); 0 where D̃_i ≤ 0.

    One deterministic pass: unweighted degrees are differences of rowptr; weighted ones are
    differences of a float64 prefix sum of the values (a scan, no atomics). Not differentiable
    (the fused backward accounts for the degrees' dependence on the values itself).
    """
    if value is None:
        deg = (rowptr[1:] - rowptr[:-1]).to(dtype)
    else:
        csum = torch.zeros(value.shape[0] + 1, dtype=torch.float64, device=value.device)
        torch.cumsum(value.detach().to(torch.float64), 0, out=csum[1:])
        deg = (csum[rowptr[1:].long()] - csum[rowptr[:-1].long()]).to(dtype)
    if add_self_loops:
        deg = deg + 1
    return torch.where(deg > 0, deg.clamp_min(torch.finfo(dtype).tiny).rsqrt(), torch.zeros_like(deg))


def transpose_csr(rowptr: torch.Tensor, col: torch.Tensor, num_nodes: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR of Aᵀ: ``(t_rowptr, t_col, t_perm)`` with edge ``k`` of Aᵀ being edge ``t_perm[k]`` of A.

    A stable sort of the column indices keeps each transposed row in increasing original-row
    order, so the transposed SpMM sums in a fixed order (deterministic). Index dtype as rowptr.
    """
    counts = rowptr[1:] - rowptr[:-1]
    row = torch.repeat_interleave(torch.arange(num_nodes, device=col.device, dtype=col.dtype), counts,
                                  output_size=col.shape[0])
    sorted_col, perm = torch.sort(col, stable=True)
    bounds = torch.arange(num_nodes + 1, device=col.device, dtype=col.dtype)
    t_rowptr = torch.searchsorted(sorted_col, bounds).to(rowptr.dtype)
    return t_rowptr, row[perm], perm.to(rowptr.dtype)


class _Derived:
    """What a graph derives from its index tensors, kept apart from the graph so the raw-tensor
    cache can hold it without keeping the user's tensors alive. ``value_degrees`` says whether
    weighted degrees may be cached here (not when graphs with different weights share it)."""

    def __init__(self, rowptr: torch.Tensor, col: torch.Tensor, value_degrees: bool = True):
        # With mixed index dtypes, an int64 copy of the int32 one; never a reference to an original.
        mixed = rowptr.dtype != col.dtype
        self.rowptr64 = rowptr.long() if mixed and rowptr.dtype != torch.int64 else None
        self.col64 = col.long() if mixed and col.dtype != torch.int64 else None
        self.value_degrees = value_degrees
        self.dinv: dict = {}
        self.transposed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


class CSRGraph:
    """A square CSR graph prepared for :func:`gcn_propagate`: validated once, reused every step.

    Holds ``rowptr`` [n+1], ``col`` [nnz] (one index dtype, int32 or int64), optional ``value``
    [nnz] edge weights, and caches, built on first use and reused:

    * ``dinv(add_self_loops, dtype)`` — D̃^{-1/2} of A (+ I), weighted, duplicates summed. It is
      recomputed automatically when ``value`` is modified in place (an optimizer step on learnable
      edge weights bumps the tensor's version counter). While torch.compile traces, weighted
      degrees are computed inside the compiled graph instead (a version counter cannot be guarded);
    * ``transposed()`` — ``(t_rowptr, t_col, t_perm)``, the CSR of Aᵀ and the map from its edges
      back to the edge ids of A, which the backward (dX = Âᵀ dY, d value) needs.

    Build it with :func:`prepare_graph`. Move it with :meth:`to`.
    """

    def __init__(self, rowptr: torch.Tensor, col: torch.Tensor, value: torch.Tensor | None = None,
                 num_nodes: int | None = None, *, validate: bool = True, _derived: _Derived | None = None):
        check_tensor("rowptr", rowptr, ndim=1, dtypes=INDEX_DTYPES)
        n = rowptr.shape[0] - 1 if num_nodes is None else int(num_nodes)
        if n < 0:
            raise ValueError("rowptr must have at least one entry (n + 1 for n nodes)")
        if validate:
            check_csr(n, rowptr, col, value, rowptr.device)
        self._derived = _Derived(rowptr, col) if _derived is None else _derived
        # one index dtype (the kernels are compiled per index dtype, not per pair)
        self.rowptr = rowptr if self._derived.rowptr64 is None else self._derived.rowptr64
        self.col = col if self._derived.col64 is None else self._derived.col64
        self.value = value
        self.num_nodes = n

    @property
    def device(self) -> torch.device:
        return self.rowptr.device

    @property
    def nnz(self) -> int:
        return self.col.shape[0]

    def dinv(self, add_self_loops: bool = True, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Cached D̃^{-1/2} [n] in ``dtype`` (not differentiable; see :func:`degree_inv_sqrt`)."""
        if self.value is not None and (is_compiling() or not self._derived.value_degrees):
            return degree_inv_sqrt(self.rowptr, self.value, add_self_loops, dtype)
        version = None if self.value is None else self.value._version
        key = (bool(add_self_loops), dtype)
        hit = self._derived.dinv.get(key)
        if hit is None or hit[0] != version:
            hit = (version, degree_inv_sqrt(self.rowptr, self.value, add_self_loops, dtype))
            self._derived.dinv[key] = hit
        return hit[1]

    def transposed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cached ``(t_rowptr, t_col, t_perm)``: Aᵀ in CSR and its edges' ids in A."""
        if self._derived.transposed is None:
            self._derived.transposed = transpose_csr(self.rowptr, self.col, self.num_nodes)
        return self._derived.transposed

    def to(self, device: torch.device | str) -> CSRGraph:
        """A copy on ``device`` (no re-validation; caches are rebuilt there on first use)."""
        value = None if self.value is None else self.value.to(device)
        return CSRGraph(self.rowptr.to(device), self.col.to(device), value, self.num_nodes, validate=False)

    def __repr__(self) -> str:
        return (f"CSRGraph(num_nodes={self.num_nodes}, nnz={self.nnz}, index_dtype={self.col.dtype}, "
                f"weighted={self.value is not None}, device={self.device})")


class _RawGraphCache:
    """The validation and transpose of raw-tensor ``gcn_propagate`` calls, so that a training loop
    passing the same ``rowptr``/``col`` tensors every step validates them (one host sync) and sorts
    the transpose once, as a :class:`CSRGraph` would.

    Keyed by the tensors' identities; an entry holds only weak references to them (it dies with
    either) and their version counters and storage at validation, so an in-place change of rowptr
    or col re-validates. Edge weights are not cached: their degrees are recomputed every call
    (one scan over nnz, no sync), so a raw call always uses the values it is given.
    """

    def __init__(self):
        self._entries: dict[tuple, tuple] = {}
        self.validations = 0  # how many graphs were validated (read by the tests)

    def get(self, n: int, rowptr: torch.Tensor, col: torch.Tensor, value: torch.Tensor | None,
            device: torch.device) -> CSRGraph:
        key = (id(rowptr), id(col), n)
        state = (rowptr._version, col._version, rowptr.data_ptr(), col.data_ptr())
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is rowptr and entry[1]() is col and entry[2] == state:
            if value is not None:
                check_csr_value(value, col)
            return CSRGraph(rowptr, col, value, n, validate=False, _derived=entry[3])
        check_csr(n, rowptr, col, value, device)
        self.validations += 1
        derived = _Derived(rowptr, col, value_degrees=False)
        drop = lambda _ref, key=key: self._entries.pop(key, None)  # noqa: E731
        self._entries[key] = (weakref.ref(rowptr, drop), weakref.ref(col, drop), state, derived)
        return CSRGraph(rowptr, col, value, n, validate=False, _derived=derived)

    def clear(self) -> None:
        self._entries.clear()


_raw_graphs = _RawGraphCache()


def prepare_graph(rowptr: torch.Tensor, col: torch.Tensor, value: torch.Tensor | None = None,
                  num_nodes: int | None = None, add_self_loops: bool = True, normalize: bool = True,
                  dtype: torch.dtype = torch.float32, requires_grad: bool = False) -> CSRGraph:
    """Validate a CSR graph once and precompute what every :func:`gcn_propagate` call reuses.

    Args:
        rowptr: int32/int64 [n + 1] CSR row pointer (n = ``num_nodes``, default len(rowptr) − 1).
        col: int32/int64 [nnz] column indices in [0, n); duplicates add up.
        value: optional float [nnz] edge weights (may be a learnable parameter).
        add_self_loops, normalize: the flags the degrees are precomputed for (others are computed
            on first use); ``dtype``: the features' compute dtype (float64 for float64 features).
        requires_grad: also build the transposed CSR now (it is built on the first backward anyway).
    Returns:
        a :class:`CSRGraph`; pass it as ``gcn_propagate(x, graph)``.
    """
    graph = CSRGraph(rowptr, col, value, num_nodes)
    if normalize:
        graph.dinv(add_self_loops, dtype)
    if requires_grad:
        graph.transposed()
    return graph


def gcn_propagate(x: torch.Tensor, rowptr: torch.Tensor | CSRGraph, col: torch.Tensor | None = None,
                  value: torch.Tensor | None = None, add_self_loops: bool = True, normalize: bool = True, *,
                  backend: str | None = None) -> torch.Tensor:
    """D̃^{-1/2}(A+I)D̃^{-1/2} x with the normalization applied on the fly.

    Args:
        x: [n, f] float16/bfloat16/float32/float64 node features.
        rowptr: int64/int32 [n + 1] CSR row pointer of A (need not be symmetric), or a
            :class:`CSRGraph` from :func:`prepare_graph` (then ``col`` and ``value`` must be None;
            the graph was validated once and its degrees / transpose are cached across calls).
        col: int64/int32 [nnz] column indices; duplicates add up.
        value: optional [nnz] edge weights (gradient flows to it when it requires grad, through
            the degrees too).
        add_self_loops: use A + I (a self loop is added even where A has one).
        normalize: scale by D̃^{-1/2} on both sides, D̃ = weighted row sums; rows of zero degree give 0.
    Returns:
        [n, f] in x.dtype.
    """
    check_tensor("x", x, ndim=2)
    if isinstance(rowptr, CSRGraph):
        if col is not None or value is not None:
            raise ValueError("pass either a CSRGraph or (rowptr, col, value), not both")
        graph = rowptr
        if graph.num_nodes != x.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but the graph has {graph.num_nodes} nodes")
        check_same_device(x=x, graph=graph.rowptr)
    elif col is None:
        raise TypeError("gcn_propagate() needs col (or a CSRGraph in place of rowptr)")
    elif is_compiling():  # no cache while tracing: shapes are checked, degrees computed in the graph
        check_csr(x.shape[0], rowptr, col, value, x.device)
        graph = CSRGraph(rowptr, col, value, x.shape[0], validate=False)
    else:
        graph = _raw_graphs.get(x.shape[0], rowptr, col, value, x.device)
    _, fn = resolve(OP_PROPAGATE, backend, x.device, x, graph.rowptr, graph.col, graph.value,
                    add_self_loops, normalize)
    if fn is reference.gcn_propagate:
        return fn(x, graph.rowptr, graph.col, graph.value, add_self_loops, normalize)
    return fn(x, graph.rowptr, graph.col, graph.value, add_self_loops, normalize, graph=graph)


register(OP_PROPAGATE, "reference")(reference.gcn_propagate)


# --- fused backends: shared autograd over (forward op, value-gradient op) ------------------------

def _make_autograd(spmm: Callable, value_grad: Callable):
    """setup_context and backward for a ``gcn_spmm``-schema op (compiled or Triton)."""

    def setup_context(ctx, inputs, output):
        x, rowptr, col, value, dinv, t_rowptr, t_col, t_perm, add_self_loops, normalize = inputs
        ctx.save_for_backward(x, rowptr, col, value, dinv, t_rowptr, t_col, t_perm)
        ctx.flags = (add_self_loops, normalize)

    def backward(ctx, grad):
        x, rowptr, col, value, dinv, t_rowptr, t_col, t_perm = ctx.saved_tensors
        add_self_loops, normalize = ctx.flags
        need_x, need_value = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        if t_rowptr.shape[0] != x.shape[0] + 1:
            raise RuntimeError("gcn_spmm backward needs the transposed CSR (t_rowptr, t_col, t_perm); "
                               "it was called without one")
        grad = grad.contiguous()
        # dX = Âᵀ dY: the forward kernel on the CSR of Aᵀ, whose edge k carries value[t_perm[k]].
        t_value = None if value is None else value[t_perm]
        empty = t_perm.new_empty(0)
        dx = spmm(grad, t_rowptr, t_col, t_value, dinv, empty, empty, empty, add_self_loops, normalize)
        dvalue = None
        if need_value:
            dvalue = value_grad(grad, x, rowptr, col, value, dinv, dx, add_self_loops, normalize)
        return (dx if need_x else None, None, None, dvalue, None, None, None, None, None, None)

    return setup_context, backward


def _fused_propagate(spmm: Callable) -> Callable:
    """A backend function calling ``spmm`` (a ``gcn_spmm``-schema op) with dinv and the transpose."""

    def run(x, rowptr, col, value, add_self_loops, normalize, graph: CSRGraph | None = None):
        if graph is None:  # called directly, not through gcn_propagate
            graph = CSRGraph(rowptr, col, value, x.shape[0], validate=False)
        compute = _compute_dtype(x.dtype)
        dinv = graph.dinv(add_self_loops, compute) if normalize else torch.ones(
            x.shape[0], dtype=compute, device=x.device)
        if value is not None:
            value = value.to(compute)
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or (value is not None and value.requires_grad))
        if needs_grad:
            t_rowptr, t_col, t_perm = graph.transposed()
        else:
            t_rowptr = t_col = t_perm = graph.rowptr.new_empty(0)
        return spmm(x, graph.rowptr, graph.col, value, dinv, t_rowptr, t_col, t_perm, add_self_loops, normalize)

    return run


def _fake_spmm(x, rowptr, col, value, dinv, t_rowptr, t_col, t_perm, add_self_loops, normalize):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _fake_value_grad(grad, x, rowptr, col, value, dinv, dx, add_self_loops, normalize):
    return dinv.new_empty(col.shape[0])


# --- compiled extension (fact_fast._C): cpu and cuda --------------------------------------------

if _extension.load():
    torch.library.register_fake("fact_fast::gcn_spmm")(_fake_spmm)
    torch.library.register_fake("fact_fast::gcn_spmm_value_grad")(_fake_value_grad)
    _setup, _backward = _make_autograd(torch.ops.fact_fast.gcn_spmm, torch.ops.fact_fast.gcn_spmm_value_grad)
    torch.library.register_autograd("fact_fast::gcn_spmm", _backward, setup_context=_setup)
    _compiled_propagate = _fused_propagate(torch.ops.fact_fast.gcn_spmm)

    for _device in ("cpu", "cuda"):
        register(OP_PROPAGATE, _device,
                 supports=lambda x, *args, _d=_device: _support.compiled(_d, "gcn_spmm", x))(_compiled_propagate)


# --- Triton ----------------------------------------------------------------------------------------

@torch.library.custom_op("fact_fast::gcn_spmm_triton", mutates_args=())
def _gcn_spmm_triton(x: torch.Tensor, rowptr: torch.Tensor, col: torch.Tensor, value: torch.Tensor | None,
                     dinv: torch.Tensor, t_rowptr: torch.Tensor, t_col: torch.Tensor, t_perm: torch.Tensor,
                     add_self_loops: bool, normalize: bool) -> torch.Tensor:
    from fact_fast.kernels import gcn as kernels
    return kernels.spmm(x, rowptr, col, value, dinv, add_self_loops)


@torch.library.custom_op("fact_fast::gcn_spmm_value_grad_triton", mutates_args=())
def _gcn_spmm_value_grad_triton(grad: torch.Tensor, x: torch.Tensor, rowptr: torch.Tensor, col: torch.Tensor,
                                value: torch.Tensor | None, dinv: torch.Tensor, dx: torch.Tensor,
                                add_self_loops: bool, normalize: bool) -> torch.Tensor:
    from fact_fast.kernels import gcn as kernels
    return kernels.value_grad(grad, x, rowptr, col, value, dinv, dx, add_self_loops, normalize)


_gcn_spmm_triton.register_fake(_fake_spmm)
_gcn_spmm_value_grad_triton.register_fake(_fake_value_grad)
_setup_t, _backward_t = _make_autograd(_gcn_spmm_triton, _gcn_spmm_value_grad_triton)
_gcn_spmm_triton.register_autograd(_backward_t, setup_context=_setup_t)

register(OP_PROPAGATE, "triton", supports=lambda x, *args: _support.triton(x))(_fused_propagate(_gcn_spmm_triton))
