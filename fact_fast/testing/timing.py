"""The timing loop of the op checks and the benchmarks: wall time per call, CUDA synchronised
around each call so a time covers the kernels it launched."""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["sync", "time_fn", "median_ms"]


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int, iters: int,
            max_seconds: float = math.inf) -> dict:
    """``fn`` called ``warmup`` times (compilation, autotuning), then timed up to ``iters`` times,
    stopping early once ``max_seconds`` have passed and 3 calls are timed. Returns the median and
    minimum in milliseconds and the number of timed calls: ``{"median_ms", "min_ms", "iters"}``."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    start_all = time.perf_counter()
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() - start_all > max_seconds and len(times) >= 3:
            break
    return {"median_ms": statistics.median(times), "min_ms": min(times), "iters": len(times)}


def median_ms(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Median milliseconds of ``reps`` timed calls of ``fn`` after one warm-up call."""
    return time_fn(fn, device, warmup=1, iters=reps)["median_ms"]
