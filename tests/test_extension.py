"""The compiled extension: it loads, holds the kernels the build promised, and the package still
works (once warned) when it is missing."""
import os
import subprocess
import sys

import pytest
import torch

from fact_fast import _extension, ops

REQUIRE = os.environ.get("FACT_FAST_REQUIRE_EXTENSION") == "1"
FORCED_CUDA = os.environ.get("FACT_FAST_FORCE_CUDA") == "1"
needs_ext = pytest.mark.skipif(not _extension.load() and not REQUIRE, reason="fact_fast._C not built")


@needs_ext
def test_extension_loads_with_cpu_kernels():
    assert _extension.load(), "fact_fast._C failed to import"
    assert _extension.has_kernel("vq_nearest", "cpu")


@pytest.mark.skipif(not FORCED_CUDA, reason="only meaningful for a FACT_FAST_FORCE_CUDA=1 build")
def test_forced_cuda_build_contains_cuda_kernels():
    # CI builds with the index's nvcc: this proves the CUDA sources compiled and linked into _C.
    assert _extension.built_with_cuda()
    assert _extension.has_kernel("vq_nearest", "cuda")


@needs_ext
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 1e-5),
                                        (torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
def test_compiled_vq_nearest_matches_reference(dtype, atol):
    z = torch.randn(33, 19).to(dtype)
    cb = torch.randn(7, 19).to(dtype)
    index, dist = ops.vq_nearest(z, cb, backend="cpu")
    exact = ((z.double()[:, None] - cb.double()[None]) ** 2).sum(-1)
    chosen = exact.gather(1, index[:, None]).squeeze(1)
    # the chosen codeword is optimal up to rounding of the distance in this dtype
    assert torch.all(chosen - exact.min(1).values <= atol * exact.min(1).values.abs().clamp_min(1) * 4)
    torch.testing.assert_close(dist.double(), chosen, atol=atol * 10, rtol=atol * 10)


@needs_ext
def test_compiled_vq_nearest_opcheck_gradcheck_compile():
    z = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    cb = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    # opcheck without requires_grad: its autograd probe sums all outputs into one tensor, which fails
    # for an op returning int64 and float outputs; gradcheck below covers the autograd registration.
    torch.library.opcheck(torch.ops.fact_fast.vq_nearest.default, (z.detach(), cb.detach()))
    assert torch.autograd.gradcheck(lambda a, b: ops.vq_nearest(a, b, backend="cpu")[1], (z, cb))
    fn = torch.compile(lambda a, b: ops.vq_nearest(a, b, backend="cpu"), fullgraph=True, backend="eager")
    index, _ = fn(z.detach(), cb.detach())
    assert torch.equal(index, ops.vq_nearest(z.detach(), cb.detach(), backend="reference")[0])


@needs_ext
def test_compiled_op_rejects_bad_input_without_crashing():
    with pytest.raises((ValueError, RuntimeError), match="codebook"):
        torch.ops.fact_fast.vq_nearest(torch.randn(3, 2), torch.randn(0, 2))
    with pytest.raises((ValueError, RuntimeError), match="feature size"):
        torch.ops.fact_fast.vq_nearest(torch.randn(3, 2), torch.randn(4, 3))


def test_package_works_and_warns_once_without_extension():
    code = (
        "import sys, warnings\n"
        "sys.modules['fact_fast._C'] = None\n"  # makes `from fact_fast import _C` raise ImportError
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import torch, fact_fast.ops as ops\n"
        "    import fact_fast._extension as ext\n"
        "    ext.load(); ext.load()\n"
        "    idx, _ = ops.vq_nearest(torch.zeros(2, 3), torch.ones(1, 3))\n"
        "msgs = [str(x.message) for x in w if 'fact_fast._C is not available' in str(x.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert ops.available_backends('vq_nearest', torch.zeros(2, 3), torch.ones(1, 3)) == ['reference']\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "default"})
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
