"""Fixed sine–cosine position encodings of a feature map's positions."""
from __future__ import annotations

import torch

__all__ = ["sinusoidal_position_2d"]


def sinusoidal_position_2d(height: int, width: int, dim: int, *, device=None, dtype=torch.float32,
                           temperature: float = 10000.0) -> torch.Tensor:
    """The 2-D sine–cosine encoding of an ``height × width`` grid: ``[height·width, dim]``, rows
    in the order of ``x.flatten(2)`` on a ``[B, D, height, width]`` map (row-major).

    The first ``dim/2`` channels encode the row, the last ``dim/2`` the column (Vaswani et al.'s
    1-D encoding per axis): for axis position ``t`` and ``i < dim/4``, channel ``2i`` is
    ``sin(t / T^(4i/dim))`` and ``2i + 1`` is ``cos(t / T^(4i/dim))``, ``T = temperature``.
    Every position gets a distinct code; values are in [−1, 1]. ``dim`` must be a multiple of 4.
    """
    height, width, dim = int(height), int(width), int(dim)
    if height < 1 or width < 1:
        raise ValueError(f"sinusoidal_position_2d: height and width must be >= 1, got {height} x {width}")
    if dim <= 0 or dim % 4:
        raise ValueError(f"sinusoidal_position_2d: dim must be a positive multiple of 4, got {dim}")
    quarter = dim // 4
    inv_freq = temperature ** (-torch.arange(quarter, dtype=torch.float64) / quarter)  # T^(-4i/dim)

    def axis(n: int) -> torch.Tensor:
        angle = torch.arange(n, dtype=torch.float64)[:, None] * inv_freq[None, :]      # [n, dim/4]
        return torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(1)               # [n, dim/2] sin, cos, ...

    rows = axis(height)[:, None, :].expand(height, width, dim // 2)
    cols = axis(width)[None, :, :].expand(height, width, dim // 2)
    return torch.cat((rows, cols), dim=-1).reshape(height * width, dim).to(device=device, dtype=dtype)
