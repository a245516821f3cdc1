"""Check every op × backend against the reference on this machine: the first thing to run.

    python -m fact_fast.selftest                    # the current device (a GPU when there is one)
    python -m fact_fast.selftest --quick            # fp32 + bf16, three shapes per op: under a minute
    python -m fact_fast.selftest --device cpu --json selftest.json
    python -m fact_fast.selftest --ops fuzzy_loss --backends triton

It prints the environment (Python, torch, Triton, CUDA, the GPU and its compute capability, the
GPU architectures compiled into ``fact_fast._C``, the backends each op can use here), then runs
each fused backend of each op, forward and backward, in every dtype it supports, on small random
and edge-case inputs (empty, one row, odd sizes, non-contiguous), and compares it with the
reference under the tolerance tables the test suite uses (:mod:`fact_fast.ops.tolerances`).
It prints one row per op × backend × dtype (cases passed, the worst error as a fraction of its
bound, the largest absolute error, forward+backward time of the fused op and of the reference)
and exits non-zero if any check fails. On CPU the Triton backend runs in its interpreter
(TRITON_INTERPRET=1, set here before Triton is first imported, unless ``--no-triton-interpreter``);
its times mean nothing there.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import platform
import statistics
import struct
import sys
import time
import traceback
from typing import Callable, Iterable

import torch

from fact_fast import __version__, _extension


class _ImportedOnUse:
    """A module imported at its first attribute access.

    ``fact_fast.ops`` imports ``torch._dynamo``, which imports ``triton.language``, and ``triton.jit``
    decides when each function is defined whether it is compiled or interpreted: importing the ops
    before :func:`main` has set ``TRITON_INTERPRET`` leaves Triton's own library functions compiled,
    and every interpreted kernel that calls one fails.
    """

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


ops = _ImportedOnUse("fact_fast.ops")
tolerances = _ImportedOnUse("fact_fast.ops.tolerances")

OPS = ("vq_nearest", "vq_quantize", "gcn_propagate", "sigmoid_attention", "sigmoid_interface",
       "fuzzy_membership", "fuzzy_loss")
FUSED = ("cpu", "cuda", "triton")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}
CASES = ("random", "empty", "one_row", "odd", "non_contiguous")
QUICK_DTYPES = ("fp32", "bf16")
QUICK_CASES = ("random", "empty", "non_contiguous")


# --- environment ------------------------------------------------------------------------------------

_FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)


def fatbin_archs(path: str) -> dict[str, list[str]]:
    """GPU code embedded in a shared library: ``{"sass": ["sm_80", ...], "ptx": [...]}``.

    Reads the CUDA fat binaries inside the file (header magic 0xBA55ED50; each entry is machine
    code (kind 2) or PTX (kind 1) with its SM version), as ``cuobjdump --list-elf --list-ptx`` lists them.
    """
    with open(path, "rb") as f:
        data = f.read()
    found: dict[str, set[str]] = {"sass": set(), "ptx": set()}
    pos = data.find(_FATBIN_MAGIC)
    while pos >= 0:
        version, header_size = struct.unpack_from("<HH", data, pos + 4)
        (size,) = struct.unpack_from("<Q", data, pos + 8)
        if version == 1 and header_size == 16 and pos + 16 + size <= len(data):
            entry, end = pos + header_size, pos + header_size + size
            while entry + 32 <= end:
                kind, _, entry_header, payload = struct.unpack_from("<HHII", data, entry)
                (sm,) = struct.unpack_from("<I", data, entry + 28)
                if entry_header == 0 or kind not in (1, 2):
                    break
                found["ptx" if kind == 1 else "sass"].add(f"sm_{sm}")
                entry += entry_header + payload
        pos = data.find(_FATBIN_MAGIC, pos + 4)
    return {kind: sorted(archs, key=lambda a: int(a[3:])) for kind, archs in found.items()}


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


def environment(device: torch.device) -> dict:
    env = {"fact_fast": __version__, "python": platform.python_version(), "platform": platform.platform(),
           "torch": torch.__version__, "torch_cuda": torch.version.cuda, "device": str(device),
           "triton": None, "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1"}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), torch_archs=torch.cuda.get_arch_list())
    env["extension_loaded"] = bool(_extension.load())
    env["extension_with_cuda"] = _extension.built_with_cuda()
    if env["extension_loaded"]:
        from fact_fast import _C
        env["extension_file"] = _C.__file__
        env["extension_archs"] = fatbin_archs(_C.__file__) if _extension.built_with_cuda() else {"sass": [], "ptx": []}
    env["backends"] = {op: ops.available_backends(op, *example_inputs(op, device)) for op in OPS}
    return env


def print_environment(env: dict, out=None) -> None:
    out = out or sys.stdout
    print("fact_fast selftest", file=out)
    rows = [("fact_fast", env["fact_fast"]), ("python", f"{env['python']} ({env['platform']})"),
            ("torch", f"{env['torch']} (CUDA {env['torch_cuda']})"),
            ("triton", f"{env['triton'] or 'not installed'}" + (" (interpreter)" if env["triton_interpret"] else "")),
            ("device", env["device"])]
    if "gpu" in env:
        rows.append(("gpu", f"{env['gpu']}, compute capability {env['capability']}, {env['sms']} SMs, "
                            f"{env['gpu_memory_gib']} GiB"))
    if not env["extension_loaded"]:
        rows.append(("fact_fast._C", "not built: the cpu and cuda backends are disabled"))
    else:
        archs = env["extension_archs"]
        built = (f"CUDA code for {', '.join(archs['sass']) or 'no GPU'}"
                 + (f", PTX {', '.join(archs['ptx'])}" if archs["ptx"] else ", no PTX")) if env["extension_with_cuda"] \
            else "CPU kernels only (built without CUDA)"
        rows.append(("fact_fast._C", built))
    for name, value in rows:
        print(f"  {name:<13} {value}", file=out)
    print("  backends (fp32 inputs on this device):", file=out)
    for op, names in env["backends"].items():
        print(f"    {op:<18} {', '.join(names)}", file=out)


# --- comparisons ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Check:
    what: str
    ratio: float  # worst error as a fraction of its bound: passes when <= 1
    max_abs: float


def close(what: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float,
          dtype: torch.dtype = torch.float64) -> Check:
    """|actual − expected| ≤ atol + rtol·|expected| elementwise (both cast to ``dtype``); NaN only matches NaN."""
    if tuple(actual.shape) != tuple(expected.shape):
        return Check(f"{what} shape {tuple(actual.shape)} != {tuple(expected.shape)}", math.inf, math.inf)
    if actual.numel() == 0:
        return Check(what, 0.0, 0.0)
    a, b = actual.detach().to("cpu", dtype).double(), expected.detach().to("cpu", dtype).double()
    both_nan = torch.isnan(a) & torch.isnan(b)
    diff = torch.where(both_nan, torch.zeros_like(a), (a - b).abs())
    diff = torch.nan_to_num(diff, nan=math.inf)
    ratio = (diff / (atol + rtol * b.abs().nan_to_num(0.0))).max().item()
    return Check(what, 0.0 if diff.max().item() == 0 else ratio, diff.max().item())


def flash(what: str, actual: torch.Tensor, ref_lp: torch.Tensor, ref64: torch.Tensor, dtype: torch.dtype) -> Check:
    """The attention family's rule: max|actual − ref64| ≤ factor·max|ref_lp − ref64| + atol."""
    if tuple(actual.shape) != tuple(ref64.shape):
        return Check(f"{what} shape {tuple(actual.shape)} != {tuple(ref64.shape)}", math.inf, math.inf)
    ref64 = ref64.detach().cpu()
    err = (actual.detach().cpu().double() - ref64).abs().max().item() if ref64.numel() else 0.0
    err = math.inf if math.isnan(err) else err
    return Check(what, err / tolerances.flash_bound(ref_lp.detach().cpu(), ref64, dtype), err)


