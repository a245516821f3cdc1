"""The VQ Triton kernels compile for sm_80 and sm_90 (PTX + cubin) on a machine without a GPU
(see triton_compile.py for why; on a GPU machine the cuda-marked tests run the kernels)."""
import sys

import pytest

from triton_compile import NO_GPU, compile_for, run_child


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
            # the autotuner itself skips candidates that do not fit shared memory
            compile_for(K._nearest_kernel, sig, constexprs, capability, config.num_warps, config.num_stages,
                        check_shared_memory=False)
    sig = pointers(index_ptr="*i64", go_ptr=f"*{dt}", w_ptr="*fp32", w_stride=i32, gz_ptr=f"*{dt}",
                   N=i32, K=i32, D=i32, s_zn=i32, s_zd=i32, s_cn=i32, s_cd=i32, s_gn=i32, s_gd=i32,
                   HAS_GO=c, BLOCK_M=c, BLOCK_D=c)
    compile_for(K._grad_z_kernel, sig, {"HAS_GO": True, "BLOCK_M": 32, "BLOCK_D": 128}, capability)
    sig = pointers(index_ptr="*i64", w_ptr="*fp32", w_stride=i32, acc_ptr="*fp32", N=i32, K=i32, D=i32,
                   s_zn=i32, s_zd=i32, s_cn=i32, s_cd=i32, BLOCK_M=c, BLOCK_D=c)
    compile_for(K._grad_codebook_atomic_kernel, sig, {"BLOCK_M": 32, "BLOCK_D": 128}, capability)
    sig = pointers(order_ptr="*i64", offsets_ptr="*i64", w_ptr="*fp32", w_stride=i32, gc_ptr=f"*{dt}",
                   D=i32, s_zn=i32, s_zd=i32, s_cn=i32, s_cd=i32, BLOCK_R=c, BLOCK_D=c)
    compile_for(K._grad_codebook_sorted_kernel, sig, {"BLOCK_R": 32, "BLOCK_D": 128}, capability)


@NO_GPU
def test_triton_kernels_compile_for_sm80_and_sm90():
    run_child(__file__)


@NO_GPU
@pytest.mark.slow
def test_every_autotune_config_compiles():
    run_child(__file__, "all-configs")


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
