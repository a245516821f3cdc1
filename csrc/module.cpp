// The Python module fact_fast._C. Importing it runs the static registrations of every op family
// (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL in csrc/<family>/); the module itself only says
// whether CUDA kernels (WITH_CUDA) and the CuTe kernels that need the CUTLASS headers (WITH_CUTLASS)
// were compiled in, and for which architectures (CUDA_ARCH_LIST, TORCH_CUDA_ARCH_LIST's entries
// joined by "/", e.g. "8.0/9.0+PTX"; "" without CUDA).
#include <Python.h>
#include <torch/library.h>

// Owns the namespace; each op family adds its schemas with TORCH_LIBRARY_FRAGMENT.
TORCH_LIBRARY(fact_fast, m) {}

#define FF_STRINGIZE(...) #__VA_ARGS__
#define FF_STRING(...) FF_STRINGIZE(__VA_ARGS__)
#ifdef FACT_FAST_CUDA_ARCH_LIST
#define FF_CUDA_ARCH_LIST FF_STRING(FACT_FAST_CUDA_ARCH_LIST)
#else
#define FF_CUDA_ARCH_LIST ""
#endif

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "fact_fast compiled kernels", -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
#ifdef FACT_FAST_WITH_CUDA
  PyModule_AddIntConstant(module, "WITH_CUDA", 1);
#else
  PyModule_AddIntConstant(module, "WITH_CUDA", 0);
#endif
  PyModule_AddStringConstant(module, "CUDA_ARCH_LIST", FF_CUDA_ARCH_LIST);
#ifdef FACT_FAST_WITH_CUTLASS
  PyModule_AddIntConstant(module, "WITH_CUTLASS", 1);
#else
  PyModule_AddIntConstant(module, "WITH_CUTLASS", 0);
#endif
  return module;
}
