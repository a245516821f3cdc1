"""Helpers for comparing fused backends with the reference."""
from __future__ import annotations

import contextlib

import torch

from fact_fast import ops

FUSED_BACKENDS = ("cpu", "cuda", "triton")


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def fused_backends(op: str, *example_args) -> list[str]:
    """Fused backends of ``op`` that can run these example arguments on this machine."""
    return [b for b in ops.available_backends(op, *example_args) if b in FUSED_BACKENDS]


def non_contiguous(t: torch.Tensor) -> torch.Tensor:
    """Same values as ``t`` but laid out with a stride of 2 along the last dimension."""
    wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    out = wide[..., ::2]
    assert not out.is_contiguous() or t.shape[-1] <= 1
    return out.requires_grad_(t.requires_grad)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, what: str = "") -> None:
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol,
                               msg=lambda m: f"{what}: {m}" if what else m)



@contextlib.contextmanager
def fresh_inductor():
    """Inside, Inductor compiles from scratch: its on-disk graph caches are keyed on the traced
    graph, not on the fake kernels, so a cached artifact could hide a change of a fake kernel."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    with inductor_config.patch(fx_graph_cache=False), functorch_config.patch(enable_autograd_cache=False):
        yield
