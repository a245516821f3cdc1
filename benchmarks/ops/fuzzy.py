"""fuzzy_loss cases (SPEC §5): FACT size B=32, C=40, d=512; large B=4096, C=1000, d=256."""
import torch

from benchmarks.harness import Case
from fact_fast import ops
from fact_fast.ops import reference

SIZES = {"fact": (32, 40, 512), "large": (4096, 1000, 256)}


def _make(size):
    def make(device, dtype, scale):
        b, c, d = SIZES[size]
        if size == "large":
            b = max(1, int(b * scale))
        g = torch.Generator().manual_seed(0)
        s = torch.randn(c, d, generator=g)
        e = s + 0.05 * torch.randn(b, c, d, generator=g)
        y = (torch.rand(b, c, generator=g) < 0.1).float()
        tau = torch.tensor(float(d) * 0.005)
        return {"e": e.to(device, dtype), "s": s.to(device, dtype), "y": y.to(device), "tau": tau.to(device)}
    return make


def _compiled_reference(e, s, y, tau):
    fn = torch.compile(reference.fuzzy_loss)
    return lambda: fn(e, s, y, tau)


CASES = [Case(op="fuzzy_loss", size=s, make=_make(s),
              run=lambda backend, e, s, y, tau: ops.fuzzy_loss(e, s, y, tau, backend=backend),
              baselines={"torch.compile(reference)": _compiled_reference}, grad_inputs=("e", "s"),
              loss=lambda out: out[0].float(), cpu_scale=1.0 if s == "fact" else 1 / 16)
         for s in SIZES]
