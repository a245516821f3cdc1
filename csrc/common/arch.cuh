// Which code the CUDA runtime loaded for a kernel, shared by the .cu files that hold an sm_80+ body.
#pragma once
#include <cuda_runtime_api.h>

namespace fact_fast {

// `ok` = the code loaded for `kernel` on the current device was compiled for compute_<min_ptx> or
// newer. Tensor-core bodies guarded by `__CUDA_ARCH__ >= 800` are empty in code compiled for older
// targets, and such code still runs on a new GPU when it is JIT-compiled from older PTX (e.g. an
// arch list "7.5+PTX" on an sm_90 device), so the device's capability does not tell whether the
// body exists; the PTX version the runtime picked does.
template <typename Kernel>
cudaError_t loaded_ptx_at_least(Kernel kernel, int min_ptx, bool& ok) {
  cudaFuncAttributes attr{};
  const cudaError_t err = cudaFuncGetAttributes(&attr, kernel);
  ok = err == cudaSuccess && attr.ptxVersion >= min_ptx;
  return err;
}

}  // namespace fact_fast
