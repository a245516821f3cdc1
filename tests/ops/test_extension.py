"""The compiled extension: it loads, holds the kernels the build promised, and the package still
works (once warned) when it is missing."""
import os
import subprocess
import sys

import pytest
import torch

from fact_fast import _extension

REQUIRE = os.environ.get("FACT_FAST_REQUIRE_EXTENSION") == "1"
FORCED_CUDA = os.environ.get("FACT_FAST_FORCE_CUDA") == "1"
# one compiled forward op per kernel family
FORWARD_OPS = ("vq_nearest", "vq_quantize", "gcn_spmm", "sigmoid_attention", "sigmoid_attention_kv", "fuzzy_loss",
               "fuzzy_membership")
needs_ext = pytest.mark.skipif(not _extension.load() and not REQUIRE, reason="fact_fast._C not built")


@needs_ext
def test_extension_loads_with_cpu_kernels():
    assert _extension.load(), "fact_fast._C failed to import"
    assert _extension.has_kernel("vq_nearest", "cpu")


@pytest.mark.skipif(not FORCED_CUDA, reason="only meaningful for a FACT_FAST_FORCE_CUDA=1 build")
def test_forced_cuda_build_contains_cuda_kernels():
    # CI builds with the index's nvcc: this proves the CUDA sources compiled and linked into _C.
    assert _extension.built_with_cuda()
    for op in FORWARD_OPS:
        assert _extension.has_kernel(op, "cuda"), op


@needs_ext
def test_every_compiled_op_has_cpu_kernel():
    for op in FORWARD_OPS:
        assert _extension.has_kernel(op, "cpu"), op
    if _extension.built_with_cuda():
        cpu = {op for op, dev in _extension._state["kernels"] if dev == "cpu"}
        cuda = {op for op, dev in _extension._state["kernels"] if dev == "cuda"}
        assert cpu == cuda, f"ops with a CPU but no CUDA kernel: {sorted(cpu - cuda)}"


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
        "avail = ops.available_backends('vq_nearest', torch.zeros(2, 3), torch.ones(1, 3))\n"
        "assert 'cpu' not in avail and 'cuda' not in avail and 'reference' in avail, avail\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "default"})
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
