"""sigmoid_attention cases (SPEC §5): FACT size B=32, Lq=40, Lk=196, d=512; large B·H=128, L=4096, d=128."""
import torch

from benchmarks.harness import Case
from fact_fast import ops
from fact_fast.ops import reference

SIZES = {"fact": (32, 40, 196, 512), "large": (128, 4096, 4096, 128)}


def _make(size):
    def make(device, dtype, scale):
        b, lq, lk, d = SIZES[size]
        if size == "large":
            b, lq, lk = max(1, int(b * scale)), max(1, int(lq * scale)), max(1, int(lk * scale))
        g = torch.Generator().manual_seed(0)
        return {"q": torch.randn(b, lq, d, generator=g).to(device, dtype),
                "k": torch.randn(b, lk, d, generator=g).to(device, dtype),
                "v": torch.randn(b, lk, d, generator=g).to(device, dtype)}
    return make


def _compiled_reference(q, k, v):
    fn = torch.compile(reference.sigmoid_attention)
    return lambda: fn(q, k, v)


def _sdpa(q, k, v):
    # softmax attention at the same shapes: the speed bar for the large case
    return lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)


CASES = [Case(op="sigmoid_attention", size=s, make=_make(s),
              run=lambda backend, q, k, v: ops.sigmoid_attention(q, k, v, backend=backend),
              baselines={"torch.compile(reference)": _compiled_reference, "torch_sdpa_softmax": _sdpa},
              grad_inputs=("q", "k", "v"), cpu_scale=1.0 if s == "fact" else 1 / 16)
         for s in SIZES]
