"""The layout facts the CuTe kernels rely on, checked on the host with CuTe's layout algebra (no GPU).

Each program in tests/ops/cute/ is compiled against its kernel's own configuration header and run:
* vq_cutlass_layout_check.cu (csrc/vq/vq_cutlass_config.cuh): every cell of the 128×128 accumulator
  tile has one owner, each thread's row slots hold one row with its columns in increasing order
  (what makes ties go to the lowest index), 8 threads share each row (the merge buffer's size);
* attention_cutlass_layout_check.cu (csrc/attention/attention_cutlass_config.cuh): the S accumulator
  read as the A operand of P·V holds, slot for slot, the (query, key) element the mma reads there
  (P stays in registers), vᵀ addresses v's tile, the output tile is written once;
* both: each 16-byte copy reads aligned consecutive columns and the copies cover a tile once.
Needs nvcc (scripts/cuda_home.py) and the CUTLASS headers (scripts/cutlass_dir.py); skipped without.
"""
import importlib.util
import os
import subprocess
import sys

import pytest
from tests.helpers import REPO_ROOT as ROOT



def _script_output(name: str) -> str | None:
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", name)], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def _cutlass_include() -> str | None:
    spec = importlib.util.spec_from_file_location("cutlass_dir", os.path.join(ROOT, "scripts", "cutlass_dir.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.find_include()


@pytest.mark.slow  # compiles two host programs with nvcc
@pytest.mark.parametrize("program", ["vq_cutlass_layout_check", "attention_cutlass_layout_check"])
def test_cute_layout_facts(tmp_path, program):
    cuda_home, cutlass = _script_output("cuda_home.py"), _cutlass_include()
    if cuda_home is None or cutlass is None:
        pytest.skip("needs nvcc matched to torch (scripts/cuda_home.py) and the CUTLASS headers")
    exe = tmp_path / program
    build = subprocess.run(
        [os.path.join(cuda_home, "bin", "nvcc"), "-std=c++17", "--expt-relaxed-constexpr",
         "-I", os.path.join(ROOT, "csrc"), "-I", os.path.join(cuda_home, "include"), "-I", cutlass,
         os.path.join(ROOT, "tests", "ops", "cute", f"{program}.cu"), "-o", str(exe)],
        capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "0 violations" in run.stdout, run.stdout[-3000:]
