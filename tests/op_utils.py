"""Helpers for comparing fused backends with the reference."""
from __future__ import annotations

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
