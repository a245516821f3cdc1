"""Label co-occurrence graph (ML-GCN) and label-frequency groups."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["cooccurrence_probabilities", "label_graph", "frequency_groups",
           "CXR_LT_HEAD", "CXR_LT_TAIL"]

# CXR-LT / FACT paper (Tab. 14) grouping by training prevalence:
# head > 10 %, tail < 1 %, medium in between.
CXR_LT_HEAD = 0.10
CXR_LT_TAIL = 0.01


def _as_binary_matrix(labels, argname: str = "labels") -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"{argname} must be a 2-D [N, C] array, got shape {list(arr.shape)}")
    if arr.size and not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{argname} must contain only 0/1 values")
    return arr.astype(np.float64)


def cooccurrence_probabilities(labels) -> np.ndarray:
    """Conditional co-occurrence A_ij = N_ij / N_i = P(label j | label i), float64 [C, C].

    N_i is the number of samples with label i, N_ij the number with both i and j. The
    diagonal is 0; rows of classes with N_i = 0 are 0.
    """
    y = _as_binary_matrix(labels)
    counts = y.T @ y                       # N_ij, diagonal N_i
    n = np.diag(counts).copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(n[:, None] > 0, counts / np.maximum(n[:, None], 1.0), 0.0)
    np.fill_diagonal(a, 0.0)
    return a


@dataclass
class LabelGraph:
    """A label graph in CSR: ``rowptr`` int64 [C+1], ``col`` int64 [nnz], ``value`` float32 [nnz]
    or None (unweighted); ``add_self_loops`` says whether the GCN must add I (False when the
    graph carries its own self loops)."""

    rowptr: torch.Tensor
    col: torch.Tensor
    value: torch.Tensor | None = None
    add_self_loops: bool = True
    method: str = "threshold"
    params: dict | None = None


def build_label_graph(labels, method: str = "threshold", threshold: float = 0.4, **params) -> LabelGraph:
    """The run's label graph from the training labels (only ``"threshold"`` for now)."""
    if method != "threshold":
        raise ValueError(f"graph method must be 'threshold', got {method!r}")
    rowptr, col = label_graph(labels, threshold=threshold)
    return LabelGraph(rowptr, col, None, True, method, {"threshold": threshold})


def graph_report(graph: LabelGraph, class_names) -> dict:
    """Edges, density and per-node degree of ``graph`` (for the run log and config.json)."""
    C = len(class_names)
    deg = np.diff(np.asarray(graph.rowptr)).tolist()
    nnz = int(graph.col.numel())
    return {"method": graph.method, "params": graph.params, "edges": nnz,
            "density": nnz / max(C * (C - 1), 1), "degree": dict(zip(class_names, deg)),
            "isolated": [n for n, d in zip(class_names, deg) if d == 0]}


def label_graph(labels, threshold: float = 0.4, symmetric: bool = True):
    """ML-GCN label graph from training labels, as CSR.

    A_ij = 1 when P(j | i) = N_ij / N_i >= ``threshold`` (i != j); with ``symmetric`` the
    result is A OR A^T. No self loops (the GCN op adds them); classes that never occur have no
    out edges (they may still receive edges through the symmetrization).

    Returns ``(rowptr, col)``: int64 tensors [C + 1] and [nnz], columns sorted within rows.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    y = _as_binary_matrix(labels)
    adj = cooccurrence_probabilities(y) >= float(threshold)
    # classes with no occurrences have no out edges (matters for threshold 0)
    counts = y.sum(axis=0)
    adj[counts == 0, :] = False
    np.fill_diagonal(adj, False)
    if symmetric:
        adj = adj | adj.T
    return dense_to_csr(adj)


def dense_to_csr(adj):
    """Boolean [C, C] adjacency -> (rowptr int64 [C+1], col int64 [nnz]), columns sorted."""
    adj = np.asarray(adj, dtype=bool)
    rows, cols = np.nonzero(adj)  # row-major order: sorted by row, then column
    rowptr = np.zeros(adj.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=adj.shape[0]), out=rowptr[1:])
    return torch.from_numpy(rowptr), torch.from_numpy(cols.astype(np.int64))


def csr_to_dense(rowptr, col, num_nodes: int | None = None) -> np.ndarray:
    """(rowptr, col) -> boolean dense adjacency [C, C] (for inspection and tests)."""
    rowptr = np.asarray(rowptr, dtype=np.int64)
    col = np.asarray(col, dtype=np.int64)
    c = len(rowptr) - 1 if num_nodes is None else num_nodes
    out = np.zeros((c, c), dtype=bool)
    rows = np.repeat(np.arange(len(rowptr) - 1), np.diff(rowptr))
    out[rows, col] = True
    return out


def frequency_groups(labels, head: float = CXR_LT_HEAD, tail: float = CXR_LT_TAIL, *,
                     method: str = "auto") -> list:
    """Assign each class to "head", "medium" or "tail" from its training prevalence.

    ``labels`` is the [N, C] 0/1 training label matrix (or a [C] vector of prevalences).

    Rules:
      * ``"threshold"``: CXR-LT style, as in the FACT paper: prevalence > ``head`` -> head,
        prevalence < ``tail`` -> tail, otherwise medium (defaults 10 % and 1 %).
      * ``"tercile"``: sort classes by prevalence (ties by class index) and split them into
        three groups of (near-)equal size: most frequent third head, least frequent third tail.
      * ``"auto"`` (default): ``"threshold"``, unless that leaves a group empty while C >= 3;
        then ``"tercile"`` (so small label sets such as the synthetic one get all three groups).
    """
    if method not in ("auto", "threshold", "tercile"):
        raise ValueError(f"method must be one of ['auto', 'threshold', 'tercile'], got {method!r}")
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels, dtype=np.float64)
    if arr.ndim == 2:
        if arr.shape[0] == 0:
            raise ValueError("labels must have at least one row")
        prev = arr.mean(axis=0)
    elif arr.ndim == 1:
        prev = arr
    else:
        raise ValueError(f"labels must be [N, C] labels or [C] prevalences, got shape {list(arr.shape)}")
    if not tail <= head:
        raise ValueError(f"need tail <= head, got head={head}, tail={tail}")
    C = prev.shape[0]

    def by_threshold():
        return ["head" if p > head else ("tail" if p < tail else "medium") for p in prev]

    def by_tercile():
        order = np.argsort(-prev, kind="stable")
        out = [""] * C
        for rank, c in enumerate(order):
            # rank in [0, C): first ceil(C/3) head, last floor(C/3) tail
            k = (rank * 3) // C if C else 0
            out[c] = ("head", "medium", "tail")[k]
        return out

    if method == "threshold":
        return by_threshold()
    if method == "tercile":
        return by_tercile()
    g = by_threshold()
    if C >= 3 and not {"head", "medium", "tail"} <= set(g):
        return by_tercile()
    return g
