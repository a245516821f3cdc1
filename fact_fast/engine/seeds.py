"""One training run per seed and the mean ± std of their test metrics."""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace

from fact_fast.config import TrainConfig
from fact_fast.metrics import mean_std_over_seeds
from fact_fast.utils import distributed as du

from .checkpoints import log
from .evaluation import jsonable
from .trainer import fit

__all__ = ["fit_seeds"]


def fit_seeds(cfg: TrainConfig, explicit=(), info: du.DistInfo | None = None) -> dict:
    """``cfg.seeds`` = "0,1,2": one run per seed in ``<out>/seed<k>``, then ``summary.json`` /
    ``summary.md`` with the mean ± std of every test metric."""
    try:
        seeds = [int(s) for s in str(cfg.seeds).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"seeds must be comma-separated integers, got {cfg.seeds!r}") from None
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    base = cfg.out or os.path.join("runs", cfg.name or time.strftime("%Y%m%d-%H%M%S"))
    results = []
    for s in seeds:
        run_cfg = replace(cfg, seed=s, seeds=None, out=os.path.join(base, f"seed{s}"))
        results.append(fit(run_cfg, set(explicit) | {"out", "seed"}, info))
    tests = [r["test"] for r in results if r.get("test")]
    summary = {"seeds": seeds, "runs": [r["out"] for r in results]}
    if tests:
        summary["test"] = mean_std_over_seeds(tests)
        summary["selected_stages"] = [t.get("stage") for t in tests]
    per_stage = [r.get("stages") for r in results if r.get("stages")]
    if per_stage and len(per_stage) == len(results):
        names = [n for n in per_stage[0] if all(n in p for p in per_stage)]
        summary["stages"] = {n: mean_std_over_seeds([p[n] for p in per_stage]) for n in names}
    if info is None or info.is_main:
        with open(os.path.join(base, "summary.json"), "w") as fh:
            json.dump(jsonable(summary), fh, indent=2)
        log(f"summary over seeds {seeds} written to {os.path.join(base, 'summary.json')}")
    return summary
