"""The VQ Triton kernels compile for sm_80 and sm_90 (PTX + cubin) on a machine without a GPU.

The interpreter runs the kernels' logic but not the compiler (typing, layouts, tf32x3, shared memory);
this closes that gap where no GPU is available (on a GPU machine the cuda-marked tests run the kernels).
The interpreter patches triton.language process-wide, so the compiles run in a child process
without TRITON_INTERPRET.
"""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _compile(kernel, signature, constexprs, capability, num_warps=4, num_stages=3):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", capability, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages})


def compile_all(capability: int, dt: str, precision: str, configs) -> None:
    from fact_fast.kernels import vq as K
    i32, c = "i32", "constexpr"

    def pointers(**extra):
        return dict({"z_ptr": f"*{dt}", "cb_ptr": f"*{dt}"}, **extra)

    sig = pointers(pn_ptr="*fp32", index_ptr="*i64", dist_ptr=f"*{dt}", dist_f32_ptr="*fp32", q_ptr=f"*{dt}",
                   N=i32, K=i32, D=i32, s_zn=i32, s_zd=i32, s_cn=i32, s_cd=i32,
                   BLOCK_M=c, BLOCK_N=c, BLOCK_D=c, TO_F32=c, PRECISION=c, WRITE_DIST=c, WRITE_Q=c)
    for config in configs:  # autotuner candidates; both output variants
        for write_dist in (True, False):
            constexprs = dict(config.kwargs, TO_F32=False, PRECISION=precision, WRITE_DIST=write_dist,
                              WRITE_Q=not write_dist)
            compiled = _compile(K._nearest_kernel, sig, constexprs, capability, config.num_warps,
                                config.num_stages)
            assert "ptx" in compiled.asm
    sig = pointers(index_ptr="*i64", go_ptr=f"*{dt}", w_ptr="*fp32", w_stride=i32, gz_ptr=f"*{dt}",
                   N=i32, K=i32, D=i32, s_zn=i32, s_zd=i32, s_cn=i32, s_cd=i32, s_gn=i32, s_gd=i32,
                   HAS_GO=c, BLOCK_M=c, BLOCK_D=c)
    _compile(K._grad_z_kernel, sig, {"HAS_GO": True, "BLOCK_M": 32, "BLOCK_D": 128}, capability)
    sig = pointers(index_ptr="*i64", w_ptr="*fp32", w_stride=i32, acc_ptr="*fp32", N=i32, K=i32, D=i32,
                   s_zn=i32, s_zd=i32, s_cn=i32, s_cd=i32, BLOCK_M=c, BLOCK_D=c)
    _compile(K._grad_codebook_atomic_kernel, sig, {"BLOCK_M": 32, "BLOCK_D": 128}, capability)
    sig = pointers(order_ptr="*i64", offsets_ptr="*i64", w_ptr="*fp32", w_stride=i32, gc_ptr=f"*{dt}",
                   D=i32, s_zn=i32, s_zd=i32, s_cn=i32, s_cd=i32, BLOCK_R=c, BLOCK_D=c)
    _compile(K._grad_codebook_sorted_kernel, sig, {"BLOCK_R": 32, "BLOCK_D": 128}, capability)


def _run_child(*argv):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, os.path.abspath(__file__), *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the kernels run in test_vq_backends")


@NO_GPU
def test_triton_kernels_compile_for_sm80_and_sm90():
    _run_child()


@NO_GPU
@pytest.mark.slow
def test_every_autotune_config_compiles():
    _run_child("all-configs")


if __name__ == "__main__":
    from fact_fast.kernels import vq as kernels
    if sys.argv[1:] == ["all-configs"]:  # every autotune candidate, sm_90, each dtype
        for dtype, prec in (("fp32", "tf32x3"), ("fp16", "tf32"), ("bf16", "tf32")):
            compile_all(90, dtype, prec, kernels._SEARCH_CONFIGS)
    else:
        for cap in (80, 90):
            for dtype, prec in (("fp32", "tf32x3"), ("bf16", "tf32")):
                compile_all(cap, dtype, prec, kernels._SEARCH_CONFIGS[:1])
    print("ok")
