"""Resumable batches of ``python -m fact_fast.train --seeds`` runs, one row a configuration.

Shared by :mod:`benchmarks.bundled_benchmark` and :mod:`benchmarks.fact_ladder`: each row trains
into ``OUT/<row>/`` (one ``seed<k>`` folder per seed, then ``summary.json``) with its log in
``OUT/<row>.log``; a row whose ``summary.json`` exists is skipped, so an interrupted batch
resumes where it stopped. ``OUT/batch.json`` records each row's command, return code and wall
time, and the environment of :func:`benchmarks.run.environment`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

__all__ = ["run_row", "run_batch", "add_batch_arguments"]


def run_row(name: str, flags: list[str], out: str, seeds: str, threads: int, extra: list[str]) -> dict:
    """Train one row (all its seeds) unless its ``summary.json`` exists; returns its record."""
    run_dir = os.path.join(out, name)
    if os.path.isfile(os.path.join(run_dir, "summary.json")):
        return {"row": name, "skipped": "summary.json exists"}
    cmd = [sys.executable, "-m", "fact_fast.train", "--no-progress", "--threads", str(threads),
           "--seeds", seeds, "--out", run_dir, *flags, *extra]
    start = time.time()
    with open(os.path.join(out, f"{name}.log"), "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    result = {"row": name, "command": " ".join(cmd[1:]), "returncode": rc,
              "wall_seconds": round(time.time() - start, 1)}
    print(f"{name}: rc={rc} {result['wall_seconds']:.0f}s", flush=True)
    return result


def run_batch(rows: dict[str, list[str]], out: str, seeds: str, jobs: int, threads: int,
              extra: list[str]) -> list[str]:
    """Train ``rows`` (name -> extra ``fact_fast.train`` flags), ``jobs`` at a time; update
    ``OUT/batch.json``; return the names of the rows that failed."""
    if jobs < 1 or threads < 1:
        raise ValueError("--jobs and --threads must be at least 1")
    os.makedirs(out, exist_ok=True)
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(lambda r: run_row(r, rows[r], out, seeds, threads, extra), rows))
    record_path = os.path.join(out, "batch.json")
    record = {"rows": {}}
    if os.path.isfile(record_path):
        with open(record_path) as f:
            record = json.load(f)
    import torch

    from benchmarks.run import environment
    # the device fact_fast.train's --device auto picks
    record["environment"] = environment(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    record["jobs"], record["threads_per_job"], record["seeds"] = jobs, threads, seeds
    for r in results:
        if "skipped" not in r:
            record["rows"][r["row"]] = r
    with open(record_path, "w") as f:
        json.dump(record, f, indent=1)
    return [r["row"] for r in results if r.get("returncode")]


def add_batch_arguments(p, out: str, seeds: str) -> None:
    """The options every batch driver shares."""
    p.add_argument("--out", default=out, help="where the runs go")
    p.add_argument("--seeds", default=seeds)
    p.add_argument("--jobs", type=int, default=2, help="rows trained at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--list", action="store_true", help="print the rows and exit")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: flags added to every run")
