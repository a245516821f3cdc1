"""One check per op: for a (backend, dtype, case, device) the op's inputs, its forward and backward
against the reference (or float64 oracles), as a list of :class:`~fact_fast.testing.compare.Check`
and a pair of zero-argument callables (fused, reference) that run the case forward + backward once,
for timing. The cases are :data:`fact_fast.testing.matrix.CASES`; inputs are deterministic."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from fact_fast import ops
from fact_fast.ops import tolerances

from .compare import close, exact, flash, vq_index

__all__ = ["CHECKS", "Inputs", "strided", "example_inputs"]


def example_inputs(op: str, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple:
    """Small positional arguments for ``ops.available_backends(op, ...)``."""
    z = torch.zeros(2, 3, dtype=dtype, device=device)
    if op in ("vq_nearest",):
        return z, z, False
    if op == "vq_quantize":
        return z, z, 0.25, False
    if op == "gcn_propagate":
        index = torch.zeros(3, dtype=torch.int64, device=device)
        return z, index, index[:0], None, True, True
    if op == "sigmoid_attention":
        return z, z, z, 1.0, 0.0
    if op == "sigmoid_interface":
        return z, z[None], 0.0
    e, s = torch.zeros(2, 3, 4, dtype=dtype, device=device), torch.zeros(3, 4, dtype=dtype, device=device)
    if op == "fuzzy_membership":
        return e, s, 1.0, "gaussian"
    return e, s, z, 1.0, 1.0, 10.0, 0.5, 1.0, "mean", None


class Inputs:
    """Deterministic random inputs made on the CPU in float64, then moved and cast."""

    def __init__(self, device: torch.device, dtype: torch.dtype, seed: int):
        self.device, self.dtype = device, dtype
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale: float = 1.0, dtype: torch.dtype | None = None) -> torch.Tensor:
        t = torch.randn(*shape, generator=self.gen, dtype=torch.float64) * scale
        return t.to(self.device, dtype or self.dtype)

    def rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.gen, dtype=torch.float64).to(self.device)


def strided(t: torch.Tensor) -> torch.Tensor:
    """Same values as ``t`` with a stride of 2 along the last dimension (not contiguous)."""
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    return wide[..., ::2]


def grads(outputs: Iterable[torch.Tensor], cotangents: Iterable[torch.Tensor], inputs: list[torch.Tensor]):
    """Gradients of ``inputs`` through the ``outputs`` that require grad, weighted by their
    ``cotangents``; zeros where an input gets none."""
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if o.requires_grad]
    if not pairs:
        return [torch.zeros_like(t) for t in inputs]
    got = torch.autograd.grad([o for o, _ in pairs], inputs, [c for _, c in pairs], allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(got, inputs)]


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Fresh copies of ``tensors`` that require grad."""
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _fuzzy_case(case: str) -> tuple[int, int, int]:
    return {"random": (6, 9, 33), "empty": (0, 5, 8), "one_row": (1, 5, 16), "odd": (5, 7, 19),
            "non_contiguous": (4, 6, 10)}[case]


def _fuzzy_inputs(case, dtype, device, seed):
    b, c, d = _fuzzy_case(case)
    r = Inputs(device, dtype, seed)
    s64 = r.randn(c, d, dtype=torch.float64)
    e = (s64 + r.randn(b, c, d, scale=0.3, dtype=torch.float64)).to(dtype)
    s, y = s64.to(dtype), (r.rand(b, c) < 0.3).float()
    tau = torch.tensor(max(2 * 0.3 ** 2 * d, 1e-3), dtype=torch.float64 if dtype == torch.float64 else torch.float32,
                       device=device)
    if case == "non_contiguous":
        e, s, y = strided(e), strided(s), strided(y)
    w = r.randn(b, c, dtype=torch.float32)
    return e, s, y, tau, w


def check_fuzzy_loss(backend, dtype, case, device):
    e, s, y, tau, w = _fuzzy_inputs(case, dtype, device, seed=11)
    atol, rtol = tolerances.fuzzy(dtype, device.type)

    def run(name, logit):
        ee, ss, tt = leaves(e, s, tau)
        loss, mu = ops.fuzzy_loss(ee, ss, y, tt, logit=logit, backend=name)
        total = loss.float().sum() + (mu.float() * w).sum()
        return [loss, mu] + grads([total], [torch.ones_like(total)], [ee, ss, tt])

    checks = []
    for logit in ("scaled", "log"):  # the point loss's two logits have their own kernel paths
        got, want = run(backend, logit), run("reference", logit)
        suffix = "" if logit == "scaled" else " (log logit)"
        checks += [close(n + suffix, g, r, atol, rtol, torch.float32)
                   for n, g, r in zip(("loss", "mu", "de", "ds", "dtau"), got, want)]
    return checks, (lambda: run(backend, "scaled"), lambda: run("reference", "scaled"))


