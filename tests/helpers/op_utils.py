"""The test suite's side of the op-checking harness (:mod:`fact_fast.testing`)."""
from __future__ import annotations

import contextlib

import torch

from fact_fast.testing.cases import strided
from fact_fast.testing.compare import assert_close
from fact_fast.testing.matrix import FUSED as FUSED_BACKENDS
from fact_fast.testing.run import fused_backends

__all__ = ["FUSED_BACKENDS", "fused_backends", "non_contiguous", "assert_close", "fresh_inductor"]


def non_contiguous(t: torch.Tensor) -> torch.Tensor:
    """Same values as ``t`` but laid out with a stride of 2 along the last dimension."""
    out = strided(t)
    assert not out.is_contiguous() or t.shape[-1] <= 1
    return out.requires_grad_(t.requires_grad)


@contextlib.contextmanager
def fresh_inductor():
    """Inside, Inductor compiles from scratch: its on-disk graph caches are keyed on the traced
    graph, not on the fake kernels, so a cached artifact could hide a change of a fake kernel."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    with inductor_config.patch(fx_graph_cache=False), functorch_config.patch(enable_autograd_cache=False):
        yield
