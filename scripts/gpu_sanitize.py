"""compute-sanitizer over fact_fast's CUDA kernels (the ``cuda`` backend), one small case per kernel.

    python scripts/gpu_sanitize.py --tool memcheck                    # every family
    python scripts/gpu_sanitize.py --tool racecheck --families attention
    python scripts/gpu_sanitize.py --cases vq,gcn                     # the cases alone, no sanitizer

Run as a driver it starts ``compute-sanitizer --tool TOOL python scripts/gpu_sanitize.py --cases ...``
with the kernels filtered to fact_fast's own (``--kernel-name kns=fact_fast``; retried without the
filter if this compute-sanitizer rejects it), reads the tool's ERROR SUMMARY and prints one JSON
line (``--json FILE`` also writes it). Exit status: 0 clean, 1 errors found or the cases failed,
2 compute-sanitizer missing or unable to run on this device.

The cases use odd sizes (rows, features and head dims that fill no tile) and every kernel path:
VQ SIMT (fp32) and wmma (fp16/bf16) search, epilogue, z gradient, codebook gradient with atomics
and sorted; GCN SpMM scalar and 16-byte-vector paths, int32 and int64 indices, edge-value
gradient; attention forward scalar and wmma, backward dK/dV and dQ, keys = values; fuzzy forward
(ticket counter) and backward.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

FAMILIES = ("vq", "gcn", "attention", "fuzzy")
KERNEL_FILTER = "kns=fact_fast"  # every kernel of csrc/ lives in namespace fact_fast


def _grad_step(outputs, inputs):
    import torch
    outs = [o for o in outputs if o.requires_grad]
    torch.autograd.grad([o.float().sum() for o in outs], inputs)


def case_vq(device: str, backend: str):
    import torch
    from fact_fast import ops
    for dtype, d in ((torch.float32, 19), (torch.float16, 32), (torch.bfloat16, 48)):
        z = torch.randn(37, d, device=device, dtype=dtype, requires_grad=True)
        codebook = torch.randn(23, d, device=device, dtype=dtype, requires_grad=True)
        index, dist = ops.vq_nearest(z, codebook, backend=backend)
        _grad_step([dist], [z, codebook])
        for deterministic in (False, True):
            v, _, loss = ops.vq_quantize(z, codebook, deterministic=deterministic, backend=backend)
            _grad_step([v, loss], [z, codebook])


def case_gcn(device: str, backend: str):
    import torch
    from fact_fast import ops
    n, nnz = 37, 200
    g = torch.Generator().manual_seed(0)
    row = torch.randint(0, n - 5, (nnz,), generator=g).sort().values  # the last rows have no edges
    rowptr = torch.zeros(n + 1, dtype=torch.int64)
    rowptr[1:] = torch.bincount(row, minlength=n).cumsum(0)
    col = torch.randint(0, n, (nnz,), generator=g)
    for index_dtype in (torch.int64, torch.int32):
        rp, c = rowptr.to(device, index_dtype), col.to(device, index_dtype)
        for dtype, f in ((torch.float32, 13), (torch.float32, 64), (torch.float16, 24), (torch.bfloat16, 8)):
            x = torch.randn(n, f, device=device, dtype=dtype, requires_grad=True)
            value = (torch.rand(nnz, device=device) + 0.5).requires_grad_(True)
            out = ops.gcn_propagate(x, rp, c, value, backend=backend)
            _grad_step([out], [x, value])


def case_attention(device: str, backend: str):
    import torch
    from fact_fast import ops
    for dtype, d in ((torch.float32, 20), (torch.float16, 32), (torch.bfloat16, 64)):
        q = torch.randn(3, 17, d, device=device, dtype=dtype, requires_grad=True)
        k = torch.randn(3, 33, d, device=device, dtype=dtype, requires_grad=True)
        v = torch.randn(3, 33, d + 4, device=device, dtype=dtype, requires_grad=True)
        out = ops.sigmoid_attention(q, k, v, bias=0.1, backend=backend)
        _grad_step([out], [q, k, v])
        e = ops.sigmoid_interface(q[0], k, backend=backend)  # keys = values, residual
        _grad_step([e], [q, k])


def case_fuzzy(device: str, backend: str):
    import torch
    from fact_fast import ops
    for dtype in (torch.float32, torch.bfloat16):
        s = torch.randn(7, 19, device=device, dtype=dtype, requires_grad=True)
        e = (s.detach() + 0.3 * torch.randn(5, 7, 19, device=device, dtype=dtype)).requires_grad_(True)
        tau = torch.tensor(2.0, device=device, requires_grad=True)
        y = torch.rand(5, 7, device=device) < 0.3
        for reduction in ("mean", "none"):
            loss, mu = ops.fuzzy_loss(e, s, y, tau, reduction=reduction, backend=backend)
            _grad_step([loss, mu], [e, s, tau])


CASES = {"vq": case_vq, "gcn": case_gcn, "attention": case_attention, "fuzzy": case_fuzzy}


def run_cases(families: list[str], device: str = "cuda", backend: str = "cuda") -> None:
    """Each family's cases on ``device`` with ``backend`` (CUDA for the sanitizer; cpu to try them here)."""
    import torch
    for family in families:
        CASES[family](device, backend)
        if device == "cuda":
            torch.cuda.synchronize()
        print(f"sanitize case {family}: done", flush=True)


