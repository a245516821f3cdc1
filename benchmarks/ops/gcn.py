"""gcn_propagate cases (SPEC §5): FACT size C=40 labels; large n=1M nodes, nnz=10M, f=128."""
import torch

from benchmarks.harness import Case
from fact_fast import ops
from fact_fast.ops import reference

SIZES = {"fact": (40, 400, 1024), "large": (1_000_000, 10_000_000, 128)}


def random_csr(n: int, nnz: int, device, generator) -> tuple[torch.Tensor, torch.Tensor]:
    row = torch.randint(0, n, (nnz,), generator=generator).sort().values
    col = torch.randint(0, n, (nnz,), generator=generator)
    rowptr = torch.zeros(n + 1, dtype=torch.int64)
    rowptr[1:] = torch.bincount(row, minlength=n).cumsum(0)
    return rowptr.to(device), col.to(device)


def _make(size):
    def make(device, dtype, scale):
        n, nnz, f = SIZES[size]
        n, nnz = max(1, int(n * scale)), max(1, int(nnz * scale))
        g = torch.Generator().manual_seed(0)
        rowptr, col = random_csr(n, nnz, device, g)
        return {"x": torch.randn(n, f, generator=g).to(device, dtype), "rowptr": rowptr, "col": col}
    return make


def _compiled_reference(x, rowptr, col):
    fn = torch.compile(reference.gcn_propagate)
    return lambda: fn(x, rowptr, col)


def _bytes(inputs):
    x, col = inputs["x"], inputs["col"]
    # features read once per edge plus the output written once: the SpMM's unavoidable traffic
    return (col.numel() * x.shape[1] + 2 * x.numel()) * x.element_size() + col.numel() * col.element_size()


CASES = [Case(op="gcn_propagate", size=s, make=_make(s),
              run=lambda backend, x, rowptr, col: ops.gcn_propagate(x, rowptr, col, backend=backend),
              baselines={"torch.compile(reference)": _compiled_reference}, grad_inputs=("x",),
              cpu_scale=1.0 if s == "fact" else 1 / 20, bytes_moved=_bytes)
         for s in SIZES]