def check_fuzzy_membership(backend, dtype, case, device):
    e, s, _, tau, w = _fuzzy_inputs(case, dtype, device, seed=12)
    atol, rtol = tolerances.fuzzy(dtype, device.type)

    def run(name):
        ee, ss, tt = leaves(e, s, tau)
        if name == "reference":  # in the fused kernels' accumulation dtype, like them
            acc = torch.float64 if dtype == torch.float64 else torch.float32
            mu = ops.fuzzy_membership(ee.to(acc), ss.to(acc), tt.to(acc), backend=name).to(dtype)
        else:
            mu = ops.fuzzy_membership(ee, ss, tt, backend=name)
        return [mu] + grads([mu], [w.to(mu.dtype)], [ee, ss, tt])

    got, want = run(backend), run("reference")
    checks = [close(n, g, r, atol, rtol, torch.float32) for n, g, r in zip(("mu", "de", "ds", "dtau"), got, want)]
    return checks, (lambda: run(backend), lambda: run("reference"))


def random_csr(n: int, nnz: int, r: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Random CSR (duplicates and self loops likely); the last quarter of the rows has no edges."""
    live = max(n - n // 4, 1)
    row = torch.randint(0, live, (nnz,), generator=r.gen).sort().values
    col = torch.randint(0, max(n, 1), (nnz,), generator=r.gen)
    rowptr = torch.zeros(n + 1, dtype=torch.int64)
    if n:
        rowptr[1:] = torch.bincount(row, minlength=n).cumsum(0)
    return rowptr.to(r.device), col.to(r.device)


def check_gcn_propagate(backend, dtype, case, device):
    n, nnz, f = {"random": (12, 40, 24), "empty": (0, 0, 8), "one_row": (1, 1, 3), "odd": (11, 30, 9),
                 "non_contiguous": (10, 35, 6)}[case]
    r = Inputs(device, dtype, seed=13)
    rowptr, col = random_csr(n, nnz, r)
    if case == "odd":
        rowptr, col = rowptr.int(), col.int()
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    value = (r.rand(nnz) + 0.25).to(compute)
    x, g = r.randn(n, f), r.randn(n, f)
    if case == "non_contiguous":
        x = strided(x)
    atol, rtol = tolerances.gcn(dtype, device.type)

    def run(name):
        xx, vv = leaves(x, value)
        out = ops.gcn_propagate(xx, rowptr, col, vv, backend=name)
        return [out] + grads([out], [g], [xx, vv])

    got, want = run(backend), run("reference")
    checks = [close("out", got[0], want[0], atol, rtol, torch.float32),
              close("dx", got[1], want[1], atol, rtol, torch.float32),
              close("dvalue", got[2], want[2], *tolerances.gcn_value_grad(dtype, device.type), torch.float32)]
    return checks, (lambda: run(backend), lambda: run("reference"))


def _attention_shapes(case):
    return {"random": ((2, 7, 32), (2, 13, 32), (2, 13, 32)), "empty": ((0, 4, 16), (0, 6, 16), (0, 6, 16)),
            "one_row": ((3, 1, 24), (3, 9, 24), (3, 9, 24)), "odd": ((3, 17, 20), (3, 33, 20), (3, 33, 12)),
            "non_contiguous": ((3, 17, 20), (3, 33, 20), (3, 33, 12))}[case]


def _flash_checks(names, got, ref_lp, ref64, dtype):
    return [flash(n, g, lp, r64, dtype) for n, g, lp, r64 in zip(names, got, ref_lp, ref64)]


def check_sigmoid_attention(backend, dtype, case, device):
    r = Inputs(device, dtype, seed=14)
    q, k, v = (r.randn(*shape, scale=0.8) for shape in _attention_shapes(case))
    if case == "non_contiguous":
        q, k, v = strided(q), strided(k).transpose(0, 1).contiguous().transpose(0, 1), strided(v)
    g = r.randn(q.shape[0], q.shape[1], v.shape[2])

    def run(name, inputs):
        qq, kk, vv = leaves(*inputs)
        out = ops.sigmoid_attention(qq, kk, vv, bias=0.1, backend=name)
        return [out] + grads([out], [g.to(out.dtype)], [qq, kk, vv])

    got = run(backend, (q, k, v))
    ref_lp, ref64 = run("reference", (q, k, v)), run("reference", [t.double() for t in (q, k, v)])
    checks = _flash_checks(("out", "dq", "dk", "dv"), got, ref_lp, ref64, dtype)
    return checks, (lambda: run(backend, (q, k, v)), lambda: run("reference", (q, k, v)))


def check_sigmoid_interface(backend, dtype, case, device):
    (c, d), (b, m, _) = {"random": ((6, 40), (4, 19, 40)), "empty": ((5, 16), (0, 7, 16)),
                         "one_row": ((1, 16), (1, 5, 16)), "odd": ((7, 20), (3, 11, 20)),
                         "non_contiguous": ((7, 20), (3, 11, 20))}[case]
    r = Inputs(device, dtype, seed=15)
    q, v = r.randn(c, d, scale=0.8), r.randn(b, m, d, scale=0.8)
    if case == "non_contiguous":
        q, v = strided(q), strided(v)
    g = r.randn(b, c, d)

    def run(name, inputs):
        qq, vv = leaves(*inputs)
        out = ops.sigmoid_interface(qq, vv, bias=-0.5, backend=name)
        return [out] + grads([out], [g.to(out.dtype)], [qq, vv])

    got = run(backend, (q, v))
    ref_lp, ref64 = run("reference", (q, v)), run("reference", [t.double() for t in (q, v)])
    checks = _flash_checks(("out", "dq", "dv"), got, ref_lp, ref64, dtype)
    return checks, (lambda: run(backend, (q, v)), lambda: run("reference", (q, v)))


def check_vq_nearest(backend, dtype, case, device):
    n, k, d = {"random": (33, 17, 19), "empty": (0, 5, 7), "one_row": (1, 9, 16), "odd": (65, 7, 40),
               "non_contiguous": (37, 23, 18)}[case]
    r = Inputs(device, dtype, seed=16)
    z, codebook = r.randn(n, d), r.randn(k, d)
    if case == "non_contiguous":
        z, codebook = strided(z), strided(codebook)
    gd = r.rand(n).to(dtype)
    atol, rtol = tolerances.VQ[dtype]

    def run(name):
        zz, cc = leaves(z, codebook)
        index, dist = ops.vq_nearest(zz, cc, backend=name)
        return [index, dist] + grads([dist], [gd], [zz, cc])

    index, dist, dz, dcb = run(backend)
    idx = index.cpu()
    z64, cb64 = z.double().cpu(), codebook.double().cpu()
    residual = z64 - cb64[idx]
    oracle_dz = 2 * gd.double().cpu()[:, None] * residual
    oracle_dcb = torch.zeros_like(cb64).index_add_(0, idx, -oracle_dz)
    checks = [vq_index("index", z, codebook, index),
              close("dist", dist, residual.pow(2).sum(1), atol, rtol),
              close("dz", dz, oracle_dz, atol, rtol), close("dcodebook", dcb, oracle_dcb, atol, rtol)]
    return checks, (lambda: run(backend), lambda: run("reference"))


def check_vq_quantize(backend, dtype, case, device):
    shape, k = {"random": ((3, 7, 19), 11), "empty": ((0, 6), 4), "one_row": ((1, 5), 1),
                "odd": ((45, 32), 40), "non_contiguous": ((50, 21), 9)}[case]
    r = Inputs(device, dtype, seed=17)
    z, codebook = r.randn(*shape), r.randn(k, shape[-1])
    if case == "non_contiguous":
        z = strided(z)
    gv, gl, beta = r.randn(*shape), 1.7, 0.3
    atol, rtol = tolerances.VQ[dtype]

    def run(name):
        zz, cc = leaves(z, codebook)
        v, index, loss = ops.vq_quantize(zz, cc, beta, backend=name)
        return [v, index, loss] + grads([v, loss], [gv, torch.tensor(gl, dtype=loss.dtype, device=device)], [zz, cc])

    v, index, loss, dz, dcb = run(backend)
    idx = index.reshape(-1).cpu()
    z64, cb64 = z.reshape(-1, shape[-1]).double().cpu(), codebook.double().cpu()
    zq, denom = cb64[idx], max(z64.numel(), 1)
    oracle_loss = (1 + beta) * (z64 - zq).pow(2).sum() / denom
    oracle_dz = gv.reshape(-1, shape[-1]).double().cpu() + gl * 2 * beta * (z64 - zq) / denom
    oracle_dcb = torch.zeros_like(cb64).index_add_(0, idx, gl * 2 * (zq - z64) / denom)
    checks = [vq_index("index", z, codebook, index),
              exact("v = codebook[index]", v, codebook[index]),
              close("loss", loss, oracle_loss, atol, rtol),
              close("dz", dz.reshape(-1, shape[-1]), oracle_dz, atol, rtol),
              close("dcodebook", dcb, oracle_dcb, atol, rtol)]
    return checks, (lambda: run(backend), lambda: run("reference"))


# op -> check(backend, dtype, case, device) -> (checks, (fused, reference) timed callables)
CHECKS: dict[str, Callable] = {
    "vq_nearest": check_vq_nearest, "vq_quantize": check_vq_quantize, "gcn_propagate": check_gcn_propagate,
    "sigmoid_attention": check_sigmoid_attention, "sigmoid_interface": check_sigmoid_interface,
    "fuzzy_membership": check_fuzzy_membership, "fuzzy_loss": check_fuzzy_loss,
}
