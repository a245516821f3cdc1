"""``--nvtx`` profiling: NVTX ranges around backbone/projection/vq/gcn/interface/membership (in the
model) and loss/backward/optimizer (in the training loop). No-ops without CUDA."""
from fact_fast.nn.profiling import enable_nvtx, nvtx_enabled, stage

__all__ = ["enable_nvtx", "nvtx_enabled", "stage"]
