"""sigmoid_attention / sigmoid_interface cases (SPEC §5).

sigmoid_attention: FACT size B=32, Lq=40, Lk=196, d=512; large B·H=128, L=4096, d=128 (scaled on CPU).
sigmoid_interface: FACT's operator with the class queries shared by the batch, q [40, 512], v [32, 196, 512].
Baselines: torch.compile of the reference, and torch SDPA (softmax, flash where available) at the
same shapes, the speed bar of the large case.
"""
import torch

from benchmarks.harness import Case
from fact_fast import ops
from fact_fast.ops import reference

SIZES = {"fact": (32, 40, 196, 512), "large": (128, 4096, 4096, 128)}
INTERFACE = (32, 40, 196, 512)  # B, C, M, d


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


def _make_interface(device, dtype, scale):
    b, c, m, d = INTERFACE
    g = torch.Generator().manual_seed(0)
    return {"q": torch.randn(c, d, generator=g).to(device, dtype),
            "v": torch.randn(b, m, d, generator=g).to(device, dtype)}


def _compiled_interface(q, v):
    fn = torch.compile(reference.sigmoid_interface)
    return lambda: fn(q, v)


def _sdpa_interface(q, v):
    def run():
        return q + torch.nn.functional.scaled_dot_product_attention(q.expand(v.shape[0], *q.shape), v, v)
    return run


CASES.append(Case(op="sigmoid_interface", size="fact", make=_make_interface,
                  run=lambda backend, q, v: ops.sigmoid_interface(q, v, backend=backend),
                  baselines={"torch.compile(reference)": _compiled_interface, "torch_sdpa_softmax": _sdpa_interface},
                  grad_inputs=("q", "v")))
