"""The attention and fuzzy Triton kernels compile for sm_80 / sm_90 on a machine without a GPU,
in the launch configurations the launchers pick, each within a block's shared memory (see
triton_compile.py)."""
import sys

import pytest
import torch

from triton_compile import NO_GPU, compile_for, run_child

TORCH_DTYPE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def compile_attention(capability: int, dt: str, head_dim: int) -> None:
    from fact_fast.kernels import attention as K
    i32, c = "i32", "constexpr"
    block_d, block_dv = K._block_dims(head_dim, head_dim)
    common = dict(Lq=i32, Lk=i32, D=i32, DV=i32, scale="fp32", bias="fp32",
                  s_qb=i32, s_qm=i32, s_qd=i32, s_kb=i32, s_kn=i32, s_kd=i32, s_vb=i32, s_vn=i32, s_vd=i32)
    flags = dict(UPCAST=c, PRECISION=c, BLOCK_M=c, BLOCK_N=c, BLOCK_D=c, BLOCK_DV=c)
    grad = dict(s_gb=i32, s_gm=i32, s_gd=i32)
    ptrs = {name: f"*{dt}" for name in ("Q", "K", "V")}
    for backward in (False, True):
        cfg = K._config(block_d, block_dv, backward, rows=4096, dtype=TORCH_DTYPE[dt])
        launch = (capability, cfg["num_warps"], cfg["num_stages"])
        const = dict(UPCAST=False, PRECISION=K._common(torch.empty(0, dtype=TORCH_DTYPE[dt]))["PRECISION"],
                     BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_D=block_d, BLOCK_DV=block_dv)
        if not backward:
            sig = dict(ptrs, Out=f"*{dt}", **common, s_ob=i32, s_om=i32, s_od=i32, RESIDUAL=c, **flags)
            compile_for(K._attention_fwd_kernel, sig, dict(const, RESIDUAL=True), *launch)
            continue
        sig = dict(ptrs, GO=f"*{dt}", DK=f"*{dt}", DV_OUT=f"*{dt}", **common, **grad, s_dkb=i32, s_dkn=i32,
                   s_dkd=i32, s_dvb=i32, s_dvn=i32, s_dvd=i32, KV_SHARED=c, **flags)
        compile_for(K._attention_bwd_kv_kernel, sig, dict(const, KV_SHARED=False), *launch)
        sig = dict(ptrs, GO=f"*{dt}", DQ=f"*{dt}", **common, **grad, s_dqb=i32, s_dqm=i32, s_dqd=i32, **flags)
        compile_for(K._attention_bwd_q_kernel, sig, const, *launch)


def compile_fuzzy(capability: int, dt: str, d: int, n: int) -> None:
    from fact_fast.kernels import fuzzy as K
    c = "constexpr"
    block_d, rows = K._block_d(d), K._rows(d, n)
    warps = K._num_warps(block_d, rows)
    sig = dict(e_ptr=f"*{dt}", s_ptr=f"*{dt}", y_ptr="*i1", tau_ptr="*fp32", mu_ptr=f"*{dt}", stats_ptr="*fp32",
               loss_ptr="*fp32", out_ptr="*fp32", counter_ptr="*i32", B="i32", C="i32", D="i32", alpha="fp32",
               logit_scale="fp32", threshold="fp32", smooth="fp32", out_scale="fp32",
               COMPUTE_LOSS=c, REDUCE=c, BLOCK_C=c, BLOCK_D=c, BLOCK_R=c)
    compile_for(K._fuzzy_fwd_kernel, sig, dict(COMPUTE_LOSS=True, REDUCE=True, BLOCK_C=rows, BLOCK_D=block_d,
                                            BLOCK_R=1024), capability, warps, 3)
    sig = dict(e_ptr=f"*{dt}", s_ptr=f"*{dt}", y_ptr="*fp32", tau_ptr="*fp32", stats_ptr="*fp32", g_ptr="*fp32",
               gmu_ptr="*fp32", de_ptr=f"*{dt}", ds_ptr=f"*{dt}", part_ptr="*fp32", counter_ptr="*i32",
               dtau_ptr="*fp32", B="i32", C="i32", D="i32", g_stride="i32", g_scale="fp32", alpha="fp32",
               logit_scale="fp32", threshold="fp32", HAS_LOSS=c, HAS_GMU=c, BLOCK_B=c, BLOCK_D=c, BLOCK_R=c)
    compile_for(K._fuzzy_bwd_kernel, sig, dict(HAS_LOSS=True, HAS_GMU=True, BLOCK_B=rows, BLOCK_D=block_d,
                                            BLOCK_R=1024), capability, warps, 3)


@NO_GPU
def test_largest_configs_compile_for_sm90():
    run_child(__file__)


@NO_GPU
@pytest.mark.slow
def test_every_config_compiles_for_sm80_and_sm90():
    run_child(__file__, "all")


if __name__ == "__main__":
    if sys.argv[1:] == ["all"]:  # every head-dim class and dtype, both architectures
        for cap in (80, 90):
            for dt in ("fp32", "fp16", "bf16"):
                for head_dim in (8, 64, 100, 256, 512):
                    compile_attention(cap, dt, head_dim)
                for d, n in ((1, 1), (24, 40), (300, 7), (8192, 64)):
                    compile_fuzzy(cap, dt, d, n)
    else:  # the head dim that needs the most shared memory; small and widest fuzzy rows
        for dt in ("fp32", "bf16"):
            compile_attention(90, dt, 512)
            compile_fuzzy(90, dt, 24, 40)
        compile_fuzzy(90, "fp32", 8192, 1)
    print("ok")
