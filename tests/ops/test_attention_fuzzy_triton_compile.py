"""The attention and fuzzy Triton kernels compile for sm_80 / sm_90 on a machine without a GPU,
in every launch configuration the launchers can pick (each autotune candidate), within a block's
shared memory (see triton_compile.py).

Autotune candidates: the first of each list must fit on both architectures (it is what a device
with the least shared memory can always run); every candidate must fit on sm_90, and an sm_80
device's autotuner skips the ones that do not fit there.
"""
import sys

import pytest
import torch

from tests.helpers.triton_compile import NO_GPU, compile_for, fits, ptxas_report, run_child

TORCH_DTYPE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
REPORT = "--report" in sys.argv


def _compile_candidates(kernel, sig, const, configs, capability, what):
    for i, (block, warps, stages) in enumerate(configs):
        compiled = compile_for(kernel, sig, dict(const, **block), capability, warps, stages,
                               check_shared_memory=False)
        ok = fits(compiled, capability)
        assert ok or (i > 0 and capability == 80), \
            f"{what} {block} w{warps} s{stages}: {compiled.metadata.shared} B shared on sm_{capability}"
        if REPORT:
            print(f"sm_{capability} {what} {block} w{warps} s{stages}: {ptxas_report(compiled, capability)}"
                  + ("" if ok else " (does not fit: skipped by the autotuner)"))


def compile_attention(capability: int, dt: str, head_dim: int, rows: int = 4096) -> None:
    from fact_fast.kernels import attention as K
    i32, c = "i32", "constexpr"
    block_d, block_dv = K._block_dims(head_dim, head_dim)
    widest = max(block_d, block_dv)
    dtype = TORCH_DTYPE[dt]
    common = dict(Lq=i32, Lk=i32, D=i32, DV=i32, scale="fp32", bias="fp32",
                  s_qb=i32, s_qm=i32, s_qd=i32, s_kb=i32, s_kn=i32, s_kd=i32, s_vb=i32, s_vn=i32, s_vd=i32)
    flags = dict(UPCAST=c, PRECISION=c, FAST_TANH=c, BLOCK_M=c, BLOCK_N=c, BLOCK_D=c, BLOCK_DV=c)
    grad = dict(s_gb=i32, s_gm=i32, s_gd=i32)
    ptrs = {name: f"*{dt}" for name in ("Q", "K", "V")}
    launch_flags = K._common(torch.empty(0, dtype=dtype))
    assert launch_flags["FAST_TANH"] == (dt != "fp32")  # on a GPU: tanh.approx.f32 for 16-bit inputs
    const = dict(launch_flags, UPCAST=False, BLOCK_D=block_d, BLOCK_DV=block_dv)
    what = f"attention {dt} d={head_dim}"

    sig = dict(ptrs, Out=f"*{dt}", **common, s_ob=i32, s_om=i32, s_od=i32, RESIDUAL=c, **flags)
    _compile_candidates(K._attention_fwd_kernel, sig, dict(const, RESIDUAL=True),
                        K._forward_configs(widest, dtype, rows), capability, f"{what} fwd")

    (block_m, q_configs), (block_n, kv_configs) = K._backward_configs(widest, dtype, rows)
    sig = dict(ptrs, GO=f"*{dt}", DK=f"*{dt}", DV_OUT=f"*{dt}", **common, **grad, s_dkb=i32, s_dkn=i32,
               s_dkd=i32, s_dvb=i32, s_dvn=i32, s_dvd=i32, KV_SHARED=c, **flags)
    _compile_candidates(K._attention_bwd_kv_kernel, sig, dict(const, KV_SHARED=False, BLOCK_N=block_n),
                        kv_configs, capability, f"{what} bwd dK/dV")
    sig = dict(ptrs, GO=f"*{dt}", DQ=f"*{dt}", **common, **grad, s_dqb=i32, s_dqm=i32, s_dqd=i32, **flags)
    _compile_candidates(K._attention_bwd_q_kernel, sig, dict(const, BLOCK_M=block_m), q_configs, capability,
                        f"{what} bwd dQ")


