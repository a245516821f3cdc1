// The Python module fact_fast._C. Importing it runs the static registrations of every op family
// (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL in csrc/<family>/); the module itself only says
// whether CUDA kernels were compiled in.
#include <Python.h>
#include <torch/library.h>

// Owns the namespace; each op family adds its schemas with TORCH_LIBRARY_FRAGMENT.
TORCH_LIBRARY(fact_fast, m) {}

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "fact_fast compiled kernels", -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
#ifdef FACT_FAST_WITH_CUDA
  PyModule_AddIntConstant(module, "WITH_CUDA", 1);
#else
  PyModule_AddIntConstant(module, "WITH_CUDA", 0);
#endif
  return module;
}
