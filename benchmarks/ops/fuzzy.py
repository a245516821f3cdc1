"""fuzzy_loss cases: FACT size B=32, C=40, d=512; large B=4096, C=1000, d=256; each with the
point loss's two logits, variants ``logit=scaled`` (f = λ(μ − δ)) and ``logit=log`` (f = λ·log(μ/δ);
``python -m benchmarks.run --ops fuzzy_loss --variants logit=log`` runs only those).

The harness times every backend and ``torch.compile(reference)``, forward and forward+backward
(gradients to e, s and τ, as FACT learns τ). Kernel launches per step are counted separately,
with torch.profiler, by running this module:

    python -m benchmarks.ops.fuzzy --device cpu --json benchmarks/results/cpu_fuzzy.json

which adds to that JSON (written first by ``benchmarks.run``) a ``launch_counts`` key and the
forward+backward time of ``torch.compile(reference)`` (``compiled_reference_forward_backward``),
which the shared harness does not time for baselines. On CUDA it
counts device kernels; on CPU, where there are no launches, it counts the operator calls issued
to the dispatcher at top level (aten:: / fact_fast:: events not nested in another such event),
which is what becomes a kernel launch each on a GPU.
"""
import argparse
import json
import sys

import torch

from benchmarks.harness import Case
from fact_fast import ops
from fact_fast.ops import reference
from fact_fast.testing.timing import time_fn

SIZES = {"fact": (32, 40, 512), "large": (4096, 1000, 256)}
CPU_SCALE = {"fact": 1.0, "large": 1 / 16}
LOGITS = ("scaled", "log")


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


def _compiled_reference(logit):
    def build(e, s, y, tau):
        fn = torch.compile(reference.fuzzy_loss)
        return lambda: fn(e, s, y, tau, logit=logit)
    return build


def _run(logit):
    return lambda backend, e, s, y, tau: ops.fuzzy_loss(e, s, y, tau, logit=logit, backend=backend)


def logit_of(case: Case) -> str:
    return case.variant.removeprefix("logit=")


CASES = [Case(op="fuzzy_loss", size=s, make=_make(s), run=_run(logit),
              baselines={"torch.compile(reference)": _compiled_reference(logit)}, grad_inputs=("e", "s", "tau"),
              loss=lambda out: out[0].float(), cpu_scale=CPU_SCALE[s], variant=f"logit={logit}")
         for s in SIZES for logit in LOGITS]

_OP_PREFIXES = ("aten::", "fact_fast::")


def _count(prof, device: torch.device) -> dict:
    events = prof.events()
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        return {"kernels": len(kernels), "names": sorted({e.name for e in kernels})}

    def is_op(e):
        return e.name.startswith(_OP_PREFIXES)

    def top_level(e):
        parent = e.cpu_parent
        while parent is not None:
            if is_op(parent):
                return False
            parent = parent.cpu_parent
        return True

    calls = [e.name for e in events if is_op(e) and top_level(e)]
    return {"op_calls": len(calls), "all_op_events": sum(1 for e in events if is_op(e)),
            "names": sorted(set(calls))}


def launch_counts(device: torch.device, dtype: torch.dtype = torch.float32) -> list[dict]:
    """Profiled op calls (CPU) or kernel launches (CUDA) of one forward and one forward+backward step."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    records = []
    for case in CASES:
        scale = 1.0 if device.type == "cuda" else case.cpu_scale
        inputs = case.make(device=device, dtype=dtype, scale=scale)
        entry = {"op": case.op, "size": case.size, "variant": case.variant, "scale": scale, "results": {}}
        for backend in ops.available_backends(case.op, *inputs.values()):
            for k in case.grad_inputs:
                inputs[k].requires_grad_(True)
            step = {}
            for phase in ("forward", "forward_backward"):
                def run():
                    for k in case.grad_inputs:
                        inputs[k].grad = None
                    loss = case.loss(case.run(backend, **inputs))
                    if phase == "forward_backward":
                        loss.backward()
                run()  # warm-up (Triton compilation, allocator)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                with profile(activities=activities) as prof:
                    run()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                step[phase] = _count(prof, device)
            for k in case.grad_inputs:
                inputs[k].requires_grad_(False)
                inputs[k].grad = None
            entry["results"][backend] = step
        records.append(entry)
    return records


def compiled_reference_fwd_bwd(device: torch.device, dtype: torch.dtype = torch.float32, iters: int = 10,
                               max_seconds: float = 5.0) -> list[dict]:
    """Forward+backward of torch.compile(reference) (the harness times baselines forward only)."""
    records = []
    for case in CASES:
        scale = 1.0 if device.type == "cuda" else case.cpu_scale
        inputs = case.make(device=device, dtype=dtype, scale=scale)
        for k in case.grad_inputs:
            inputs[k].requires_grad_(True)
        fn = torch.compile(reference.fuzzy_loss)

        def step():
            for k in case.grad_inputs:
                inputs[k].grad = None
            case.loss(fn(**inputs, logit=logit_of(case))).backward()
        records.append({"op": case.op, "size": case.size, "variant": case.variant, "scale": scale,
                        "forward_backward": time_fn(step, device, 3, iters, max_seconds)})
    return records


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Count kernel launches (CUDA) or op calls (CPU) per fuzzy_loss step")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, help="benchmarks.run output to add a 'launch_counts' key to")
    p.add_argument("--skip-compiled", action="store_true",
                   help="count launches only (no torch.compile(reference) forward+backward timing)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    records = launch_counts(device)
    compiled = [] if args.skip_compiled else compiled_reference_fwd_bwd(device)
    for r in compiled:
        print(f"[{r['op']}/{r['size']}/{r['variant']}] torch.compile(reference) forward+backward "
              f"{r['forward_backward']['median_ms']:.3f} ms", file=sys.stderr)
    for r in records:
        for backend, step in r["results"].items():
            key = "kernels" if device.type == "cuda" else "op_calls"
            print(f"[{r['op']}/{r['size']}/{r['variant']}] {backend:>10}: forward {step['forward'][key]:3d}  "
                  f"forward+backward {step['forward_backward'][key]:3d} {key}", file=sys.stderr)
    if args.json:
        with open(args.json) as f:
            doc = json.load(f)
        doc["launch_counts"] = {"device_type": device.type, "cases": records}
        if compiled:
            doc["compiled_reference_forward_backward"] = compiled
        timed = {(case["op"], case["size"], case.get("variant", "")): case for case in doc.get("cases", [])}
        for extra in compiled:
            case = timed.get((extra["op"], extra["size"], extra["variant"]), {})
            ref = case.get("results", {}).get("reference", {}).get("forward_backward", {}).get("median_ms")
            if ref:
                extra["reference_over_compiled"] = ref / extra["forward_backward"]["median_ms"]
        from benchmarks.run import write_json
        write_json(args.json, doc)
        print(f"updated {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
