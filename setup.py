"""Builds fact_fast and its compiled extension fact_fast._C.

The C++ (CPU, OpenMP) sources are always built. The CUDA sources (``csrc/**/*.cu`` and the
``csrc/**/*_cuda.cpp`` glue) are added when a CUDA compiler is found (``CUDA_HOME`` / nvcc).

Environment:
  FACT_FAST_FORCE_CUDA=1   a missing or failing CUDA build is an error (CI uses this)
  FACT_FAST_SKIP_CUDA=1    build the CPU part only
  TORCH_CUDA_ARCH_LIST     GPU architectures (default "8.0;9.0")
  MAX_JOBS                 parallel compile jobs (ninja)
"""
from __future__ import annotations

import glob
import os
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _sources() -> tuple[list[str], list[str]]:
    cpp = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cuda = sorted(glob.glob("csrc/**/*.cu", recursive=True)) + [p for p in cpp if p.endswith("_cuda.cpp")]
    cpu = [p for p in cpp if not p.endswith("_cuda.cpp")]
    return cpu, cuda


def _extensions_and_cmdclass():
    from torch.utils import cpp_extension

    force_cuda, skip_cuda = _flag("FACT_FAST_FORCE_CUDA"), _flag("FACT_FAST_SKIP_CUDA")
    if force_cuda and skip_cuda:
        raise RuntimeError("FACT_FAST_FORCE_CUDA and FACT_FAST_SKIP_CUDA are both set; choose one")
    cpu_sources, cuda_sources = _sources()
    cxx = ["-O3", "-fopenmp", "-fvisibility=hidden"]
    common = dict(include_dirs=[os.path.join(ROOT, "csrc")], extra_link_args=["-fopenmp"])

    def cpu_extension():
        return cpp_extension.CppExtension("fact_fast._C", cpu_sources, extra_compile_args={"cxx": cxx}, **common)

    nvcc_found = cpp_extension.CUDA_HOME is not None and shutil.which(
        os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc")) is not None
    use_cuda = not skip_cuda and nvcc_found
    if force_cuda and not nvcc_found:
        raise RuntimeError("FACT_FAST_FORCE_CUDA=1 but no CUDA compiler was found "
                           f"(CUDA_HOME={cpp_extension.CUDA_HOME!r}); set CUDA_HOME to a toolkit with bin/nvcc")
    if use_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        nvcc = ["-O3", "-lineinfo", "--expt-relaxed-constexpr", "-DFACT_FAST_WITH_CUDA"]
        ext = cpp_extension.CUDAExtension(
            "fact_fast._C", cpu_sources + cuda_sources,
            extra_compile_args={"cxx": cxx + ["-DFACT_FAST_WITH_CUDA"], "nvcc": nvcc}, **common)
        print(f"fact_fast: building CPU + CUDA kernels (CUDA_HOME={cpp_extension.CUDA_HOME}, "
              f"arch={os.environ['TORCH_CUDA_ARCH_LIST']})")
    else:
        ext = cpu_extension()
        why = "FACT_FAST_SKIP_CUDA=1" if skip_cuda else "no CUDA compiler found"
        print(f"fact_fast: building CPU kernels only ({why}); CUDA backend disabled")

    class BuildExtension(cpp_extension.BuildExtension):
        """Falls back to a CPU-only build when the CUDA build fails, unless FACT_FAST_FORCE_CUDA=1."""

        def build_extension(self, extension):
            try:
                super().build_extension(extension)
            except Exception as err:  # noqa: BLE001 - any compiler failure
                if force_cuda or not use_cuda:
                    raise
                print(f"fact_fast: CUDA build failed ({err}); retrying with the CPU kernels only")
                super().build_extension(cpu_extension())

    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions_and_cmdclass()

setup(
    packages=find_packages(include=["fact_fast", "fact_fast.*"]),
    package_data={"fact_fast": ["data/embeddings/*.npy", "data/embeddings/*.json", "data/tables/*.json",
                                "configs/*.yaml"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
