"""Run a trained model on new images: ``python -m fact_fast.predict CHECKPOINT INPUT... --out FILE``.

INPUT is any mix of

* image files (``.png .jpg .jpeg .bmp .tif .tiff .webp``; 8/16-bit gray or RGB),
* folders (searched recursively for those extensions),
* CSV files: the image path in a ``path``/``Path``/``fpath``/``Image Index``/``image``/``filename``
  column (else the first column), relative to the CSV's folder. Columns whose every value is 0, 1,
  -1 or empty are read as *label columns*; when a CSV has any, they must be exactly the
  checkpoint's classes (any order), otherwise the run stops with an error naming the missing and
  the unexpected columns -- a CSV labelled for another task is the wrong input for this model;
* ``dataset:SPLIT`` (``train``/``val``/``test``): that split of the checkpoint's own dataset and
  data root (``--data-root`` if it moved); its class list must match the checkpoint's.

The checkpoint carries the class names, the preprocessing (image size, channels, normalisation)
and the thresholds, so no training configuration is needed. Every image goes through the eval
transform the model was validated with: resized to a square (non-square images are stretched, as
in training), centre-cropped when the run used ``--resize``, normalised.

Per-image problems do not stop the run; the image gets an ``error`` and empty scores:
a missing file, an unreadable or corrupt file, and an image that is **too small**: shorter side
below 1/8 of the model's input side (:func:`fact_fast.inference.inputs.min_image_side`: 8 px for
a 64-px model, 28 px for a 224-px model) -- blowing an image up more than 8 times gives the model
blur, not anatomy. The exit code is 0 when at least one image was scored, 1 when none could be, 2 on
bad arguments (missing or corrupt checkpoint, unknown input, class-list mismatch, no stored
thresholds).

The output (CSV, or JSON with ``--format json``) has one row per image, in input order:
``path``, ``error``, ``score:<class>`` and ``positive:<class>`` per class, and ``positives``
(names of the positive classes joined by ``|``). A class is positive when ``score > threshold``
compared in float64, exactly as :func:`fact_fast.metrics.choose_thresholds` defines its
thresholds (:mod:`fact_fast.inference.thresholds`). ``--thresholds``: ``fixed`` (the model's
default: δ for FACT, 0.5 for sigmoid models) or the per-class thresholds chosen on the validation
split at training time, ``val-f1`` (F1-optimal) or ``val-youden`` (Youden's J). ``--explain DIR``
writes heatmap overlays per image for the classes ``--explain-classes`` picks: ``positive``
(default), ``top1``/``topK`` (the highest scores, positive or not) or comma-separated class names
(see :mod:`fact_fast.inference.explain`); the output then has an ``explained`` column: the classes
explained, ``no positive class``, or why the image was not explained.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fact_fast import ops
from fact_fast.data import ImagePipeline
from fact_fast.inference.checkpoints import checkpoint_dataset, load_trained_model
from fact_fast.inference.explain import (NO_POSITIVE, check_explainable, explained_column, parse_explain_classes,
                                         write_explanations)
from fact_fast.inference.inputs import resolve_inputs
from fact_fast.inference.predictions import score_inputs, write_predictions
from fact_fast.inference.thresholds import THRESHOLD_CHOICES, thresholds_of
from fact_fast.utils.checkpoint import CheckpointError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fact_fast.predict",
                                description="Score images with a trained checkpoint (FACT or a baseline): "
                                            "per-class scores and positive calls, optional heatmaps.")
    p.add_argument("checkpoint", help="checkpoint file (best.pt) or a run directory")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders, CSV files of image paths, or dataset:SPLIT")
    p.add_argument("--out", required=True, metavar="FILE", help="output file (.csv or .json)")
    p.add_argument("--format", choices=("csv", "json"), default=None,
                   help="output format (default: from the --out extension, else csv)")
    p.add_argument("--thresholds", choices=list(THRESHOLD_CHOICES), default="fixed",
                   help="decision thresholds: the model's default, or per-class ones chosen on validation "
                        "(F1-optimal / Youden's J) at training time (default: fixed)")
    p.add_argument("--explain", metavar="DIR", default=None,
                   help="write heatmap overlays (PNG) per image and explained class into DIR")
    p.add_argument("--explain-classes", default=None, metavar="{positive,top1,topK,NAMES}",
                   help="classes --explain shows per image: positive (those above their threshold; the "
                        "default), top1 / topK (the K highest scores, positive or not) or comma-separated "
                        "class names")
    p.add_argument("--max-explain", type=int, default=100, metavar="N",
                   help="explain at most the first N scored images (default: 100)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="device (default: auto = CUDA when available)")
    p.add_argument("--backend", default="auto", choices=("auto", "reference", "cpu", "cuda", "triton"),
                   help="fact_fast.ops backend (default: auto)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: 0)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="data root for dataset:SPLIT inputs")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bar (only on a TTY)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        parser.error("--batch-size must be positive")
    if args.max_explain < 0:
        parser.error("--max-explain must be >= 0")
    fmt = args.format or ("json" if args.out.lower().endswith(".json") else "csv")
    explain = args.explain is not None
    if args.explain_classes is not None and not explain:
        parser.error("--explain-classes needs --explain DIR")
    try:
        model, ckpt = load_trained_model(args.checkpoint, args.device)
        class_names = list(ckpt.class_names)
        thresholds = thresholds_of(ckpt, args.thresholds, len(class_names))
        pipeline = ImagePipeline.from_dict(ckpt.preprocessing)
        paths, splits = resolve_inputs(args.inputs, class_names)
        datasets = [checkpoint_dataset(ckpt, split, args.data_root) for split in splits]
        if explain:
            check_explainable(model)
            selection = parse_explain_classes(args.explain_classes or "positive", class_names)
    except (CheckpointError, ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with ops.use_backend(args.backend):
        names, scores, errors, kept = score_inputs(model, pipeline, paths, datasets, batch_size=args.batch_size,
                                                   workers=args.workers, keep=args.max_explain if explain else 0,
                                                   progress=args.progress and sys.stderr.isatty())
        meta = {"checkpoint": ckpt.path, "threshold_mode": args.thresholds}
        extra = {"explained": explained_column(scores, errors, thresholds, class_names, selection,
                                               {k for k, _ in kept}, args.max_explain)} if explain else None
        write_predictions(args.out, fmt, names, scores, errors, class_names, thresholds, meta, extra)
        n_err = sum(1 for e in errors if e)
        print(f"wrote {args.out}: {len(names)} images, {len(names) - n_err} scored, {n_err} not scored"
              + (f" (see the 'error' column, e.g. {next(e for e in errors if e)})" if n_err else ""))
        if explain:
            written = write_explanations(model, class_names, pipeline, [(k, names[k], img) for k, img in kept], scores,
                                         thresholds, args.explain, selection)
            silent = sum(1 for v in extra["explained"] if v == NO_POSITIVE)
            print(f"wrote {written} heatmaps to {args.explain}"
                  + (f"; {silent} of {len(kept)} images have no positive class (--explain-classes top1 shows "
                     f"where the model looks for its highest-scoring class)" if silent else ""))
    return 0 if len(names) > n_err else 1


if __name__ == "__main__":
    sys.exit(main())
