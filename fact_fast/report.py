"""A run at a glance: ``python -m fact_fast.report RUN_DIR [--out DIR]``.

Writes into ``RUN_DIR/report/`` (or ``--out``) one self-contained ``report.html`` (every figure
embedded as a base64 PNG, readable offline and mailable) plus the figures as PNG files and the
threshold table as ``thresholds.csv``:

==========================  =================================================================
``training_curves.png``     every numeric series of ``metrics.jsonl`` per epoch: losses,
                            validation metrics, learning rate and the model's own statistics
                            (FACT: τ, codebook perplexity and usage) -- whatever the log has
``ap_auc_vs_prevalence.png`` per-class test AP and AUC against the class's train prevalence
``pr_curves.png``           precision-recall curve per class (test split)
``roc_curves.png``          ROC curve per class (test split)
``reliability.png``         reliability diagram of the scores (test split, all classes)
``codebook_usage.png``      how often each codebook atom is used on the test split (models
                            whose forward returns ``extras["codes"]``, i.e. FACT with VQ)
``label_graph.png``         the run's label graph (from the checkpoint's ``label_graph``
                            report) with its edge weights, circular layout
``cooccurrence.png``        P(j | i) from the test labels next to P(j | i) from the
                            thresholded predictions
==========================  =================================================================

Test scores come from ``scores_test.npz`` (written by the training run); when it is absent they
are recomputed from ``best.pt`` on the checkpoint's test split (and saved there). Thresholded
figures and the table use ``score > threshold`` in float64, as ``predict``. The work is done by
:mod:`fact_fast.reporting`.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fact_fast.inference import THRESHOLD_CHOICES
from fact_fast.reporting import build_report
from fact_fast.utils.checkpoint import CheckpointError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fact_fast.report",
                                description="One self-contained HTML report (plus PNGs) of a training run.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory (with best.pt)")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (default: RUN_DIR/report)")
    p.add_argument("--thresholds", default="fixed", choices=list(THRESHOLD_CHOICES),
                   help="thresholds for the predicted co-occurrence and the summary F1 (default: fixed)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default: auto)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size for the test pass (default: the run's)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="dataset root, if it moved since training")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bar (only on a TTY)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size is not None and args.batch_size <= 0:
        build_parser().error("--batch-size must be positive")
    try:
        path = build_report(args.run_dir, args.out, thresholds=args.thresholds, device=args.device,
                            batch_size=args.batch_size, data_root=args.data_root,
                            progress=args.progress and sys.stderr.isatty())
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} (and its PNGs in {os.path.dirname(path)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
