"""What the op checks cover. Imports no fact_fast module, so a command line can offer these
choices before it decides whether Triton runs interpreted (see :mod:`fact_fast.testing`)."""
from __future__ import annotations

import torch

__all__ = ["OPS", "FUSED", "DTYPES", "DTYPE_NAME", "CASES", "QUICK_DTYPES", "QUICK_CASES"]

OPS = ("vq_nearest", "vq_quantize", "gcn_propagate", "sigmoid_attention", "sigmoid_interface",
       "fuzzy_membership", "fuzzy_loss")
FUSED = ("cpu", "cuda", "triton")  # every backend but the reference
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}
DTYPE_NAME = {v: k for k, v in DTYPES.items()}
CASES = ("random", "empty", "one_row", "odd", "non_contiguous")
QUICK_DTYPES = ("fp32", "bf16")
QUICK_CASES = ("random", "empty", "non_contiguous")
