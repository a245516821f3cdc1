"""Kernel microbenchmarks: every backend of every op against the reference, written as JSON.

    python -m benchmarks.run                       # all ops, the inputs' natural device
    python -m benchmarks.run --ops vq_nearest --sizes fact --dtype bfloat16 --device cuda
    python -m benchmarks.run --ops fuzzy_loss --sizes fact --variants logit=log
    python -m benchmarks.run --out benchmarks/results/cpu_reference.json

On CPU the large cases are scaled down (each case's ``cpu_scale``); the JSON records the scale,
the device name, library versions and every shape.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys

import torch

from benchmarks.harness import run_case
from fact_fast import _extension, ops

FAMILIES = ("vq", "gcn", "attention", "fuzzy")


def all_cases():
    cases = []
    for family in FAMILIES:
        cases += importlib.import_module(f"benchmarks.ops.{family}").CASES
    return cases


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"


def environment(device: torch.device) -> dict:
    env = {"device": device_name(device), "device_type": device.type, "python": platform.python_version(),
           "torch": torch.__version__, "cuda": torch.version.cuda,
           "extension": _extension.load(), "extension_with_cuda": _extension.built_with_cuda(),
           "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    return env


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", default="all", help="comma-separated op names, or 'all'")
    p.add_argument("--sizes", default="fact,large", help="comma-separated case sizes: fact, large")
    p.add_argument("--variants", default="all",
                   help="comma-separated case variants (fuzzy_loss: logit=scaled, logit=log), or 'all'; "
                        "cases without variants always run")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--backends", default="all",
                   help="comma-separated backends to time (reference is always timed), or 'all' available")
    p.add_argument("--no-baselines", action="store_true", help="skip torch.compile and outside-library baselines")
    p.add_argument("--baselines", default="all",
                   help="comma-separated substrings of the baseline names to time (e.g. 'sdpa,sparse'), or 'all'")
    p.add_argument("--no-backward", action="store_true", help="time the forward only")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--max-seconds", type=float, default=10.0, help="time budget per measurement")
    p.add_argument("--cpu-scale", type=float, default=None, help="override every case's CPU scale-down factor")
    p.add_argument("--out", default=None, help="JSON path (default: print only)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    dtype = getattr(torch, args.dtype)
    wanted_ops = None if args.ops == "all" else set(args.ops.split(","))
    sizes = set(args.sizes.split(","))
    variants = None if args.variants == "all" else set(args.variants.split(","))
    known = {case.variant for case in all_cases() if case.variant}
    if variants is not None and variants - known:
        raise SystemExit(f"--variants: unknown {sorted(variants - known)}; the cases have {sorted(known)}")
    records = []
    env = environment(device)
    for case in all_cases():
        if (wanted_ops and case.op not in wanted_ops) or case.size not in sizes:
            continue
        if variants is not None and case.variant and case.variant not in variants:
            continue
        scale = 1.0 if device.type == "cuda" else (args.cpu_scale if args.cpu_scale is not None else case.cpu_scale)
        probe = case.make(device=device, dtype=dtype, scale=scale)
        backends = ops.available_backends(case.op, *probe.values())
        del probe
        if args.backends != "all":
            backends = [b for b in backends if b in set(args.backends.split(",")) | {"reference"}]
        if args.no_baselines:
            case.baselines = {}
        elif args.baselines != "all":
            wanted = [w.strip() for w in args.baselines.split(",") if w.strip()]
            case.baselines = {name: fn for name, fn in case.baselines.items() if any(w in name for w in wanted)}
        label = f"{case.op}/{case.size}" + (f"/{case.variant}" if case.variant else "")
        print(f"[{label}] backends={backends} baselines={list(case.baselines)} scale={scale}",
              file=sys.stderr, flush=True)
        record = run_case(case, backends, device, dtype, scale=scale, warmup=args.warmup, iters=args.iters,
                          max_seconds=args.max_seconds, backward=not args.no_backward)
        records.append(record)
        for name, entry in record["results"].items():
            if "error" in entry:
                print(f"   {name:>22}: ERROR {entry['error']}", file=sys.stderr)
                continue
            fb = entry.get("forward_backward", {}).get("median_ms")
            print(f"   {name:>22}: fwd {entry['forward']['median_ms']:9.3f} ms"
                  f" ({entry.get('speedup_vs_reference', float('nan')):5.2f}x)"
                  + (f"  fwd+bwd {fb:9.3f} ms ({entry.get('speedup_vs_reference_fwd_bwd', float('nan')):5.2f}x)"
                     if fb else "")
                  + f"  peak {entry.get('peak_bytes_forward', 0) / 2**20:8.1f} MiB", file=sys.stderr)
        if args.out:  # after every case: a run stopped by a time limit keeps what it measured
            write_json(args.out, {"environment": env, "config": vars(args), "cases": records, "complete": False})
    doc = {"environment": env, "config": vars(args), "cases": records, "complete": True}
    if args.out:
        write_json(args.out, doc)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(json.dumps(doc, indent=1))
    return 0


def write_json(path: str, doc: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
