"""Optional NVTX ranges around model/training stages (``--nvtx``); no-ops unless enabled + CUDA."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["enable_nvtx", "nvtx_enabled", "stage"]

_ENABLED = False


def enable_nvtx(flag: bool = True) -> bool:
    """Turn NVTX ranges on/off; they only become active when CUDA is available. Returns the state."""
    global _ENABLED
    _ENABLED = bool(flag) and torch.cuda.is_available()
    return _ENABLED


def nvtx_enabled() -> bool:
    return _ENABLED


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """``with stage("backbone"): ...`` -- an NVTX range when enabled, nothing otherwise."""
    if not _ENABLED:
        yield
        return
    try:
        import nvtx  # the `nvtx` package, when installed, gives colored ranges

        rng = nvtx.annotate(name)
    except ImportError:
        rng = torch.cuda.nvtx.range(name)
    with rng:
        yield
