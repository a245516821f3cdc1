"""The gcn Triton kernels compile for sm_80 and sm_90 (PTX + cubin) on a machine without a GPU.

See triton_compile.py for why; every variant the launchers can pick is compiled with the block
shapes of the smallest and the largest feature size, with one and with MAX_ROWS rows per program.
"""
from tests.helpers.triton_compile import NO_GPU, compile_for, run_child


def compile_all(capability: int, dt: str, idx: str) -> None:
    from fact_fast.kernels import gcn as K
    i32, c = "i32", "constexpr"
    base = dict(rowptr_ptr=f"*{idx}", col_ptr=f"*{idx}", value_ptr="*fp32", dinv_ptr="*fp32")
    for f in (1, 1000):  # _blocks' two extremes: BLOCK_E 2048 × BLOCK_F 1, BLOCK_E 16 × BLOCK_F 128
        block_e, block_f = K._blocks(f)
        for has_value, self_loop, rows in ((True, True, 1), (False, False, K.MAX_ROWS)):
            sig = dict(x_ptr=f"*{dt}", **base, out_ptr=f"*{dt}", n=i32, f=i32, nnz=i32,
                       HAS_VALUE=c, SELF_LOOP=c, ROWS=c, BLOCK_E=c, BLOCK_F=c)
            compile_for(K._spmm_kernel, sig, dict(HAS_VALUE=has_value, SELF_LOOP=self_loop, ROWS=rows,
                                                  BLOCK_E=block_e, BLOCK_F=block_f), capability)
            sig = dict(grad_ptr=f"*{dt}", x_ptr=f"*{dt}", dx_ptr=f"*{dt}", **base, dvalue_ptr="*fp32",
                       n=i32, f=i32, nnz=i32, HAS_VALUE=c, SELF_LOOP=c, NORMALIZE=c, ROWS=c, BLOCK_E=c, BLOCK_F=c)
            compile_for(K._value_grad_kernel, sig,
                        dict(HAS_VALUE=has_value, SELF_LOOP=self_loop, NORMALIZE=True, ROWS=rows,
                             BLOCK_E=min(block_e, 64), BLOCK_F=block_f), capability)


@NO_GPU
def test_gcn_triton_kernels_compile_for_sm80_and_sm90():
    run_child(__file__)


if __name__ == "__main__":
    for cap in (80, 90):
        for dtype, index in (("fp32", "i64"), ("bf16", "i32")):
            compile_all(cap, dtype, index)
    print("ok")