def _errors(output: str) -> int | None:
    match = re.search(r"ERROR SUMMARY:\s*(\d+)\s+error", output)
    return int(match.group(1)) if match else None


def sanitize(tool: str, families: list[str], timeout: float) -> dict:
    exe = shutil.which("compute-sanitizer") or next(
        (p for p in ("/usr/local/cuda/bin/compute-sanitizer",) if os.path.exists(p)), None)
    result = {"tool": tool, "families": families, "kernel_filter": None, "errors": None, "status": "unavailable"}
    if exe is None:
        result["message"] = "compute-sanitizer not found on PATH or in /usr/local/cuda/bin"
        return result
    cases = [sys.executable, os.path.abspath(__file__), "--cases", ",".join(families)]
    for kernel_filter in (KERNEL_FILTER, None):
        cmd = [exe, "--tool", tool, "--error-exitcode", "86", "--print-limit", "20"]
        if kernel_filter:
            cmd += ["--kernel-name", kernel_filter]
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd + cases, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            result.update(status="timeout", seconds=round(time.perf_counter() - start, 1),
                          tail=str(err.stdout or "")[-3000:])
            return result
        output = done.stdout + done.stderr
        print(output[-6000:], flush=True)
        errors = _errors(output)
        result.update(kernel_filter=kernel_filter, errors=errors, exit_code=done.returncode,
                      seconds=round(time.perf_counter() - start, 1), tail=output[-3000:])
        if errors is not None:
            finished = all(f"sanitize case {f}: done" in output for f in families)
            result["status"] = "clean" if errors == 0 and finished and done.returncode == 0 else "errors"
            return result
        if kernel_filter is None:
            break
    result["status"] = "unavailable"  # no ERROR SUMMARY: the tool could not run here (e.g. gVisor)
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tool", default="memcheck", choices=["memcheck", "racecheck", "initcheck", "synccheck"])
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated subset of {FAMILIES}")
    p.add_argument("--cases", default=None, help="run these families' cases in this process (no sanitizer)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for the sanitized run")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cases is not None:
        run_cases([f for f in args.cases.split(",") if f])
        return 0
    families = [f for f in args.families.split(",") if f]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown families {unknown}; choose from {FAMILIES}")
    result = sanitize(args.tool, families, args.timeout)
    line = json.dumps(result)
    print(f"SANITIZER RESULT {line}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    return {"clean": 0, "errors": 1, "timeout": 1}.get(result["status"], 2)


if __name__ == "__main__":
    sys.exit(main())
