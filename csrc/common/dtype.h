// Torch-free dtype tags shared by the C++ glue and the .cu kernels, so the .cu files need no
// torch headers (they compile in seconds instead of minutes).
#pragma once

namespace fact_fast {
enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3 };
}  // namespace fact_fast
