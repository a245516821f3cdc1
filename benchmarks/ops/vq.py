"""vq_nearest / vq_quantize cases (docs/design.md §4): FACT size N=32·196, K=1024, d=512; large N=65536, K=8192, d=256.

Baselines: ``torch.compile(reference)`` and, when the ``faiss`` package (faiss-cpu) is importable,
faiss's exact flat L2 search (``IndexFlatL2.search(x, 1)``, on CPU, fp32 copies made outside the
timing) as an outside anchor for ``vq_nearest``. faiss is optional: without it the baseline is left out.
"""
import importlib.util

import torch

from benchmarks.harness import Case
from fact_fast import ops
from fact_fast.ops import reference

SIZES = {"fact": (32 * 196, 1024, 512), "large": (65536, 8192, 256)}


def _make(size):
    def make(device, dtype, scale):
        n, k, d = SIZES[size]
        n = max(1, int(n * scale))
        k = max(1, int(k * scale)) if size == "large" else k
        g = torch.Generator().manual_seed(0)
        return {"z": torch.randn(n, d, generator=g).to(device, dtype),
                "codebook": torch.randn(k, d, generator=g).to(device, dtype)}
    return make


def _compiled_nearest(z, codebook):
    fn = torch.compile(reference.vq_nearest)
    return lambda: fn(z, codebook)


def _compiled_quantize(z, codebook):
    fn = torch.compile(reference.vq_quantize)
    return lambda: fn(z, codebook, 0.25)


def _faiss_flat_l2(z, codebook):
    import faiss  # optional outside anchor (faiss-cpu)
    index = faiss.IndexFlatL2(codebook.shape[1])
    index.add(codebook.detach().float().cpu().contiguous().numpy())
    queries = z.detach().float().cpu().contiguous().numpy()
    return lambda: index.search(queries, 1)


NEAREST_BASELINES = {"torch.compile(reference)": _compiled_nearest}
if importlib.util.find_spec("faiss") is not None:
    NEAREST_BASELINES["faiss.IndexFlatL2 (cpu)"] = _faiss_flat_l2

CASES = []
for _size in SIZES:
    CASES.append(Case(op="vq_nearest", size=_size, make=_make(_size),
                      run=lambda backend, z, codebook: ops.vq_nearest(z, codebook, backend=backend),
                      baselines=dict(NEAREST_BASELINES),
                      grad_inputs=("z", "codebook"), loss=lambda out: out[1].float().sum(),
                      cpu_scale=1.0 if _size == "fact" else 1 / 16))
    CASES.append(Case(op="vq_quantize", size=_size, make=_make(_size),
                      run=lambda backend, z, codebook: ops.vq_quantize(z, codebook, backend=backend),
                      baselines={"torch.compile(reference)": _compiled_quantize},
                      grad_inputs=("z", "codebook"),
                      loss=lambda out: out[0].float().sum() + out[2].float(),
                      cpu_scale=1.0 if _size == "fact" else 1 / 16))
