"""gcn_propagate cases (docs/design.md §4): FACT size C=40 labels; large n=1M nodes, nnz=10M, f=128.

Baselines besides every fused backend (timed by the harness through the raw-tensor call, which
also computes the degrees each call):
* ``torch.compile(reference)``;
* ``torch.sparse.mm(pre-normalized CSR)``: Â built once (self loops, normalization, duplicates
  summed) as a ``torch.sparse_csr_tensor``, then ``Â @ x`` — the normalization is not timed;
* ``<backend>+CSRGraph``: the fused op called with a prepared :class:`~fact_fast.ops.gcn.CSRGraph`
  (degrees cached), as a training loop would;
* ``PyG GCNConv propagate``: torch_geometric's GCNConv with an identity weight (normalization
  included), only when torch_geometric is importable (otherwise it is left out).
"""
import importlib.util

import torch

from benchmarks.harness import Case
from fact_fast import ops
from fact_fast.ops import reference
from fact_fast.ops.gcn import prepare_graph

SIZES = {"fact": (40, 400, 1024), "large": (1_000_000, 10_000_000, 128)}


def random_csr(n: int, nnz: int, device, generator) -> tuple[torch.Tensor, torch.Tensor]:
    row = torch.randint(0, n, (nnz,), generator=generator).sort().values
    col = torch.randint(0, n, (nnz,), generator=generator)
    rowptr = torch.zeros(n + 1, dtype=torch.int64)
    rowptr[1:] = torch.bincount(row, minlength=n).cumsum(0)
    return rowptr.to(device), col.to(device)


def _make(size):
    def make(device, dtype, scale):
        n, nnz, f = SIZES[size]
        n, nnz = max(1, int(n * scale)), max(1, int(nnz * scale))
        g = torch.Generator().manual_seed(0)
        rowptr, col = random_csr(n, nnz, device, g)
        return {"x": torch.randn(n, f, generator=g).to(device, dtype), "rowptr": rowptr, "col": col}
    return make


def _compiled_reference(x, rowptr, col):
    fn = torch.compile(reference.gcn_propagate)
    return lambda: fn(x, rowptr, col)


def _sparse_csr(x, rowptr, col):
    n = x.shape[0]
    row, c, w = reference.gcn_norm_coo(n, rowptr, col, None, True, True, torch.float32)
    a_hat = torch.sparse_coo_tensor(torch.stack([row, c]), w.to(x.dtype), (n, n)).coalesce().to_sparse_csr()
    return lambda: a_hat @ x


def _with_graph(x, rowptr, col):
    graph = prepare_graph(rowptr, col)
    return lambda: ops.gcn_propagate(x, graph)


def _pyg(x, rowptr, col):
    from torch_geometric.nn import GCNConv

    conv = GCNConv(x.shape[1], x.shape[1], bias=False).to(x.device)
    conv.lin = torch.nn.Identity()  # propagation only: normalization, self loops and scatter
    row = torch.repeat_interleave(torch.arange(x.shape[0], device=x.device), rowptr[1:] - rowptr[:-1])
    edge_index = torch.stack([col, row])  # PyG sends messages from edge_index[0] to edge_index[1]
    return lambda: conv(x, edge_index)


def _bytes(inputs):
    x, col = inputs["x"], inputs["col"]
    # features read once per edge plus the output written once: the SpMM's unavoidable traffic
    return (col.numel() * x.shape[1] + 2 * x.numel()) * x.element_size() + col.numel() * col.element_size()


BASELINES = {"torch.compile(reference)": _compiled_reference, "torch.sparse.mm(pre-normalized CSR)": _sparse_csr,
             "auto+CSRGraph": _with_graph}
if importlib.util.find_spec("torch_geometric") is not None:  # optional outside anchor
    BASELINES["PyG GCNConv propagate"] = _pyg

CASES = [Case(op="gcn_propagate", size=s, make=_make(s),
              run=lambda backend, x, rowptr, col: ops.gcn_propagate(x, rowptr, col, backend=backend),
              baselines=dict(BASELINES), grad_inputs=("x",),
              cpu_scale=1.0 if s == "fact" else 1 / 20, bytes_moved=_bytes)
         for s in SIZES]
