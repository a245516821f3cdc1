"""Builds fact_fast and its compiled extension fact_fast._C.

The C++ (CPU, OpenMP) sources are always built. The CUDA sources (``csrc/**/*.cu`` and the
``csrc/**/*_cuda.cpp`` glue) are added when a CUDA compiler is found (``CUDA_HOME`` / nvcc). The
CuTe kernels (``csrc/**/*_cutlass.cu``) are added to a CUDA build when the CUTLASS headers are found
(scripts/cutlass_dir.py: ``CUTLASS_DIR``, a copy staged in third_party/cutlass, or the
``nvidia-cutlass`` wheel); without them the other CUDA kernels are built and used, and the build
says so.

Environment:
  FACT_FAST_FORCE_CUDA=1    a missing or failing CUDA build is an error (CI uses this)
  FACT_FAST_SKIP_CUDA=1     build the CPU part only
  FACT_FAST_SKIP_EXTENSION=1  build no compiled extension: a pure-Python install whose ops run on
                            the reference and Triton backends (the install test uses it)
  CUTLASS_DIR               CUTLASS checkout or include directory (default: third_party/cutlass/include,
                            then the nvidia-cutlass wheel)
  FACT_FAST_SKIP_CUTLASS=1  leave the CuTe kernels out even when the headers are found
  TORCH_CUDA_ARCH_LIST      GPU architectures (default "8.0;9.0+PTX": SASS for sm_80 and sm_90, and
                            compute_90 PTX that newer GPUs JIT-compile)
  MAX_JOBS                  parallel compile jobs (ninja)
"""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# sm_80 and sm_90 code, plus compute_90 PTX that newer GPUs JIT-compile (the Makefile and CI use this).
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _sources() -> tuple[list[str], list[str], list[str]]:
    """(C++ CPU sources, CUDA sources without CUTLASS, CuTe sources that need the CUTLASS headers)."""
    cpp = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cu = sorted(glob.glob("csrc/**/*.cu", recursive=True))
    cutlass = [p for p in cu if p.endswith("_cutlass.cu")]
    cuda = [p for p in cu if p not in cutlass] + [p for p in cpp if p.endswith("_cuda.cpp")]
    cpu = [p for p in cpp if not p.endswith("_cuda.cpp")]
    return cpu, cuda, cutlass


def _cutlass_include() -> str | None:
    """The CUTLASS include directory (scripts/cutlass_dir.py), or None with the reason printed."""
    if _flag("FACT_FAST_SKIP_CUTLASS"):
        print("fact_fast: FACT_FAST_SKIP_CUTLASS=1: the CuTe kernels are left out")
        return None
    spec = importlib.util.spec_from_file_location("cutlass_dir", os.path.join(ROOT, "scripts", "cutlass_dir.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    include = module.find_include()  # a bad CUTLASS_DIR raises: the user asked for those headers
    if include is None:
        print("fact_fast: no CUTLASS headers (set CUTLASS_DIR or pip install nvidia-cutlass): the CuTe kernels "
              "are left out and the other CUDA kernels are used")
    return include


def _extensions_and_cmdclass():
    from torch.utils import cpp_extension

    force_cuda, skip_cuda = _flag("FACT_FAST_FORCE_CUDA"), _flag("FACT_FAST_SKIP_CUDA")
    if force_cuda and skip_cuda:
        raise RuntimeError("FACT_FAST_FORCE_CUDA and FACT_FAST_SKIP_CUDA are both set; choose one")
    cpu_sources, cuda_sources, cutlass_sources = _sources()
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
    def cuda_extension(cutlass_include: str | None):
        defines = ["-DFACT_FAST_WITH_CUDA"] + (["-DFACT_FAST_WITH_CUTLASS"] if cutlass_include else [])
        # fact_fast._C.CUDA_ARCH_LIST ("8.0/9.0+PTX"): the module stringizes the tokens, so only
        # shell-safe characters pass; another spelling is left out.
        archs = "/".join(re.split(r"[;, ]+", os.environ["TORCH_CUDA_ARCH_LIST"].strip()))
        if re.fullmatch(r"[0-9A-Za-z.+/]+", archs):
            defines.append(f"-DFACT_FAST_CUDA_ARCH_LIST={archs}")
        nvcc = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]
        return cpp_extension.CUDAExtension(
            "fact_fast._C", cpu_sources + cuda_sources + (cutlass_sources if cutlass_include else []),
            include_dirs=common["include_dirs"] + ([cutlass_include] if cutlass_include else []),
            extra_link_args=common["extra_link_args"],
            extra_compile_args={"cxx": cxx + defines, "nvcc": nvcc + defines})

    # Extensions to try in order: a failed CuTe build retries without it, a failed CUDA build without CUDA
    # (unless FACT_FAST_FORCE_CUDA=1, where any failure is an error).
    if use_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)
        cutlass_include = _cutlass_include()
        fallbacks = ([("without the CuTe kernels", cuda_extension(None))] if cutlass_include else [])
        fallbacks.append(("with the CPU kernels only", cpu_extension()))
        ext = cuda_extension(cutlass_include)
        print(f"fact_fast: building CPU + CUDA kernels (CUDA_HOME={cpp_extension.CUDA_HOME}, "
              f"arch={os.environ['TORCH_CUDA_ARCH_LIST']}, CuTe kernels: "
              f"{'yes, CUTLASS headers at ' + cutlass_include if cutlass_include else 'no'})")
    else:
        ext, fallbacks = cpu_extension(), []
        why = "FACT_FAST_SKIP_CUDA=1" if skip_cuda else "no CUDA compiler found"
        print(f"fact_fast: building CPU kernels only ({why}); CUDA backend disabled")

    class BuildExtension(cpp_extension.BuildExtension):
        """Falls back to the next extension when a build fails, unless FACT_FAST_FORCE_CUDA=1."""

        def build_extension(self, extension):
            try:
                super().build_extension(extension)
                return
            except Exception as err:  # noqa: BLE001 - any compiler failure
                if force_cuda or not fallbacks:
                    raise
                failure = err
            for what, fallback in fallbacks:
                print(f"fact_fast: build failed ({failure}); retrying {what}")
                try:
                    super().build_extension(fallback)
                    return
                except Exception as err:  # noqa: BLE001
                    failure = err
            raise failure

    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = ([], {}) if _flag("FACT_FAST_SKIP_EXTENSION") else _extensions_and_cmdclass()

setup(
    # The Triton kernels sit beside csrc/ in a top-level kernels/ and install as fact_fast.kernels
    # (from a checkout, fact_fast/__init__.py attaches them the same way); the presets in configs/
    # install as the data folder fact_fast/configs (fact_fast.config looks there first).
    packages=find_packages(include=["fact_fast", "fact_fast.*"]) + ["fact_fast.kernels", "fact_fast.configs"],
    package_dir={"fact_fast.kernels": "kernels", "fact_fast.configs": "configs"},
    package_data={"fact_fast": ["data/labels/shipped_embeddings/*.npy", "data/labels/shipped_embeddings/*.json",
                                "data/tables/*.json"],
                  "fact_fast.configs": ["*.yaml"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
