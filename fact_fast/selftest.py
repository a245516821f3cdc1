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
import json
import math
import os
import sys
from collections.abc import Iterable

import torch

from fact_fast.testing.matrix import CASES, DTYPES, FUSED, OPS, QUICK_CASES, QUICK_DTYPES

__all__ = ["main", "parse_args", "HEADER"]


def print_environment(env: dict, out=None) -> None:
    """The environment of :func:`fact_fast.testing.environment.environment`, one line per item."""
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


def _fmt(x: float | None, spec: str) -> str:
    """``x`` formatted with ``spec``; "-" (or "inf") padded to the same width."""
    width = int(spec.split(".")[0] or 0)
    if x is None or math.isinf(x):
        return ("-" if x is None else "inf").rjust(width)
    return format(x, spec)


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
        os.environ.setdefault("TRITON_INTERPRET", "1")
    # Imported only now: the harness imports fact_fast.ops, which imports torch._dynamo and so
    # triton.language, and triton.jit decides when each function is defined whether it is compiled
    # or interpreted. Imported before TRITON_INTERPRET is set, Triton's own library functions stay
    # compiled and every interpreted kernel that calls one fails.
    from fact_fast.testing.environment import environment
    from fact_fast.testing.run import backends_for, count, run_one, summarize_group
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
                        write_json(args.json, env, args, records, count(records), complete=False)
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
        write_json(args.json, env, args, records, totals, complete=True)
    return 0 if totals["failed"] == 0 and totals["errors"] == 0 else 1


def write_json(path: str, env: dict, args: argparse.Namespace, records: list[dict], summary: dict,
               complete: bool) -> None:
    """The environment, the options, whether the run finished, the ``summary`` counts and every
    record, written atomically (standard JSON: non-finite floats as strings)."""
    doc = {"environment": env, "config": vars(args), "complete": complete, "summary": summary, "results": records}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(_strict(doc), f, indent=1, default=str, allow_nan=False)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
