"""Evaluate a checkpoint: ``python -m fact_fast.evaluate CHECKPOINT [--split test] [--out FILE]``.

Rebuilds the dataset and the model (any registered model) from what the checkpoint stores,
prints a readable metrics table (mAP, macro AUC, the paper's F1 and Avg., per-class AP/AUC,
head/medium/tail means, ODIR score) and writes the metrics as JSON (default
``<checkpoint dir>/metrics_<split>.json``). The work is done by :mod:`fact_fast.inference`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from fact_fast import ops
from fact_fast.engine import jsonable
from fact_fast.inference import evaluate_checkpoint
from fact_fast.metrics import format_metrics_table
from fact_fast.utils.checkpoint import CheckpointError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fact_fast.evaluate",
                                description="Evaluate a trained checkpoint (FACT or a baseline) on a dataset "
                                            "split; prints a metrics table and writes JSON.")
    p.add_argument("checkpoint", help="checkpoint file (best.pt / last.pt) or a run directory")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="dataset split (default: test)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="JSON output file (default: <checkpoint dir>/metrics_<split>.json)")
    p.add_argument("--batch-size", type=int, default=None, help="evaluation batch size (default: from the run)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default: auto)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="dataset root, if it moved since training")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: 0)")
    p.add_argument("--backend", default="auto", choices=("auto", "reference", "cpu", "cuda", "triton"),
                   help="fact_fast.ops backend (default: auto)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bar (only on a TTY)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size is not None and args.batch_size <= 0:
        build_parser().error("--batch-size must be positive")
    try:
        with ops.use_backend(args.backend):
            metrics = evaluate_checkpoint(args.checkpoint, args.split, batch_size=args.batch_size,
                                          device=args.device, data_root=args.data_root, workers=args.workers,
                                          progress=args.progress and sys.stderr.isatty())
    except (CheckpointError, FileNotFoundError, ValueError, ops.BackendUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if "CUDA" not in str(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{metrics['split']} metrics of {metrics['checkpoint']} (stage {metrics['stage']}, epoch {metrics['epoch']}):")
    print(format_metrics_table(metrics))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(metrics["checkpoint"])),
                                   f"metrics_{args.split}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(jsonable(metrics), fh, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