def exact(what: str, actual: torch.Tensor, expected: torch.Tensor) -> Check:
    ok = tuple(actual.shape) == tuple(expected.shape) and torch.equal(actual.cpu(), expected.cpu())
    return Check(what, 0.0 if ok else math.inf, 0.0 if ok else math.inf)


def vq_index(what: str, z: torch.Tensor, codebook: torch.Tensor, index: torch.Tensor) -> Check:
    """Each index is the exact nearest codeword up to the rounding band of tolerances.VQ_INDEX_REL."""
    index = index.detach().cpu().reshape(-1)
    flat = z.detach().reshape(-1, z.shape[-1])
    if index.numel() == 0:
        return Check(what, 0.0, 0.0)
    if index.min() < 0 or index.max() >= codebook.shape[0]:
        return Check(what + " out of range", math.inf, math.inf)
    dist = (flat.double().cpu()[:, None, :] - codebook.detach().double().cpu()[None]).pow(2).sum(-1)
    excess = dist.gather(1, index[:, None]).squeeze(1) - dist.min(1).values
    band = tolerances.vq_index_band(flat, codebook)
    return Check(what, (excess / band).max().item(), excess.max().item())


# --- inputs -----------------------------------------------------------------------------------------

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
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if o.requires_grad]
    if not pairs:
        return [torch.zeros_like(t) for t in inputs]
    got = torch.autograd.grad([o for o, _ in pairs], inputs, [c for _, c in pairs], allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(got, inputs)]


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


