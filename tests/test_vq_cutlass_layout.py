"""The layout facts the CuTe VQ search's epilogue relies on, checked on the host (no GPU needed).

tests/cute/vq_cutlass_layout_check.cu is compiled against the kernel's own configuration header
(csrc/vq/vq_cutlass_config.cuh) and run: every cell of the 128×128 accumulator tile has one owner,
each thread's row slots hold one row with its columns in increasing order (what makes ties go to the
lowest index), 8 threads share each row (the merge buffer's size), and each 16-byte copy reads
aligned consecutive columns covering the tile once. Needs nvcc (scripts/cuda_home.py) and the
CUTLASS headers (scripts/cutlass_dir.py); skipped without them.
"""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script_output(name: str) -> str | None:
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", name)], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def _cutlass_include() -> str | None:
    spec = importlib.util.spec_from_file_location("cutlass_dir", os.path.join(ROOT, "scripts", "cutlass_dir.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.find_include()


def test_cute_search_layout_facts(tmp_path):
    cuda_home, cutlass = _script_output("cuda_home.py"), _cutlass_include()
    if cuda_home is None or cutlass is None:
        pytest.skip("needs nvcc matched to torch (scripts/cuda_home.py) and the CUTLASS headers")
    exe = tmp_path / "vq_cutlass_layout_check"
    build = subprocess.run(
        [os.path.join(cuda_home, "bin", "nvcc"), "-std=c++17", "--expt-relaxed-constexpr",
         "-I", os.path.join(ROOT, "csrc"), "-I", os.path.join(cuda_home, "include"), "-I", cutlass,
         os.path.join(ROOT, "tests", "cute", "vq_cutlass_layout_check.cu"), "-o", str(exe)],
        capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "0 violations" in run.stdout, run.stdout[-3000:]
