"""Compiling Triton kernels for real GPUs (sm_80 / sm_90) on a machine without one.

The interpreter (TRITON_INTERPRET=1) runs a kernel's logic but not the compiler: it accepts
tl.dot blocks under 16, non-power-of-2 aranges and any amount of shared memory. The
``test_*_triton_compile.py`` files compile the configurations the launchers pick, in a child
process (the interpreter patches triton.language process-wide), and check each fits the shared
memory one block may use on the target. Each compile passes the floating-point-fusion setting the
launchers pass (fact_fast.kernels._launch.FP_FUSION).
"""
import os
import subprocess
import sys

import pytest
import torch
from tests.helpers import REPO_ROOT as ROOT

SMEM_LIMIT = {80: 166912, 90: 232448}  # bytes of dynamic shared memory one block may opt in to (A100, H100)

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the kernels run in the backend tests")


def compile_for(kernel, signature: dict, constexprs: dict, capability: int, num_warps: int = 4,
                num_stages: int = 3, check_shared_memory: bool = True):
    """Compile ``kernel`` for ``sm_<capability>``; assert PTX was made and shared memory fits."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fact_fast.kernels._launch import FP_FUSION
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages,
                                       "enable_fp_fusion": FP_FUSION})
    assert "ptx" in compiled.asm
    if check_shared_memory:
        assert fits(compiled, capability), \
            f"{kernel.__name__}: {compiled.metadata.shared} bytes of shared memory on sm_{capability}"
    return compiled


def fits(compiled, capability: int) -> bool:
    """The compiled kernel's shared memory fits one block on sm_<capability>."""
    return compiled.metadata.shared <= SMEM_LIMIT[capability]


def ptxas_report(compiled, capability: int) -> str:
    """ptxas's register / spill line for a compiled kernel (a static estimate; "" if ptxas is not found)."""
    import re
    import tempfile
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        ptxas = get_ptxas(capability).path
    except Exception:  # noqa: BLE001 - older Triton: no report
        return ""
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(compiled.asm["ptx"])
        f.flush()
        done = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{capability}a" if capability == 90 else
                               f"--gpu-name=sm_{capability}", f.name, "-o", os.devnull],
                              capture_output=True, text=True)
    used = re.search(r"Used (\d+) registers", done.stderr)
    spill = re.search(r"(\d+) bytes spill stores", done.stderr)
    return (f"{used.group(1) if used else '?'} regs, {spill.group(1) if spill else '?'} B spill stores, "
            f"{compiled.metadata.shared} B shared")


def run_child(script: str, *argv: str) -> None:
    """Run ``script`` (a test file's ``__main__``) without TRITON_INTERPRET; fail with its output."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, os.path.abspath(script), *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