# --- one check function per op: (backend, dtype, case, device) -> (checks, timed callables) ---------
#
# Each returns a list of Check and a pair of zero-argument callables (fused, reference) that run the
# case forward + backward once, for timing.

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


CHECKS: dict[str, Callable] = {
    "vq_nearest": check_vq_nearest, "vq_quantize": check_vq_quantize, "gcn_propagate": check_gcn_propagate,
    "sigmoid_attention": check_sigmoid_attention, "sigmoid_interface": check_sigmoid_interface,
    "fuzzy_membership": check_fuzzy_membership, "fuzzy_loss": check_fuzzy_loss,
}


# --- running ----------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    fn()  # warm-up (compilation, autotuning)
    times = []
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run_one(op: str, backend: str, dtype: torch.dtype, case: str, device: torch.device, time_reps: int) -> dict:
    record = {"op": op, "backend": backend, "dtype": DTYPE_NAME[dtype], "case": case}
    try:
        checks, (fused, ref) = CHECKS[op](backend, dtype, case, device)
        _sync(device)
    except ops.BackendUnavailableError as err:
        return {**record, "status": "skip", "message": str(err)}
    except Exception as err:  # noqa: BLE001 - a crashing backend is a failure to report, not to raise
        return {**record, "status": "error", "message": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(limit=8)}
    worst = max(checks, key=lambda c: c.ratio)
    record.update(status="pass" if all(c.ratio <= 1.0 for c in checks) else "fail",
                  worst=worst.what, worst_ratio=worst.ratio, max_abs_err=max(c.max_abs for c in checks),
                  checks=[dataclasses.asdict(c) for c in checks])
    if time_reps and case == "random" and record["status"] == "pass":
        record["ms"] = median_ms(fused, device, time_reps)
        record["reference_ms"] = median_ms(ref, device, time_reps)
    return record


DTYPE_NAME = {v: k for k, v in DTYPES.items()}


def backends_for(op: str, dtype: torch.dtype, device: torch.device, wanted: Iterable[str]) -> list[str]:
    can = ops.available_backends(op, *example_inputs(op, device, dtype))
    return [b for b in FUSED if b in can and b in wanted]


def _fmt(x: float | None, spec: str) -> str:
    """``x`` formatted with ``spec``; "-" (or "inf") padded to the same width."""
    width = int(spec.split(".")[0] or 0)
    if x is None or math.isinf(x):
        return ("-" if x is None else "inf").rjust(width)
    return format(x, spec)


def summarize_group(records: list[dict]) -> dict:
    done = [r for r in records if r["status"] in ("pass", "fail")]
    return {"passed": sum(r["status"] == "pass" for r in records), "total": len(records),
            "failed": [r for r in records if r["status"] in ("fail", "error")],
            "worst_ratio": max((r["worst_ratio"] for r in done), default=None),
            "max_abs_err": max((r["max_abs_err"] for r in done), default=None),
            "ms": next((r.get("ms") for r in records if r.get("ms") is not None), None),
            "reference_ms": next((r.get("reference_ms") for r in records if r.get("reference_ms") is not None), None)}


HEADER = (f"{'op':<18} {'backend':<7} {'dtype':<5} {'cases':>5} {'result':<6} {'err/bound':>9} "
          f"{'max|err|':>9} {'fwd+bwd ms':>10} {'ref ms':>8}")


def format_row(op: str, backend: str, dtype_name: str, group: dict) -> str:
    result = "PASS" if not group["failed"] else "FAIL"
    return (f"{op:<18} {backend:<7} {dtype_name:<5} {group['passed']:>2}/{group['total']:<2} {result:<6} "
            f"{_fmt(group['worst_ratio'], '9.3f')} {_fmt(group['max_abs_err'], '9.2e')} "
            f"{_fmt(group['ms'], '10.3f')} {_fmt(group['reference_ms'], '8.3f')}")


