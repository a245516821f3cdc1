"""Memory measurement and the benchmark case shared by the op benchmarks; the timing loop is the
op-checking harness's (:func:`fact_fast.testing.timing.time_fn`).

A benchmark *case* builds inputs for one op at one size; every backend that can run them (from
``fact_fast.ops.available_backends``) is timed, plus the case's extra baselines (torch.compile of
the reference, outside libraries), forward only and forward + backward.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field
from collections.abc import Callable

import torch

from fact_fast.testing.timing import time_fn


@dataclass
class Case:
    """One op at one size.

    make(device, dtype, scale) -> dict of keyword inputs; ``scale`` < 1 shrinks large cases on CPU.
    run(backend, **inputs) -> output tensor(s) (backend is a fact_fast backend name).
    baselines: name -> builder(**inputs) returning a zero-argument callable (forward only); a ``note``
        attribute on it is recorded in the JSON (e.g. which SDPA backend really ran).
    loss(output) -> scalar for the forward+backward timing (default: sum of the first float output).
    variant: what tells apart cases of one op and size that run the same inputs differently (e.g.
        "logit=log" for fuzzy_loss's point-loss logit); recorded in the JSON when set.
    """
    op: str
    size: str
    make: Callable[..., dict]
    run: Callable[..., object]
    baselines: dict[str, Callable[..., Callable[[], object]]] = field(default_factory=dict)
    grad_inputs: tuple[str, ...] = ()
    loss: Callable[[object], torch.Tensor] | None = None
    cpu_scale: float = 1.0
    bytes_moved: Callable[[dict], int] | None = None  # for achieved bandwidth, when meaningful
    variant: str = ""


def _first_float(out) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = next(o for o in out if isinstance(o, torch.Tensor) and o.is_floating_point())
    return out.float().sum()


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated by one call beyond what was allocated before it.

    CUDA: the caching allocator's peak counter. CPU: the profiler's allocation events, summed in
    time order (an estimate of the op's own working memory).
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        del out
        return int(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage != 0), key=lambda e: e.time_range.start)
    current = peak = 0
    for e in events:
        current += e.self_cpu_memory_usage
        peak = max(peak, current)
    return int(peak)


def run_case(case: Case, backends: list[str], device: torch.device, dtype: torch.dtype, *, scale: float,
             warmup: int, iters: int, max_seconds: float, backward: bool) -> dict:
    inputs = case.make(device=device, dtype=dtype, scale=scale)
    shapes = {k: list(v.shape) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    result = {"op": case.op, "size": case.size, "dtype": str(dtype).replace("torch.", ""), "scale": scale,
              "shapes": shapes, "results": {}}
    if case.variant:
        result["variant"] = case.variant
    loss = case.loss or _first_float

    def forward_of(name: str) -> Callable[[], object]:
        if name in case.baselines:
            return case.baselines[name](**inputs)
        return lambda: case.run(name, **inputs)

    for name in backends + list(case.baselines):
        entry: dict = {}
        try:
            fwd = forward_of(name)
            if getattr(fwd, "note", None):  # e.g. which SDPA backend a baseline really ran
                entry["note"] = fwd.note
            with torch.no_grad():
                entry["forward"] = time_fn(fwd, device, warmup, iters, max_seconds)
                entry["peak_bytes_forward"] = peak_memory_bytes(fwd, device)
            if backward and case.grad_inputs and name not in case.baselines:
                def fwd_bwd():
                    for k in case.grad_inputs:
                        inputs[k].grad = None
                    loss(fwd()).backward()
                for k in case.grad_inputs:
                    inputs[k].requires_grad_(True)
                entry["forward_backward"] = time_fn(fwd_bwd, device, warmup, iters, max_seconds)
                for k in case.grad_inputs:
                    inputs[k].requires_grad_(False)
                    inputs[k].grad = None
            if case.bytes_moved is not None:
                entry["gbytes_per_s"] = case.bytes_moved(inputs) / (entry["forward"]["median_ms"] * 1e-3) / 1e9
        except Exception as err:  # noqa: BLE001 - a failing backend is recorded, not fatal
            entry = {"error": f"{type(err).__name__}: {err}"[:500]}
        result["results"][name] = entry
    ref = result["results"].get("reference", {}).get("forward", {}).get("median_ms")
    ref_fb = result["results"].get("reference", {}).get("forward_backward", {}).get("median_ms")
    for entry in result["results"].values():
        if ref and "forward" in entry:
            entry["speedup_vs_reference"] = ref / entry["forward"]["median_ms"]
        if ref_fb and "forward_backward" in entry:
            entry["speedup_vs_reference_fwd_bwd"] = ref_fb / entry["forward_backward"]["median_ms"]
    return result
