"""The VQ Triton kernels compile for sm_80 and sm_90 (PTX + cubin) on a machine without a GPU
(see triton_compile.py for why; on a GPU machine the cuda-marked tests run the kernels).

The search kernel is compiled in each of its variants: z resident or walked in d chunks, one or
two candidates per row (16-bit / float32), epilogue fused or codebook split (then the merge
kernel). For each autotune candidate list the first config must fit both architectures' shared
memory; the autotuner skips later ones that do not fit the device.
"""
import sys

import pytest
import torch

from tests.helpers.triton_compile import NO_GPU, compile_for, fits, ptxas_report, run_child

TORCH_DTYPE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
REPORT = "--report" in sys.argv


def compile_search(capability: int, dt: str, d: int, all_configs: bool) -> None:
    from fact_fast.kernels import vq as K
    i32, c = "i32", "constexpr"
    dtype = TORCH_DTYPE[dt]
    sig = dict(z_ptr=f"*{dt}", cb_ptr=f"*{dt}", pn_ptr="*fp32", cand_val_ptr="*fp32", cand_idx_ptr="*i64",
               index_ptr="*i64", dist_ptr=f"*{dt}", dist_f32_ptr="*fp32", q_ptr=f"*{dt}",
               N=i32, K=i32, D=i32, N_BUCKET=i32, s_zn=i32, s_zd=i32, s_cn=i32, s_cd=i32,
               SPLITS=c, WIDTH=c, TOP2=c, Z_RESIDENT=c, BLOCK_M=c, BLOCK_N=c, BLOCK_D=c, TO_F32=c, ROUND_TF32=c,
               PRECISION=c, WRITE_DIST=c, WRITE_Q=c, EPILOGUE_D=c)
    top2 = dt == "fp32"
    configs = K.search_configs(d, dtype)
    for i, (block, warps, stages) in enumerate(configs if all_configs else configs[:1]):
        for splits, write_dist in ((1, True), (1, False), (4, False)):
            width = splits * (2 if top2 else 1)
            constexprs = dict(block, SPLITS=splits, WIDTH=width, TOP2=top2, Z_RESIDENT=K.resident(d, dtype),
                              TO_F32=False, ROUND_TF32=False, PRECISION="tf32", WRITE_DIST=write_dist and splits == 1,
                              WRITE_Q=not write_dist and splits == 1)
            compiled = compile_for(K._search_kernel, sig, constexprs, capability, warps, stages,
                                   check_shared_memory=False)
            assert fits(compiled, capability) or i > 0, \
                f"first search config {block} needs {compiled.metadata.shared} B on sm_{capability}"
            if REPORT and splits == 1 and write_dist:
                print(f"sm_{capability} vq search {dt} d={d} resident={K.resident(d, dtype)} {block} "
                      f"w{warps} s{stages}: {ptxas_report(compiled, capability)}"
                      + ("" if fits(compiled, capability) else " (does not fit: skipped by the autotuner)"))
    sig = dict(z_ptr=f"*{dt}", cb_ptr=f"*{dt}", cand_val_ptr="*fp32", cand_idx_ptr="*i64", index_ptr="*i64",
               dist_ptr=f"*{dt}", dist_f32_ptr="*fp32", q_ptr=f"*{dt}", N=i32, K=i32, D=i32,
               s_zn=i32, s_zd=i32, s_cn=i32, s_cd=i32, WIDTH=c, TOP2=c, WRITE_DIST=c, WRITE_Q=c,
               BLOCK_M=c, BLOCK_W=c, EPILOGUE_D=c)
    for write_dist in (True, False):
        compile_for(K._merge_kernel, sig, dict(WIDTH=3 * (2 if top2 else 1), TOP2=top2, WRITE_DIST=write_dist,
                                               WRITE_Q=not write_dist, BLOCK_M=K._MERGE_ROWS,
                                               BLOCK_W=8 if top2 else 4,
                                               EPILOGUE_D=K._epilogue_d(K._MERGE_ROWS)),
                    capability, 4, 1)


def compile_backward(capability: int, dt: str) -> None:
    from fact_fast.kernels import vq as K
    i32, c = "i32", "constexpr"

    def pointers(**extra):
        return dict({"z_ptr": f"*{dt}", "cb_ptr": f"*{dt}"}, **extra)

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


# d: resident for every dtype (64, 256), resident for 16-bit only (512: FACT size), chunked (1000)
HEAD_DIMS = (64, 256, 512, 1000)


@NO_GPU
def test_triton_kernels_compile_for_sm80_and_sm90():
    run_child(__file__)


@NO_GPU
@pytest.mark.slow
def test_every_autotune_config_compiles():
    run_child(__file__, "all-configs")


if __name__ == "__main__":
    if "all-configs" in sys.argv[1:]:  # every autotune candidate of every variant, both archs, each dtype
        for cap in (80, 90):
            for dtype in ("fp32", "fp16", "bf16"):
                for d in HEAD_DIMS:
                    compile_search(cap, dtype, d, all_configs=True)
    else:
        for cap in (80, 90):
            for dtype in ("fp32", "bf16"):
                for d in (256, 512):
                    compile_search(cap, dtype, d, all_configs=False)
                compile_backward(cap, dtype)
    print("ok")
