"""The bundled benchmark: FACT, its ablations, the plain CNN + BCE baseline and the methods FACT is
compared with, each trained with ``python -m fact_fast.train --seeds`` on the default ``synthetic``
dataset, then tabulated with ``python -m fact_fast.compare``.

Every run uses the default recipe (20 epochs at 64 px, the val split picks the checkpoint, the test
split is reported) and the same trunk as ``fact_tiny`` (``fact_resnet_tiny``, stage 3, stride 16,
16 feature positions), except ``mlgcn_experts``, whose experts split the trunk's last stage. Rows whose ``summary.json`` already exists are skipped, so an interrupted
batch resumes where it stopped::

    python -m benchmarks.bundled_benchmark                       # every row, seeds 0 1 2, 2 jobs
    python -m benchmarks.bundled_benchmark --rows fact fact_no_vq --jobs 1
    python -m benchmarks.bundled_benchmark --list

Outputs: ``OUT/<row>/`` (the runs, one ``seed<k>`` folder each), ``OUT/<row>.log``,
``OUT/batch.json`` (commands, wall time per row, the environment of :func:`benchmarks.run.environment`) and ``OUT/compare/`` (the tables and
plots of :mod:`fact_fast.compare`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

TRUNK_NAME = "fact_resnet_tiny"  # fact_tiny's trunk
TRUNK = ["--backbone", TRUNK_NAME, "--out-index", "3"]

#: name -> (what it measures, extra ``fact_fast.train`` flags)
ROWS: dict[str, tuple[str, list[str]]] = {
    "fact": ("FACT, the default fact_tiny", []),
    "fact_no_vq": ("ablation: no atomic visual space", ["--no-vq"]),
    "fact_no_gcn": ("ablation: anchors without the GCN", ["--no-gcn"]),
    "fact_no_vq_no_gcn": ("ablation: neither", ["--no-vq", "--no-gcn"]),
    "fact_bce": ("ablation: BCE on the memberships instead of the point + set loss", ["--loss", "bce"]),
    "fact_cosine": ("membership kernel: cosine", ["--membership", "cosine"]),
    "fact_linear": ("membership kernel: linear", ["--membership", "linear"]),
    "fact_laplacian": ("membership kernel: laplacian", ["--membership", "laplacian"]),
    "fact_polynomial": ("membership kernel: polynomial", ["--membership", "polynomial"]),
    "cnn_bce": ("plain CNN + BCE, same trunk", ["--model", "resnet50_bce", *TRUNK]),
    "fact_paper_norm": ("the paper's literal formula (no embedding normalisation)",
                        ["--model-kwargs", "embedding_norm=none"]),
    "asl": ("CNN + asymmetric loss", ["--model", "resnet50_asl", *TRUNK]),
    "focal": ("CNN + focal loss", ["--model", "resnet50_focal", *TRUNK]),
    "mlgcn": ("ML-GCN (reweighted graph)", ["--model", "mlgcn", "--graph", "reweighted", *TRUNK]),
    # the experts split the trunk's last stage, so this row's trunk runs to stage 4 (stride 32)
    "mlgcn_experts": ("ML-GCN with experts (cycle sampler; the trunk to its last stage)",
                      ["--model", "mlgcn_experts", "--sampler", "cycle", "--backbone", TRUNK_NAME]),
    "ldr": ("LDR", ["--model", "ldr", *TRUNK]),
    "chexfusion": ("CheXFusion", ["--model", "chexfusion", *TRUNK]),
    "proto_contrast": ("prototype contrastive learning", ["--model", "proto_contrast", *TRUNK]),
}


def run_row(name: str, out: str, seeds: str, threads: int, extra: list[str]) -> dict:
    run_dir = os.path.join(out, name)
    if os.path.isfile(os.path.join(run_dir, "summary.json")):
        return {"row": name, "skipped": "summary.json exists"}
    cmd = [sys.executable, "-m", "fact_fast.train", "--no-progress", "--threads", str(threads),
           "--seeds", seeds, "--out", run_dir, *ROWS[name][1], *extra]
    start = time.time()
    with open(os.path.join(out, f"{name}.log"), "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    result = {"row": name, "command": " ".join(cmd[1:]), "returncode": rc,
              "wall_seconds": round(time.time() - start, 1)}
    print(f"{name}: rc={rc} {result['wall_seconds']:.0f}s", flush=True)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/bundled", help="where the runs go")
    p.add_argument("--rows", nargs="+", choices=sorted(ROWS), help="rows to run (default: all)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=2, help="rows trained at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--compare-out", help="where fact_fast.compare writes (default: OUT/compare)")
    p.add_argument("--list", action="store_true", help="print the rows and exit")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: flags added to every run")
    args = p.parse_args(argv)
    if args.list:
        for name, (what, flags) in ROWS.items():
            print(f"{name:18s} {what}  [{' '.join(flags)}]")
        return 0
    if args.jobs < 1 or args.threads < 1:
        raise ValueError("--jobs and --threads must be at least 1")
    extra = [a for a in args.extra if a != "--"]
    rows = args.rows or list(ROWS)
    os.makedirs(args.out, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda r: run_row(r, args.out, args.seeds, args.threads, extra), rows))
    record_path = os.path.join(args.out, "batch.json")
    record = {"rows": {}}
    if os.path.isfile(record_path):
        with open(record_path) as f:
            record = json.load(f)
    import torch

    from benchmarks.run import environment
    # the device fact_fast.train's --device auto picks
    record["environment"] = environment(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    record["jobs"], record["threads_per_job"], record["seeds"] = args.jobs, args.threads, args.seeds
    for r in results:
        if "skipped" not in r:
            record["rows"][r["row"]] = r
    with open(record_path, "w") as f:
        json.dump(record, f, indent=1)
    done = [os.path.join(args.out, r) for r in ROWS if os.path.isfile(os.path.join(args.out, r, "summary.json"))]
    failed = [r["row"] for r in results if r.get("returncode")]
    if done and subprocess.call([sys.executable, "-m", "fact_fast.compare", *done,
                                 "--out", args.compare_out or os.path.join(args.out, "compare")]):
        failed.append("compare")
    if failed:
        print("failed rows (see their logs):", ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
