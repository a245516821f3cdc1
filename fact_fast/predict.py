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
below 1/:data:`MAX_UPSCALE` of the model's input side (:func:`min_image_side`; 8 px for a 64-px
model, 28 px for a 224-px model) -- blowing an image up more than 8 times gives the model blur,
not anatomy. The exit code is 0 when at least one image was scored, 1 when none could be, 2 on
bad arguments (missing or corrupt checkpoint, unknown input, class-list mismatch, no stored
thresholds).

The output (CSV, or JSON with ``--format json``) has one row per image, in input order:
``path``, ``error``, ``score:<class>`` and ``positive:<class>`` per class, and ``positives``
(names of the positive classes joined by ``|``). A class is positive when
``score > threshold`` compared in float64, exactly as :func:`fact_fast.metrics.choose_thresholds`
defines its thresholds. ``--thresholds``: ``fixed`` (the model's default: δ for FACT, 0.5 for
sigmoid models) or the per-class thresholds chosen on the validation split at training time,
``val-f1`` (F1-optimal) or ``val-youden`` (Youden's J). ``--explain DIR`` writes heatmap overlays
per image for the classes ``--explain-classes`` picks: ``positive`` (default), ``top1``/``topK`` (the
highest scores, positive or not) or comma-separated class names (see :mod:`fact_fast.explain`); the
output then has an ``explained`` column: the classes explained, ``no positive class``, or why the
image was not explained.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from typing import Sequence

import numpy as np
import torch

__all__ = ["main", "build_parser", "resolve_inputs", "predict_images", "positive_calls", "thresholds_of",
           "write_predictions", "min_image_side", "InputError", "THRESHOLD_CHOICES", "IMAGE_EXTENSIONS",
           "MAX_UPSCALE"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
THRESHOLD_CHOICES = {"fixed": None, "val-f1": "f1", "val-youden": "youden"}
PATH_COLUMNS = ("path", "Path", "fpath", "Image Index", "image", "filename")
LABEL_VALUES = {"", "0", "1", "-1", "0.0", "1.0", "-1.0", "nan", "NaN"}
MAX_UPSCALE = 8


class InputError(ValueError):
    """An INPUT argument that cannot be used: unknown kind, missing CSV/folder, wrong label set."""


def min_image_side(pipeline) -> int:
    """Smallest accepted shorter side (px) of an input image for ``pipeline`` (an ImagePipeline):
    the model's resize side divided by :data:`MAX_UPSCALE`, rounded up."""
    return max(1, math.ceil(pipeline.resize_to / MAX_UPSCALE))


def positive_calls(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """bool ``[N, C]``: ``score > threshold`` in float64 (NaN scores -> False), the comparison
    :func:`fact_fast.metrics.choose_thresholds` chooses its thresholds for."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    if s.ndim != 2 or t.shape != (s.shape[1],):
        raise ValueError(f"thresholds must have one value per class ({s.shape[-1]}), got shape {list(t.shape)}")
    return s > t[None, :]


def _csv_paths(path: str, class_names: Sequence[str]) -> list:
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r]
    if len(rows) < 2:
        raise InputError(f"{path}: the CSV has no rows (a header line, then one image per line)")
    header, body = rows[0], rows[1:]
    col = next((header.index(c) for c in PATH_COLUMNS if c in header), 0)
    label_cols = [h for j, h in enumerate(header) if j != col and h.lower() != "split"
                  and all(len(r) > j and r[j].strip() in LABEL_VALUES for r in body)]
    if label_cols and set(label_cols) != set(class_names):
        missing = [c for c in class_names if c not in label_cols]
        unexpected = [c for c in label_cols if c not in class_names]
        raise InputError(f"{path}: its label columns do not match the checkpoint's classes; missing "
                         f"{missing}, unexpected {unexpected} (the checkpoint's classes: {list(class_names)}). "
                         f"Drop the label columns to score the images anyway.")
    base = os.path.dirname(os.path.abspath(path))
    return [r[col] if os.path.isabs(r[col]) else os.path.join(base, r[col]) for r in body if len(r) > col and r[col]]


def resolve_inputs(inputs: Sequence[str], class_names: Sequence[str]) -> tuple[list, list]:
    """(image paths, dataset splits) from the INPUT arguments, in order. Raises InputError."""
    paths, splits = [], []
    for item in inputs:
        if item.startswith("dataset:"):
            split = item.split(":", 1)[1]
            if split not in ("train", "val", "test"):
                raise InputError(f"{item}: expected dataset:train, dataset:val or dataset:test")
            splits.append(split)
        elif os.path.isdir(item):
            found = sorted(os.path.join(d, f) for d, _, files in os.walk(item) for f in files
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise InputError(f"{item}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            paths += found
        elif item.lower().endswith(".csv"):
            if not os.path.isfile(item):
                raise InputError(f"{item}: CSV file not found")
            paths += _csv_paths(item, class_names)
        elif os.path.isfile(item) or item.lower().endswith(IMAGE_EXTENSIONS):
            paths.append(item)  # a missing image becomes an error row, not a failed run
        else:
            raise InputError(f"{item}: not an image file ({', '.join(IMAGE_EXTENSIONS)}), folder, CSV or "
                             f"dataset:SPLIT")
    return paths, splits


class _ImageFiles(torch.utils.data.Dataset):
    """Image files through the eval transform: ``(index, image [3, S, S] | None, error)``."""

    def __init__(self, paths: list, pipeline):
        self.paths, self.pipeline = paths, pipeline
        self.transform = pipeline.build(train=False)
        self.min_side = min_image_side(pipeline)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from fact_fast.data.base import DECODE_ERRORS
        from fact_fast.data.datasets import read_image_file

        p = self.paths[i]
        if not os.path.isfile(p):
            return i, None, "file not found"
        try:
            raw = read_image_file(p, self.pipeline.channels)
        except DECODE_ERRORS as exc:
            return i, None, f"unreadable image ({type(exc).__name__}: {exc})"
        h, w = raw.shape[:2]
        if min(h, w) < self.min_side:
            return i, None, (f"image too small: {w}x{h} px; this model needs a shorter side of at least "
                             f"{self.min_side} px (1/{MAX_UPSCALE} of its {self.pipeline.resize_to}-px input)")
        return i, self.transform(raw), ""


class _DatasetItems(torch.utils.data.Dataset):
    """A MultiLabelDataset as ``(index, image | None, error)`` (its transform is the eval one)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        item = self.ds[i]  # None when the file cannot be decoded (the dataset warns with the file)
        return (i, None, "unreadable image") if item is None else (i, item[0], "")


def _collate(batch):
    idx = [b[0] for b in batch]
    errors = [b[2] for b in batch]
    ok = [b for b in batch if b[1] is not None]
    images = torch.stack([b[1] for b in ok]) if ok else None
    return idx, images, errors


def predict_images(model, items: torch.utils.data.Dataset, *, batch_size: int = 32, workers: int = 0,
                   progress: bool = False, keep: int = 0) -> tuple[np.ndarray, list, dict]:
    """Score ``items`` (a dataset of ``(index, image | None, error)``) in batches on the model's
    device. Returns scores float32 ``[N, C]`` (NaN rows where the image failed), the error string
    per image ("" when scored) and ``{index: image [3, S, S]}`` of the first ``keep`` scored images."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(items, batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                                         pin_memory=device.type == "cuda")
    scores = np.full((len(items), model.num_classes), np.nan, dtype=np.float32)
    errors = [""] * len(items)
    kept: dict = {}
    model.eval()
    with torch.no_grad():
        for idx, images, errs in tqdm(loader, desc="predict", disable=not progress, dynamic_ncols=True):
            for i, e in zip(idx, errs):
                errors[i] = e
            if images is None:
                continue
            good = [i for i, e in zip(idx, errs) if not e]
            scores[good] = model(images.to(device, non_blocking=True)).scores.float().cpu().numpy()
            for i, img in zip(good, images):
                if len(kept) < keep:
                    kept[i] = img
    return scores, errors, kept


def thresholds_of(ckpt: dict, mode: str, num_classes: int) -> np.ndarray:
    """Per-class thresholds float64 ``[C]`` for ``mode`` (one of :data:`THRESHOLD_CHOICES`)."""
    if mode not in THRESHOLD_CHOICES:
        raise ValueError(f"thresholds must be one of {list(THRESHOLD_CHOICES)}, got {mode!r}")
    key = THRESHOLD_CHOICES[mode]
    if key is None:
        return np.full(num_classes, float(ckpt["default_threshold"]), dtype=np.float64)
    stored = (ckpt.get("thresholds") or {}).get(key)
    if stored is None:
        raise ValueError(f"thresholds: {ckpt.get('_path', 'the checkpoint')} has no {mode} thresholds (only a "
                         f"best.pt written after a validation pass stores them); use --thresholds fixed")
    values = np.asarray(stored, dtype=np.float64)
    if values.shape != (num_classes,) or not np.all(np.isfinite(values)):
        raise ValueError(f"thresholds: the stored {mode} thresholds are not {num_classes} finite numbers")
    return values


def write_predictions(path: str, fmt: str, names: list, scores: np.ndarray, errors: list, class_names: list,
                      thresholds: np.ndarray, meta: dict | None = None, extra: dict | None = None) -> None:
    """CSV or JSON (``fmt``) with one row per image (see the module docstring); ``extra`` maps
    further column names to one string per image, appended after ``positives``."""
    pos = positive_calls(scores, thresholds)
    extra = extra or {}
    for column, values in extra.items():
        if len(values) != len(names):
            raise ValueError(f"extra column {column!r} has {len(values)} values for {len(names)} images")
    rows = []
    for k, name in enumerate(names):
        ok = not errors[k]
        row = {"path": name, "error": errors[k]}
        row.update({f"score:{c}": float(scores[k, j]) if ok else None for j, c in enumerate(class_names)})
        row.update({f"positive:{c}": int(pos[k, j]) if ok else None for j, c in enumerate(class_names)})
        row["positives"] = "|".join(c for j, c in enumerate(class_names) if ok and pos[k, j])
        row.update({column: values[k] for column, values in extra.items()})
        rows.append(row)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if fmt == "json":
        with open(path, "w") as fh:
            json.dump({**(meta or {}), "class_names": list(class_names), "thresholds": thresholds.tolist(),
                       "predictions": rows}, fh, indent=1)
        return
    fieldnames = (["path", "error"] + [f"score:{c}" for c in class_names] + [f"positive:{c}" for c in class_names]
                  + ["positives"] + list(extra))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fieldnames)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})


def _explained_column(scores: np.ndarray, errors: list, thresholds: np.ndarray, class_names: list, selection: tuple,
                      explained_rows: set, max_explain: int) -> list:
    """Per image, what ``--explain`` did: the classes explained joined by ``|``, ``no positive
    class``, or why the image was not explained."""
    from fact_fast.explain import NO_POSITIVE, explained_classes

    column = []
    for k in range(len(errors)):
        if errors[k]:
            column.append("not explained: not scored")
        elif k not in explained_rows:
            column.append(f"not explained: beyond --max-explain {max_explain}")
        else:
            chosen = explained_classes(scores[k], thresholds, selection)
            column.append("|".join(class_names[c] for c in chosen) if chosen else NO_POSITIVE)
    return column


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
    from fact_fast import ops
    from fact_fast.data import ImagePipeline
    from fact_fast.engine import checkpoint_dataset, load_trained_model
    from fact_fast.utils.checkpoint import CheckpointError

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
        class_names = list(ckpt["class_names"])
        thresholds = thresholds_of(ckpt, args.thresholds, len(class_names))
        pipeline = ImagePipeline.from_dict(ckpt["preprocessing"])
        paths, splits = resolve_inputs(args.inputs, class_names)
        datasets = [checkpoint_dataset(ckpt, split, args.data_root) for split in splits]
        if explain:
            from fact_fast.explain import check_explainable, parse_explain_classes

            check_explainable(model)
            selection = parse_explain_classes(args.explain_classes or "positive", class_names)
    except (CheckpointError, ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = args.progress and sys.stderr.isatty()
    parts = [(_ImageFiles(paths, pipeline), list(paths))]
    for split, ds in zip(splits, datasets):
        parts.append((_DatasetItems(ds), [ds.describe(i) for i in range(len(ds))]))
    names, errors, chunks, kept = [], [], [], []
    with ops.use_backend(args.backend):
        for items, item_names in parts:
            s, e, k = predict_images(model, items, batch_size=args.batch_size, workers=args.workers,
                                     progress=progress, keep=args.max_explain - len(kept) if explain else 0)
            kept += [(len(names) + i, img) for i, img in sorted(k.items())]
            names += item_names
            errors += e
            chunks.append(s)
        scores = np.concatenate(chunks) if chunks else np.zeros((0, len(class_names)), np.float32)
        meta = {"checkpoint": ckpt["_path"], "threshold_mode": args.thresholds}
        extra = {"explained": _explained_column(scores, errors, thresholds, class_names, selection,
                                                {k for k, _ in kept}, args.max_explain)} if explain else None
        write_predictions(args.out, fmt, names, scores, errors, class_names, thresholds, meta, extra)
        n_err = sum(1 for e in errors if e)
        print(f"wrote {args.out}: {len(names)} images, {len(names) - n_err} scored, {n_err} not scored"
              + (f" (see the 'error' column, e.g. {next(e for e in errors if e)})" if n_err else ""))
        if explain:
            from fact_fast.explain import NO_POSITIVE, write_explanations

            written = write_explanations(model, ckpt, pipeline, [(k, names[k], img) for k, img in kept], scores,
                                         thresholds, args.explain, selection)
            silent = sum(1 for v in extra["explained"] if v == NO_POSITIVE)
            print(f"wrote {written} heatmaps to {args.explain}"
                  + (f"; {silent} of {len(kept)} images have no positive class (--explain-classes top1 shows "
                     f"where the model looks for its highest-scoring class)" if silent else ""))
    return 0 if len(names) > n_err else 1


if __name__ == "__main__":
    sys.exit(main())