def compile_fuzzy(capability: int, dt: str, b: int, c_: int, d: int, sms: int = 132, log_logit: bool = True) -> None:
    from fact_fast.kernels import fuzzy as K
    c = "constexpr"
    block_d = K._block_d(d)
    samples, block_c = K._forward_tiles(b, c_, d, sms)
    sig = dict(e_ptr=f"*{dt}", s_ptr=f"*{dt}", y_ptr="*i1", tau_ptr="*fp32", mu_ptr=f"*{dt}", stats_ptr="*fp32",
               loss_ptr="*fp32", out_ptr="*fp32", counter_ptr="*i32", B="i32", C="i32", D="i32", alpha="fp32",
               logit_scale="fp32", shift="fp32", smooth="fp32", out_scale="fp32",
               COMPUTE_LOSS=c, REDUCE=c, LOG_LOGIT=c, SAMPLES=c, BLOCK_C=c, BLOCK_D=c, BLOCK_R=c)
    compiled = compile_for(K._fuzzy_fwd_kernel, sig,
                           dict(COMPUTE_LOSS=True, REDUCE=True, LOG_LOGIT=log_logit, SAMPLES=samples,
                                BLOCK_C=block_c, BLOCK_D=block_d, BLOCK_R=1024),
                           capability, K._num_warps(samples * block_c * block_d), 3)
    logit = "log" if log_logit else "scaled"
    if REPORT:
        print(f"sm_{capability} fuzzy fwd {dt} {logit} B={b} C={c_} d={d}: SAMPLES={samples} BLOCK_C={block_c}: "
              f"{ptxas_report(compiled, capability)}")
    rows = K._rows(d, b)
    sig = dict(e_ptr=f"*{dt}", s_ptr=f"*{dt}", y_ptr="*fp32", tau_ptr="*fp32", stats_ptr="*fp32", g_ptr="*fp32",
               gmu_ptr="*fp32", de_ptr=f"*{dt}", ds_ptr=f"*{dt}", part_ptr="*fp32", counter_ptr="*i32",
               dtau_ptr="*fp32", B="i32", C="i32", D="i32", g_stride="i32", g_scale="fp32", alpha="fp32",
               logit_scale="fp32", shift="fp32", HAS_LOSS=c, HAS_GMU=c, LOG_LOGIT=c, BLOCK_B=c, BLOCK_D=c,
               BLOCK_R=c)
    compiled = compile_for(K._fuzzy_bwd_kernel, sig, dict(HAS_LOSS=True, HAS_GMU=True, LOG_LOGIT=log_logit,
                                                          BLOCK_B=rows, BLOCK_D=block_d, BLOCK_R=1024),
                           capability, K._num_warps(rows * block_d), 3)
    if REPORT:
        print(f"sm_{capability} fuzzy bwd {dt} {logit} B={b} C={c_} d={d}: BLOCK_B={rows}: "
              f"{ptxas_report(compiled, capability)}")


# (B, C, d): FACT size, docs/design.md §4's large case (8 samples per program), one-element and widest rows
FUZZY_CASES = ((32, 40, 512), (4096, 1000, 256), (1, 1, 1), (64, 7, 8192))


@NO_GPU
def test_largest_configs_compile_for_sm90():
    run_child(__file__)


@NO_GPU
@pytest.mark.slow
def test_every_config_compiles_for_sm80_and_sm90():
    run_child(__file__, "all")


if __name__ == "__main__":
    if "all" in sys.argv[1:]:  # every head-dim class and dtype, both architectures
        for cap in (80, 90):
            for dt in ("fp32", "fp16", "bf16"):
                for head_dim in (8, 64, 100, 256, 512):
                    compile_attention(cap, dt, head_dim)
                compile_attention(cap, dt, 512, rows=40)  # FACT: 40 class queries, d = 512
                for b, c_, d in FUZZY_CASES:
                    for log_logit in (False, True):  # the two point-loss logits (LOG_LOGIT)
                        compile_fuzzy(cap, dt, b, c_, d, log_logit=log_logit)
    else:  # the head dims that need the most shared memory or registers; FACT and large fuzzy shapes
        for dt in ("fp32", "bf16"):
            compile_attention(90, dt, 512)
            compile_fuzzy(90, dt, 32, 40, 512)
        compile_fuzzy(90, "fp32", 32, 40, 512, log_logit=False)
        compile_attention(90, "bf16", 128)
        compile_fuzzy(90, "bf16", 4096, 1000, 256)
        compile_fuzzy(90, "fp32", 64, 7, 8192)
    print("ok")
