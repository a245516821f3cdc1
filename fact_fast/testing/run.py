"""Checking one op × backend × dtype × case into a JSON-ready record, and summing records up."""
from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Iterable

import torch

from fact_fast import ops

from .cases import CHECKS, example_inputs
from .matrix import DTYPE_NAME, FUSED
from .timing import median_ms, sync

__all__ = ["run_one", "fused_backends", "backends_for", "summarize_group", "count"]


def run_one(op: str, backend: str, dtype: torch.dtype, case: str, device: torch.device, time_reps: int) -> dict:
    """Check ``op`` on ``backend`` for one dtype and case: ``{"op", "backend", "dtype", "case",
    "status"}`` with status ``pass`` / ``fail`` (plus the worst check, its ratio, the largest
    absolute error and every check), ``skip`` (the backend cannot run it) or ``error`` (it raised;
    message and traceback). A passing ``random`` case is timed (``ms``, ``reference_ms``: median
    forward + backward over ``time_reps`` calls) when ``time_reps``."""
    record = {"op": op, "backend": backend, "dtype": DTYPE_NAME[dtype], "case": case}
    try:
        checks, (fused, ref) = CHECKS[op](backend, dtype, case, device)
        sync(device)
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


def fused_backends(op: str, *example_args) -> list[str]:
    """The fused backends of ``op`` that can run these example arguments on this machine."""
    return [b for b in ops.available_backends(op, *example_args) if b in FUSED]


def backends_for(op: str, dtype: torch.dtype, device: torch.device, wanted: Iterable[str]) -> list[str]:
    """The fused backends among ``wanted`` that can run ``op`` on ``dtype`` inputs on ``device``."""
    return [b for b in fused_backends(op, *example_inputs(op, device, dtype)) if b in wanted]


def summarize_group(records: list[dict]) -> dict:
    """One op × backend × dtype over its cases: passed / total, the failed records, the worst
    ratio and absolute error, and the timed case's ``ms`` / ``reference_ms``."""
    done = [r for r in records if r["status"] in ("pass", "fail")]
    return {"passed": sum(r["status"] == "pass" for r in records), "total": len(records),
            "failed": [r for r in records if r["status"] in ("fail", "error")],
            "worst_ratio": max((r["worst_ratio"] for r in done), default=None),
            "max_abs_err": max((r["max_abs_err"] for r in done), default=None),
            "ms": next((r.get("ms") for r in records if r.get("ms") is not None), None),
            "reference_ms": next((r.get("reference_ms") for r in records if r.get("reference_ms") is not None), None)}


def count(records: list[dict]) -> dict:
    """``{"passed", "failed", "errors"}``: how many records have each status."""
    return {status: sum(r["status"] == key for r in records)
            for status, key in (("passed", "pass"), ("failed", "fail"), ("errors", "error"))}
