"""Graph convolution over the label (comorbidity) graph (docs/design.md §2.4)."""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from fact_fast import ops
from fact_fast.ops import CSRGraph

__all__ = ["GraphConv", "LabelGCN"]


class GraphConv(nn.Module):
    """``Y = Â X W`` with ``Â = D̃^{-1/2}(A + I)D̃^{-1/2}`` computed on the fly by ``ops.gcn_propagate``.

    The graph is CSR (int64 ``rowptr [n+1]``, ``col [nnz]``, optional edge weights ``value``).
    Pass it at construction (kept as registered buffers, so it follows ``.to(device)`` and is
    saved in the state dict) or per call to :meth:`forward` (how :class:`LabelGCN` shares one
    graph between layers). ``Â`` is applied to whichever side of ``W`` is narrower.
    """

    def __init__(self, in_features: int, out_features: int, rowptr: torch.Tensor | None = None,
                 col: torch.Tensor | None = None, value: torch.Tensor | None = None, bias: bool = False,
                 normalize: bool = True, add_self_loops: bool = True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.normalize, self.add_self_loops = bool(normalize), bool(add_self_loops)
        self.weight = nn.Parameter(torch.empty(self.in_features, self.out_features))
        self.bias = nn.Parameter(torch.zeros(self.out_features)) if bias else None
        if rowptr is not None or col is not None:
            CSRGraph(rowptr, col, value)  # validates the CSR (raises ValueError/TypeError naming the argument)
            self.register_buffer("rowptr", rowptr.to(torch.int64).clone())
            self.register_buffer("col", col.to(torch.int64).clone())
            self.register_buffer("value", None if value is None else value.clone())
        else:
            self.rowptr = self.col = self.value = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Glorot uniform, as in Kipf & Welling / ML-GCN.
        bound = math.sqrt(6.0 / (self.in_features + self.out_features))
        nn.init.uniform_(self.weight, -bound, bound)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, normalize={self.normalize}, add_self_loops={self.add_self_loops}")

    def forward(self, x: torch.Tensor, rowptr: torch.Tensor | CSRGraph | None = None,
                col: torch.Tensor | None = None, value: torch.Tensor | None = None) -> torch.Tensor:
        """``x [n, in_features]`` -> ``[n, out_features]``; the graph is ``rowptr``/``col``/``value``
        or a prepared :class:`~fact_fast.ops.CSRGraph` passed as ``rowptr``."""
        if rowptr is None:
            rowptr, col, value = self.rowptr, self.col, self.value
        if rowptr is None or (col is None and not isinstance(rowptr, CSRGraph)):
            raise ValueError("GraphConv needs a graph: pass rowptr/col at construction or to forward()")
        prop = lambda t: ops.gcn_propagate(t, rowptr, col, value, add_self_loops=self.add_self_loops,  # noqa: E731
                                           normalize=self.normalize)
        if self.in_features <= self.out_features:
            out = prop(x) @ self.weight
        else:
            out = prop(x @ self.weight)
        if self.bias is not None:
            out = out + self.bias
        return out


class LabelGCN(nn.Module):
    """Two-layer GCN giving the semantic anchors: ``S¹ = LeakyReLU(Â S⁰ W⁰)``, ``S = Â S¹ W¹``.

    ``S⁰ [C, in_dim]`` (label text embeddings) and the CSR graph are registered buffers; weights
    have no bias (this matches the paper's parameter budget). ``forward()`` returns ``S [C, out_dim]``.
    ``Â = D̃^{-1/2}(A + I)D̃^{-1/2}``; a graph whose self loops are already explicit, weighted edges
    (ML-GCN's re-weighted adjacency) is passed with ``add_self_loops=False``, giving
    ``Â = D^{-1/2} A D^{-1/2}``.

    The graph is validated once here and propagated through a cached
    :class:`~fact_fast.ops.CSRGraph` (its D̃^{-1/2} and transposed CSR are built once, not every
    step); the cache is dropped whenever the module moves (``.to``/``.cuda``) and rebuilt lazily.
    """

    def __init__(self, label_embeddings: torch.Tensor, rowptr: torch.Tensor, col: torch.Tensor,
                 hidden_dim: int = 1024, out_dim: int = 512, value: torch.Tensor | None = None,
                 negative_slope: float = 0.2, add_self_loops: bool = True):
        super().__init__()
        if label_embeddings.dim() != 2:
            raise ValueError(f"label_embeddings must be [C, D], got {tuple(label_embeddings.shape)}")
        num_classes, in_dim = label_embeddings.shape
        self.negative_slope = float(negative_slope)
        self.register_buffer("label_embeddings", label_embeddings.detach().float().clone())
        self.register_buffer("rowptr", rowptr.to(torch.int64).clone())
        self.register_buffer("col", col.to(torch.int64).clone())
        self.register_buffer("value", None if value is None else value.detach().float().clone())
        # validated once here (raises on a malformed graph); rebuilt unvalidated after a move
        self._graph: CSRGraph | None = CSRGraph(self.rowptr, self.col, self.value, num_classes)
        self.layer1 = GraphConv(in_dim, hidden_dim, add_self_loops=add_self_loops)
        self.layer2 = GraphConv(hidden_dim, out_dim, add_self_loops=add_self_loops)

    @property
    def num_classes(self) -> int:
        return self.label_embeddings.shape[0]

    def _apply(self, fn, *args, **kwargs):
        self._graph = None  # buffers are replaced by .to()/.cuda(): rebuild the cache from them
        return super()._apply(fn, *args, **kwargs)

    def graph(self) -> CSRGraph:
        if self._graph is None:
            self._graph = CSRGraph(self.rowptr, self.col, self.value, self.num_classes, validate=False)
        return self._graph

    def forward(self, s0: torch.Tensor | None = None) -> torch.Tensor:
        s = self.label_embeddings if s0 is None else s0
        graph = self.graph()
        s = F.leaky_relu(self.layer1(s, graph), self.negative_slope)
        return self.layer2(s, graph)
