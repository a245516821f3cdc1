"""The bundled benchmark: FACT, its ablations, the plain CNN + BCE baseline and the methods FACT is
compared with, each trained with ``python -m fact_fast.train --seeds`` on the default ``synthetic``
dataset, then tabulated with ``python -m fact_fast.compare``.

Every run uses the default recipe (20 epochs at 64 px, the val split picks the checkpoint, the test
split is reported) and the same trunk as ``fact_tiny`` (``fact_resnet_tiny``, stage 3, stride 16,
16 feature positions), except ``mlgcn_experts``, whose experts split the trunk's last stage. Rows
whose ``summary.json`` already exists are skipped, so an interrupted batch resumes where it
stopped::

    python -m benchmarks.bundled_benchmark                       # every row, seeds 0 1 2, 2 jobs
    python -m benchmarks.bundled_benchmark --rows fact fact_no_vq --jobs 1
    python -m benchmarks.bundled_benchmark --list

Outputs: ``OUT/<row>/`` (the runs, one ``seed<k>`` folder each), ``OUT/<row>.log``,
``OUT/batch.json`` (commands, wall time per row, the environment of
:func:`benchmarks.run.environment`) and ``OUT/compare/`` (the tables and plots of
:mod:`fact_fast.compare`).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from benchmarks.batch import add_batch_arguments, run_batch

TRUNK_NAME = "fact_resnet_tiny"  # fact_tiny's trunk
TRUNK = ["--backbone", TRUNK_NAME, "--out-index", "3"]


def _kw(**options) -> list[str]:
    """``fact_fast.train`` flags setting these model options (``--model-kwargs KEY=VALUE`` each)."""
    return [arg for k, v in options.items() for arg in ("--model-kwargs", f"{k}={v}")]


#: name -> (what it measures, extra ``fact_fast.train`` flags)
ROWS: dict[str, tuple[str, list[str]]] = {
    "fact": ("FACT, the default fact_tiny", []),
    "fact_no_vq": ("ablation: no atomic visual space", _kw(use_vq="false")),
    "fact_no_gcn": ("ablation: anchors without the GCN", _kw(use_gcn="false")),
    "fact_no_vq_no_gcn": ("ablation: neither", _kw(use_vq="false", use_gcn="false")),
    "fact_bce": ("ablation: BCE on the memberships instead of the point + set loss", _kw(loss="bce")),
    "fact_cosine": ("membership kernel: cosine", _kw(membership="cosine")),
    "fact_linear": ("membership kernel: linear", _kw(membership="linear")),
    "fact_laplacian": ("membership kernel: laplacian", _kw(membership="laplacian")),
    "fact_polynomial": ("membership kernel: polynomial", _kw(membership="polynomial")),
    "cnn_bce": ("plain CNN + BCE, same trunk", ["--model", "resnet50_bce", *TRUNK]),
    "fact_paper": ("FACT with the paper read literally (fact_tiny_paper: unnormalised kernel, bounded logit, "
                   "raw S⁰, queries at std 0.02)", ["--model", "fact_tiny_paper"]),
    "asl": ("CNN + asymmetric loss", ["--model", "resnet50_asl", *TRUNK]),
    "focal": ("CNN + focal loss", ["--model", "resnet50_focal", *TRUNK]),
    "mlgcn": ("ML-GCN (reweighted graph)", ["--model", "mlgcn", "--graph", "reweighted", *TRUNK]),
    # the experts split the trunk's last stage, so this row's trunk runs to stage 4 (stride 32)
    "mlgcn_experts": ("ML-GCN with experts (cycle sampler, top-k graph re-weighted as ML-GCN; the trunk to its "
                      "last stage)",
                      ["--model", "mlgcn_experts", "--sampler", "cycle", "--graph", "topk_reweighted",
                       "--backbone", TRUNK_NAME]),
    # what the paper's cycle sampler costs on 3000 training images (docs/baselines.md)
    "mlgcn_experts_random": ("ML-GCN with experts, random sampler instead of the paper's cycle sampler",
                             ["--model", "mlgcn_experts", "--sampler", "random", "--graph", "topk_reweighted",
                              "--backbone", TRUNK_NAME]),
    "ldr": ("LDR", ["--model", "ldr", *TRUNK]),
    "chexfusion": ("CheXFusion (single-view studies: the fusion stage has one view to fuse)",
                   ["--model", "chexfusion", *TRUNK]),
    # another dataset: the same label vectors as studies of two views, half of the findings drawn in
    # one view only (docs/synthetic.md); not comparable with the single-view rows
    "chexfusion_two_views": ("CheXFusion on two-view studies (synthetic views=2)",
                             ["--model", "chexfusion", *TRUNK, "--dataset-kwargs", "views=2"]),
    "proto_contrast": ("prototype contrastive learning", ["--model", "proto_contrast", *TRUNK]),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_batch_arguments(p, out="runs/bundled", seeds="0,1,2")
    p.add_argument("--rows", nargs="+", choices=sorted(ROWS), help="rows to run (default: all)")
    p.add_argument("--compare-out", help="where fact_fast.compare writes (default: OUT/compare)")
    args = p.parse_args(argv)
    if args.list:
        for name, (what, flags) in ROWS.items():
            print(f"{name:18s} {what}  [{' '.join(flags)}]")
        return 0
    rows = {name: ROWS[name][1] for name in (args.rows or ROWS)}
    failed = run_batch(rows, args.out, args.seeds, args.jobs, args.threads, [a for a in args.extra if a != "--"])
    done = [os.path.join(args.out, r) for r in ROWS if os.path.isfile(os.path.join(args.out, r, "summary.json"))]
    if done and subprocess.call([sys.executable, "-m", "fact_fast.compare", *done,
                                 "--out", args.compare_out or os.path.join(args.out, "compare")]):
        failed.append("compare")
    if failed:
        print("failed rows (see their logs):", ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
