"""``supports`` predicates shared by the compiled and Triton backends of every op family.

Each returns None when the backend can run tensors like these, else a short reason.
"""
from __future__ import annotations

import importlib.util
import os

import torch

from fact_fast import _extension

COMPILED_DTYPES = {
    "cpu": (torch.float16, torch.bfloat16, torch.float32, torch.float64),
    "cuda": (torch.float16, torch.bfloat16, torch.float32),
}
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    return _TRITON_INSTALLED


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def compiled(device_type: str, op: str, tensor: torch.Tensor) -> str | None:
    """The compiled extension (backend 'cpu' or 'cuda') can run ``op`` on tensors like ``tensor``."""
    if tensor.device.type != device_type:
        return f"inputs are on {tensor.device.type}, backend needs {device_type} tensors"
    if not _extension.has_kernel(op, device_type):
        return f"fact_fast._C has no {device_type} kernel for {op} (extension missing or built without it)"
    if tensor.dtype not in COMPILED_DTYPES[device_type]:
        return f"dtype {tensor.dtype} is not supported by the {device_type} kernels"
    return None


# The Triton kernels use bf16 and tf32 (3xTF32) tensor-core instructions, which need Ampere (sm_80).
TRITON_MIN_CAPABILITY = (8, 0)


@torch.compiler.assume_constant_result
def cuda_capability(index: int | None) -> tuple[int, int]:
    """Compute capability of CUDA device ``index`` (None: the current one); a constant for torch.compile."""
    return torch.cuda.get_device_capability(index)


def triton(tensor: torch.Tensor) -> str | None:
    """Triton can run on tensors like ``tensor`` (GPU of compute capability >= 8.0, or CPU under
    TRITON_INTERPRET=1)."""
    if not triton_available():
        return "triton is not installed"
    if tensor.device.type == "cpu" and not triton_interpreting():
        return "Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)"
    if tensor.device.type not in ("cpu", "cuda"):
        return f"Triton does not support device {tensor.device.type}"
    if tensor.dtype not in TRITON_DTYPES:
        return f"dtype {tensor.dtype} is not supported by the Triton kernels"
    if tensor.device.type == "cuda":
        index = tensor.device.index
        capability = cuda_capability(index)
        if tuple(capability) < TRITON_MIN_CAPABILITY:
            return (f"the Triton kernels need compute capability >= {TRITON_MIN_CAPABILITY[0]}.{TRITON_MIN_CAPABILITY[1]}"
                    f" (bf16 and tf32 tensor-core instructions); {torch.cuda.get_device_name(index)} is "
                    f"{capability[0]}.{capability[1]}")
    return None
