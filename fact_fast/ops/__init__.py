"""fact_fast.ops — FACT's four kernel families as drop-in ops (docs/design.md §3).

Every op validates its inputs, then dispatches to a backend: ``reference`` (plain PyTorch),
``cpu`` / ``cuda`` (the compiled extension) or ``triton``. See :mod:`fact_fast.ops._backend`
for how the backend is chosen.
"""
from fact_fast import _extension

_extension.load()  # registers the compiled ops (or warns once) before the families register theirs

from ._backend import (BACKENDS, BackendUnavailableError, available_backends, register, registered_ops,
                       requested_backend, set_auto_order, use_backend)
from .attention import sigmoid_attention, sigmoid_interface
from .fuzzy import fuzzy_loss, fuzzy_membership
from .gcn import CSRGraph, gcn_propagate, prepare_graph
from .vq import vq_nearest, vq_quantize

__all__ = [
    "vq_nearest", "vq_quantize", "gcn_propagate", "sigmoid_attention", "sigmoid_interface",
    "fuzzy_membership", "fuzzy_loss", "CSRGraph", "prepare_graph", "use_backend", "available_backends", "requested_backend",
    "BACKENDS", "BackendUnavailableError", "register", "registered_ops", "set_auto_order",
]
