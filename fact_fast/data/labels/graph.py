"""The label (comorbidity) graph of a run, built from the TRAIN split's labels.

Labels are float ``[N, C]`` with 1 = positive, 0 = negative and NaN = unknown. Every statistic
here is pairwise-known: a pair of classes (i, j) is counted only on the rows where both labels
are known, so a table where one finding was not assessed for some images (CheXpert's blanks,
uncertain labels under the ``ignore`` policy) neither invents nor hides co-occurrences.

Methods (:data:`GRAPH_METHODS`; an edge i → j means node i aggregates from j):

* ``"threshold"`` — ML-GCN (Chen et al., CVPR 2019) binarised adjacency: an edge i → j when
  P(j | i) ≥ ``threshold``. Binary; the GCN op adds the self loops.
* ``"reweighted"`` — ML-GCN's re-weighted adjacency (their Eq. 8) on top of the binarised one:
  A'_ij = p · A_ij / Σ_{k≠i} A_ik off the diagonal and A'_ii = 1 − p, so a node keeps weight
  1 − p for itself and shares p among its neighbours. The self loops are explicit edges, so the
  op must run with ``add_self_loops=False`` (carried in :attr:`LabelGraph.add_self_loops`).
* ``"topk"`` — each class keeps its ``k`` strongest partners among the classes that were seen
  together with it at least ``min_count`` times and co-occur more than ``min_lift`` times as often
  as chance (lift, below); strength is the lift (``rank_by="lift"``) or ML-GCN's P(j | i)
  (``rank_by="conditional"``, which favours frequent classes); ties go to the lower class index.
  A class with no such partner stays isolated rather than being tied to unrelated classes. Binary.
* ``"topk_reweighted"`` — the ``"topk"`` graph re-weighted as ``"reweighted"`` re-weights ML-GCN's
  binarised one (neighbours share p, the explicit self loop keeps 1 − p): ML-GCN's Eq. 8 on label
  statistics where its threshold t = 0.4 leaves no edge (the NIH-like tables, docs/label_graph.md).
* ``"lift"`` — an edge when lift = P(i, j) / (P(i) P(j)) > ``min_lift`` (equivalently
  PMI = log lift > log ``min_lift``) and the pair was seen together at least ``min_count`` times.
  Lift is symmetric. Binary.

With ``symmetric=True`` (the default of the directed methods) an edge in either direction makes
both, *before* the re-weighting. :func:`graph_report` summarises a graph for the run log and
``config.json``; ``docs/label_graph.md`` compares the methods on real label tables and says why
:data:`DEFAULT_GRAPH` is the default.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["LabelGraph", "CooccurrenceCounts", "GRAPH_METHODS", "DEFAULT_GRAPH", "cooccurrence_counts",
           "cooccurrence_probabilities", "label_graph", "graph_report"]

# method -> its parameters and their defaults (ML-GCN's t = 0.4 and p = 0.2 from the paper)
GRAPH_METHODS: dict[str, dict] = {
    "threshold": {"threshold": 0.4, "symmetric": True},
    "reweighted": {"threshold": 0.4, "p": 0.2, "symmetric": True},
    "topk": {"k": 3, "rank_by": "lift", "min_lift": 1.2, "min_count": 10, "symmetric": True},
    "topk_reweighted": {"k": 3, "rank_by": "lift", "min_lift": 1.2, "min_count": 10, "symmetric": True, "p": 0.2},
    "lift": {"min_lift": 2.0, "min_count": 10},
}

# The default label graph of a run, chosen from the statistics in docs/label_graph.md:
# ``label_graph(train_labels, **DEFAULT_GRAPH)``.
DEFAULT_GRAPH: dict = {"method": "topk", **GRAPH_METHODS["topk"]}


@dataclass(frozen=True)
class LabelGraph:
    """A label graph in CSR, ready for ``fact_fast.ops.gcn_propagate`` / ``nn.LabelGCN``.

    Attributes:
        rowptr: int64 ``[C + 1]`` row pointer; row i lists the classes node i aggregates from.
        col: int64 ``[nnz]`` column indices, sorted within each row.
        value: float32 ``[nnz]`` edge weights, or None for an unweighted (all-ones) graph.
        add_self_loops: the flag to propagate with: True when the op must add I (binary methods),
            False when the self loops are explicit edges (``"reweighted"``, ``"topk_reweighted"``).
        method: the :data:`GRAPH_METHODS` name that built it; ``params``: its parameters.
    """

    rowptr: torch.Tensor
    col: torch.Tensor
    value: torch.Tensor | None
    add_self_loops: bool
    method: str
    params: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.rowptr.shape[0]) - 1

    def to_dense(self) -> np.ndarray:
        """float64 ``[C, C]`` adjacency as stored (1 for unweighted edges; implicit self loops
        are not included: see :attr:`add_self_loops`)."""
        c = self.num_classes
        rows = np.repeat(np.arange(c), np.diff(self.rowptr.numpy()))
        dense = np.zeros((c, c), dtype=np.float64)
        weights = np.ones(len(rows)) if self.value is None else self.value.numpy().astype(np.float64)
        np.add.at(dense, (rows, self.col.numpy()), weights)
        return dense

    def to_dict(self) -> dict:
        """JSON-serialisable form (for checkpoints); :meth:`from_dict` inverts it."""
        return {"rowptr": self.rowptr.tolist(), "col": self.col.tolist(),
                "value": None if self.value is None else self.value.tolist(),
                "add_self_loops": self.add_self_loops, "method": self.method, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelGraph:
        value = d.get("value")
        return cls(torch.tensor(d["rowptr"], dtype=torch.int64), torch.tensor(d["col"], dtype=torch.int64),
                   None if value is None else torch.tensor(value, dtype=torch.float32),
                   bool(d["add_self_loops"]), str(d["method"]), dict(d.get("params") or {}))


@dataclass(frozen=True)
class CooccurrenceCounts:
    """Pairwise-known counts, int64 ``[C, C]`` each (row i, column j).

    ``both[i, j]``: rows with i and j positive (the diagonal: rows with i positive);
    ``positive_known[i, j]``: rows with i positive and j known;
    ``known[i, j]``: rows with i and j known.
    """

    both: np.ndarray
    positive_known: np.ndarray
    known: np.ndarray

    def conditional(self) -> np.ndarray:
        """float64 ``[C, C]`` P(j | i) = both / positive_known (0 where i was never positive
        alongside a known j); diagonal 0."""
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(self.positive_known > 0, self.both / np.maximum(self.positive_known, 1), 0.0)
        np.fill_diagonal(p, 0.0)
        return p

    def lift(self) -> np.ndarray:
        """float64 ``[C, C]`` lift P(i, j) / (P(i) P(j)) on the rows where both are known
        = both · known / (positive_known · positive_knownᵀ); 0 where undefined; diagonal 0."""
        denom = self.positive_known.astype(np.float64) * self.positive_known.T
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(denom > 0, self.both * self.known.astype(np.float64) / np.maximum(denom, 1), 0.0)
        np.fill_diagonal(lift, 0.0)
        return lift


def _as_label_matrix(labels, argname: str = "labels") -> np.ndarray:
    """float64 [N, C] with values 0, 1 or NaN; raises a ValueError naming ``argname`` otherwise."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().double().numpy()
    try:
        arr = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{argname} must be a numeric [N, C] array") from None
    if arr.ndim != 2:
        raise ValueError(f"{argname} must be a 2-D [N, C] array, got shape {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{argname} has no rows: the label graph needs the labels of a non-empty "
                         "training split")
    bad = ~(np.isnan(arr) | (arr == 0) | (arr == 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{argname} must contain only 0, 1 or NaN (unknown); found {float(arr[r, c])!r} "
                         f"at row {r}, column {c}")
    return arr


def cooccurrence_counts(labels) -> CooccurrenceCounts:
    """Pairwise-known co-occurrence counts of ``labels`` float [N, C] (1 / 0 / NaN)."""
    y = _as_label_matrix(labels)
    known = (~np.isnan(y)).astype(np.float64)
    pos = np.nan_to_num(y, nan=0.0)
    # float64 matmuls count exactly up to 2^53 rows
    as_int = lambda m: np.rint(m).astype(np.int64)  # noqa: E731
    return CooccurrenceCounts(both=as_int(pos.T @ pos), positive_known=as_int(pos.T @ known),
                              known=as_int(known.T @ known))


def cooccurrence_probabilities(labels) -> np.ndarray:
    """ML-GCN's conditional co-occurrence P(j | i), float64 ``[C, C]``, pairwise-known (see
    :meth:`CooccurrenceCounts.conditional`)."""
    return cooccurrence_counts(labels).conditional()


def _csr(adj: np.ndarray, weights: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Boolean [C, C] adjacency (+ optional float weights) -> CSR, columns sorted within rows."""
    rows, cols = np.nonzero(adj)  # row-major: sorted by row, then column
    rowptr = np.zeros(adj.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=adj.shape[0]), out=rowptr[1:])
    value = None if weights is None else torch.from_numpy(weights[rows, cols].astype(np.float32))
    return torch.from_numpy(rowptr), torch.from_numpy(cols.astype(np.int64)), value


def _check_params(method: str, params: dict) -> dict:
    if method not in GRAPH_METHODS:
        raise ValueError(f"label graph method must be one of {sorted(GRAPH_METHODS)}, got {method!r}")
    unknown = sorted(set(params) - set(GRAPH_METHODS[method]))
    if unknown:
        raise TypeError(f"label graph method {method!r} takes {sorted(GRAPH_METHODS[method])}; "
                        f"unexpected {unknown}")
    p = {**GRAPH_METHODS[method], **params}
    if "threshold" in p and not 0.0 <= float(p["threshold"]) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {p['threshold']}")
    if "p" in p and not 0.0 < float(p["p"]) < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p['p']}")
    for name, least in (("k", 1), ("min_count", 0)):
        if name in p and not (isinstance(p[name], (int, np.integer)) and not isinstance(p[name], bool)
                              and p[name] >= least):
            raise ValueError(f"{name} must be an integer >= {least}, got {p[name]!r}")
    if "rank_by" in p and p["rank_by"] not in ("conditional", "lift"):
        raise ValueError(f"rank_by must be 'conditional' or 'lift', got {p['rank_by']!r}")
    if "min_lift" in p and not float(p["min_lift"]) >= 0.0:
        raise ValueError(f"min_lift must be >= 0, got {p['min_lift']}")
    return p


def label_graph(labels, method: str = DEFAULT_GRAPH["method"], **params) -> LabelGraph:
    """Build the label graph of ``labels`` float ``[N, C]`` (1 / 0 / NaN; the TRAIN split).

    ``method`` and ``params`` as in :data:`GRAPH_METHODS` (unspecified parameters take the
    defaults listed there). Classes never positive have no out edges of their own (they may
    still gain edges through ``symmetric``). Call with ``**DEFAULT_GRAPH`` for the default.

    Raises ``ValueError`` for labels other than 0/1/NaN, an empty label matrix or a parameter
    out of range, ``TypeError`` for a parameter the method does not take.
    """
    p = _check_params(method, params)
    counts = cooccurrence_counts(labels)
    num_classes = counts.both.shape[0]
    if method in ("threshold", "reweighted"):
        # a pair never known together (or i never positive) is no evidence, even at threshold 0
        adj = (counts.conditional() >= float(p["threshold"])) & (counts.positive_known > 0)
    elif method in ("topk", "topk_reweighted"):
        lift = counts.lift()
        strength = counts.conditional() if p["rank_by"] == "conditional" else lift
        # never a pair that was not seen together
        eligible = (counts.both >= max(int(p["min_count"]), 1)) & (lift > float(p["min_lift"]))
        np.fill_diagonal(eligible, False)
        # stable sort of -strength: ties go to the lower class index; ineligible pairs sort last
        order = np.argsort(-np.where(eligible, strength, -1.0), axis=1, kind="stable")[:, :int(p["k"])]
        adj = np.zeros((num_classes, num_classes), dtype=bool)
        np.put_along_axis(adj, order, True, axis=1)
        adj &= eligible
    else:  # lift
        adj = (counts.lift() > float(p["min_lift"])) & (counts.both >= int(p["min_count"]))
    np.fill_diagonal(adj, False)
    if p.get("symmetric", False):
        adj = adj | adj.T
    if method not in ("reweighted", "topk_reweighted"):
        rowptr, col, value = _csr(adj, None)
        return LabelGraph(rowptr, col, value, add_self_loops=True, method=method, params=p)
    # ML-GCN Eq. 8: spread p over the neighbours, keep 1 - p on the (now explicit) self loop
    neighbours = adj.sum(axis=1, keepdims=True)
    weights = np.where(adj, float(p["p"]) / np.maximum(neighbours, 1), 0.0)
    np.fill_diagonal(weights, 1.0 - float(p["p"]))
    rowptr, col, value = _csr(adj | np.eye(num_classes, dtype=bool), weights)
    return LabelGraph(rowptr, col, value, add_self_loops=False, method=method, params=p)


def graph_report(graph: LabelGraph, class_names=None) -> dict:
    """A JSON-serialisable summary of ``graph`` for the run log and ``config.json``.

    Keys: ``method``, ``params``, ``num_classes``, ``edges`` (directed edges between distinct
    classes), ``possible_edges`` = C (C − 1), ``density`` = edges / possible_edges (None when
    C < 2), ``symmetric``, ``weighted``, ``self_loops`` (``"added by the op"`` or ``"explicit"``),
    ``degree`` (class -> number of other classes it aggregates from), ``degree_min`` /
    ``degree_median`` / ``degree_max``, ``isolated`` (classes with no edge to or from another
    class) and ``edge_list`` ([source, target, weight] with weight None when unweighted).
    """
    c = graph.num_classes
    names = [str(i) for i in range(c)] if class_names is None else [str(n) for n in class_names]
    if len(names) != c:
        raise ValueError(f"class_names has {len(names)} names for a graph of {c} classes")
    dense = graph.to_dense()
    off = dense.copy()
    np.fill_diagonal(off, 0.0)
    adj = off != 0
    degree = adj.sum(axis=1)
    isolated = [names[i] for i in range(c) if not adj[i].any() and not adj[:, i].any()]
    rows, cols = np.nonzero(adj)
    possible = c * (c - 1)
    return {
        "method": graph.method,
        "params": dict(graph.params),
        "num_classes": c,
        "edges": int(adj.sum()),
        "possible_edges": possible,
        "density": float(adj.sum() / possible) if possible else None,
        "symmetric": bool(np.array_equal(adj, adj.T)),
        "weighted": graph.value is not None,
        "self_loops": "added by the op" if graph.add_self_loops else "explicit",
        "degree": {names[i]: int(degree[i]) for i in range(c)},
        "degree_min": int(degree.min()) if c else None,
        "degree_median": float(np.median(degree)) if c else None,
        "degree_max": int(degree.max()) if c else None,
        "isolated": isolated,
        "edge_list": [[names[i], names[j], None if graph.value is None else float(off[i, j])]
                      for i, j in zip(rows, cols)],
    }
