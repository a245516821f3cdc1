"""The gcn Triton kernels compile for sm_80 and sm_90 (PTX + cubin) on a machine without a GPU.

Same approach as test_vq_triton_compile.py (the interpreter does not run the compiler): a child
process without TRITON_INTERPRET compiles every variant the launchers can pick, each with the
block shapes of the smallest and the largest feature size.
"""
import os
import subprocess
import sys

import pytest

from test_vq_triton_compile import NO_GPU, _compile


def compile_all(capability: int, dt: str, idx: str) -> None:
    from fact_fast.kernels import gcn as K
    i32, c = "i32", "constexpr"
    base = dict(rowptr_ptr=f"*{idx}", col_ptr=f"*{idx}", value_ptr="*fp32", dinv_ptr="*fp32")
    for f in (1, 1000):  # _blocks' two extremes: BLOCK_E 2048 × BLOCK_F 1, BLOCK_E 16 × BLOCK_F 128
        block_e, block_f = K._blocks(f)
        for has_value, self_loop in ((True, True), (False, False)):
            sig = dict(x_ptr=f"*{dt}", **base, out_ptr=f"*{dt}", n=i32, f=i32, nnz=i32,
                       HAS_VALUE=c, SELF_LOOP=c, BLOCK_E=c, BLOCK_F=c)
            _compile(K._spmm_kernel, sig, dict(HAS_VALUE=has_value, SELF_LOOP=self_loop, BLOCK_E=block_e,
                                               BLOCK_F=block_f), capability)
            sig = dict(grad_ptr=f"*{dt}", x_ptr=f"*{dt}", dx_ptr=f"*{dt}", **base, dvalue_ptr="*fp32",
                       n=i32, f=i32, nnz=i32, HAS_VALUE=c, SELF_LOOP=c, NORMALIZE=c, BLOCK_E=c, BLOCK_F=c)
            compiled = _compile(K._value_grad_kernel, sig,
                                dict(HAS_VALUE=has_value, SELF_LOOP=self_loop, NORMALIZE=True,
                                     BLOCK_E=min(block_e, 64), BLOCK_F=block_f), capability)
            assert "ptx" in compiled.asm


@NO_GPU
def test_gcn_triton_kernels_compile_for_sm80_and_sm90():
    pytest.importorskip("triton")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([root, os.path.dirname(os.path.abspath(__file__)),
                                         env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


if __name__ == "__main__":
    for cap in (80, 90):
        for dtype, index in (("fp32", "i64"), ("bf16", "i32")):
            compile_all(cap, dtype, index)
    print("ok")