def _strict(obj):
    """Infinite or NaN floats as strings, so the JSON file is standard JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fact_fast.selftest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--ops", default="all", help=f"comma-separated subset of {', '.join(OPS)}")
    p.add_argument("--backends", default="all", help="comma-separated subset of cpu, cuda, triton")
    p.add_argument("--dtypes", default=None, help="comma-separated subset of fp32, fp16, bf16, fp64 "
                                                  "(default: all; --quick: fp32, bf16)")
    p.add_argument("--quick", action="store_true", help=f"dtypes {', '.join(QUICK_DTYPES)} and cases "
                                                        f"{', '.join(QUICK_CASES)} only, no timing")
    p.add_argument("--time-reps", type=int, default=None, help="timed repetitions per op (default 10; --quick: 0)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the environment and every result here")
    p.add_argument("--no-triton-interpreter", action="store_true",
                   help="on CPU, do not set TRITON_INTERPRET=1 (Triton is then not checked there)")
    return p.parse_args(argv)


def _subset(value: str | None, allowed: Iterable[str], what: str, default: Iterable[str]) -> list[str]:
    allowed = list(allowed)
    if value is None or value == "all":
        return list(default)
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        raise SystemExit(f"selftest: unknown {what} {unknown}; choose from {allowed}")
    return chosen


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise SystemExit(f"selftest: bad --device {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("selftest: --device cuda but torch sees no CUDA GPU")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"selftest: --device must be cpu or cuda, got {name!r}")
    return device


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cpu" and not args.no_triton_interpreter:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before fact_fast.ops (and so triton) is imported
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    ops_ = _subset(args.ops, OPS, "op", OPS)
    backends = _subset(args.backends, FUSED, "backend", FUSED)
    dtype_names = _subset(args.dtypes, DTYPES, "dtype", QUICK_DTYPES if args.quick else DTYPES)
    cases = QUICK_CASES if args.quick else CASES
    time_reps = args.time_reps if args.time_reps is not None else (0 if args.quick else 10)

    env = environment(device)
    print_environment(env)
    print(f"\nchecks: {len(cases)} cases per op, backend and dtype ({', '.join(cases)}); "
          "forward and backward against the reference\n")
    print(HEADER)
    print("-" * len(HEADER))
    records, failures = [], []
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # the reference must not run in TF32
    try:
        for op in ops_:
            for dtype_name in dtype_names:
                dtype = DTYPES[dtype_name]
                for backend in backends_for(op, dtype, device, backends):
                    group = [run_one(op, backend, dtype, case, device, time_reps) for case in cases]
                    group = [r for r in group if r["status"] != "skip"]
                    if not group:
                        continue
                    records += group
                    summary = summarize_group(group)
                    failures += summary["failed"]
                    print(format_row(op, backend, dtype_name, summary), flush=True)
                    if args.json:  # after every row: a run stopped by a time limit keeps its results
                        write_json(args.json, env, args, records, complete=False)
    finally:
        torch.set_float32_matmul_precision(previous)
    if not records:
        print("(no fused backend can run on this device: only the reference is available)")
    for r in failures:
        detail = (f"{r['worst']}: error {_fmt(r['worst_ratio'], '.3g')}× its bound" if r["status"] == "fail"
                  else r["message"])
        print(f"FAILED {r['op']} {r['backend']} {r['dtype']} {r['case']}: {detail}")
    totals = count(records)
    print(f"\n{totals['passed']} passed, {totals['failed']} failed, {totals['errors']} errors "
          f"({len(records)} checks on {device})")
    if args.json:
        write_json(args.json, env, args, records, complete=True)
    return 0 if totals["failed"] == 0 and totals["errors"] == 0 else 1


def count(records: list[dict]) -> dict:
    return {status: sum(r["status"] == key for r in records)
            for status, key in (("passed", "pass"), ("failed", "fail"), ("errors", "error"))}


def write_json(path: str, env: dict, args: argparse.Namespace, records: list[dict], complete: bool) -> None:
    doc = {"environment": env, "config": vars(args), "complete": complete, "summary": count(records),
           "results": records}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(_strict(doc), f, indent=1, default=str, allow_nan=False)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
