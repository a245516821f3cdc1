// Opt-in switches for kernels that are compiled but not yet the default (not measured on a GPU).
#pragma once
#include <cstdlib>
#include <cstring>

namespace fact_fast {

// The value of environment variable `name`: "1" = use the kernel where it can run the inputs (else
// the default kernels), "require" = the same but "cannot" is an error (tests use it to know which
// kernel ran), anything else = off.
enum class OptIn { kOff, kPrefer, kRequire };

inline OptIn opt_in(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return OptIn::kOff;
  if (std::strcmp(value, "require") == 0) return OptIn::kRequire;
  return std::strcmp(value, "1") == 0 ? OptIn::kPrefer : OptIn::kOff;
}

}  // namespace fact_fast
