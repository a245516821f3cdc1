"""Run a trained model on new images: ``python -m fact_fast.predict CHECKPOINT INPUT... --out FILE``.

INPUT is any mix of image files, folders (searched recursively for images), CSV files (the image
path in a ``path``/``Path``/``fpath``/``Image Index`` column or the first column, relative to the
CSV's folder) and dataset specs ``dataset:SPLIT`` (the checkpoint's own dataset and data root,
e.g. ``dataset:test``). The checkpoint carries the class names, the preprocessing and the
thresholds, so no training configuration is needed.

The output (CSV, or JSON with ``--format json``) has one row per image: ``path``, ``error``
(empty unless the image could not be read -- the run continues), ``score:<class>`` and
``positive:<class>`` per class, and ``positives`` (the names of the positive classes). Thresholds:
``fixed`` (the model's default: δ for FACT, 0.5 for sigmoid models) or the per-class thresholds
chosen on the validation split at training time, ``val-f1`` (F1-optimal) or ``val-youden``
(Youden's J). ``--explain DIR`` writes, per image and positive class, a heatmap overlay PNG --
for FACT the semantic interface's attention over the feature positions (and which codebook atoms
carried the evidence, in ``explanations.json``), for other models Grad-CAM.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Sequence

import numpy as np
import torch

__all__ = ["main", "resolve_inputs", "predict_images", "THRESHOLD_CHOICES"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".webp")
THRESHOLD_CHOICES = {"fixed": None, "val-f1": "f1", "val-youden": "youden"}
PATH_COLUMNS = ("path", "Path", "fpath", "Image Index", "image", "filename")
MIN_SIDE = 8  # below this an image carries nothing the model can resize into a meaningful input


class InputError(ValueError):
    """An INPUT argument that is neither an image, a folder, a CSV nor a dataset spec."""


def _csv_paths(path: str) -> list:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise InputError(f"{path}: empty CSV")
    header = rows[0]
    col = next((header.index(c) for c in PATH_COLUMNS if c in header), 0)
    base = os.path.dirname(os.path.abspath(path))
    return [r[col] if os.path.isabs(r[col]) else os.path.join(base, r[col]) for r in rows[1:] if r and r[col]]


def resolve_inputs(inputs: Sequence[str]) -> tuple[list, list]:
    """(image paths, dataset specs ``(split,)``) from the INPUT arguments, in order."""
    paths, specs = [], []
    for item in inputs:
        if item.startswith("dataset:"):
            split = item.split(":", 1)[1]
            if split not in ("train", "val", "test"):
                raise InputError(f"{item}: expected dataset:train, dataset:val or dataset:test")
            specs.append(split)
        elif os.path.isdir(item):
            found = sorted(os.path.join(d, f) for d, _, files in os.walk(item) for f in files
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise InputError(f"{item}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            paths += found
        elif item.lower().endswith(".csv"):
            if not os.path.isfile(item):
                raise InputError(f"{item}: CSV file not found")
            paths += _csv_paths(item)
        elif os.path.isfile(item) or item.lower().endswith(IMAGE_EXTENSIONS):
            paths.append(item)  # a missing image becomes an error row, not a failed run
        else:
            raise InputError(f"{item}: not an image file, folder, CSV or dataset:SPLIT")
    return paths, specs


class _ImageFiles(torch.utils.data.Dataset):
    """Image files through the checkpoint's eval transform; unreadable files give an error string."""

    def __init__(self, paths: list, pipeline):
        self.paths, self.pipeline = paths, pipeline
        self.transform = pipeline.build(train=False)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from fact_fast.data.base import DECODE_ERRORS
        from fact_fast.data.datasets import read_image_file

        try:
            raw = read_image_file(self.paths[i], self.pipeline.channels)
        except FileNotFoundError:
            return i, None, "file not found"
        except DECODE_ERRORS as exc:
            return i, None, f"unreadable image ({type(exc).__name__}: {exc})"
        if min(raw.shape[:2]) < MIN_SIDE:
            return i, None, f"image too small ({raw.shape[1]}x{raw.shape[0]} px; need at least {MIN_SIDE})"
        return i, self.transform(raw), ""


def _collate(batch):
    idx = [b[0] for b in batch]
    errors = [b[2] for b in batch]
    ok = [b for b in batch if b[1] is not None]
    images = torch.stack([b[1] for b in ok]) if ok else None
    return idx, images, errors


def predict_images(model, pipeline, paths: list, *, batch_size: int = 32, workers: int = 0,
                   progress: bool = False, keep_images: bool = False):
    """Scores float32 ``[N, C]`` (NaN rows for unreadable images), error strings ``[N]`` and,
    with ``keep_images``, the preprocessed images (list of tensors or None)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    ds = _ImageFiles(paths, pipeline)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=_collate)
    scores = np.full((len(paths), model.num_classes), np.nan, dtype=np.float32)
    errors = [""] * len(paths)
    kept = [None] * len(paths) if keep_images else None
    with torch.no_grad():
        for idx, images, errs in tqdm(loader, desc="predict", disable=not progress, dynamic_ncols=True):
            good = [i for i, e in zip(idx, errs) if not e]
            for i, e in zip(idx, errs):
                errors[i] = e
            if images is None:
                continue
            s = model(images.to(device)).scores.float().cpu().numpy()
            scores[good] = s
            if keep_images:
                for i, img in zip(good, images):
                    kept[i] = img
    return scores, errors, kept


def thresholds_of(ckpt: dict, mode: str, num_classes: int) -> np.ndarray:
    """Per-class thresholds ``[C]`` for ``mode`` (one of :data:`THRESHOLD_CHOICES`)."""
    if mode not in THRESHOLD_CHOICES:
        raise ValueError(f"thresholds must be one of {list(THRESHOLD_CHOICES)}, got {mode!r}")
    key = THRESHOLD_CHOICES[mode]
    if key is None:
        return np.full(num_classes, float(ckpt["default_threshold"]))
    stored = (ckpt.get("thresholds") or {}).get(key)
    if stored is None or len(stored) != num_classes:
        raise ValueError(f"thresholds: the checkpoint has no {mode} thresholds (it was saved before any "
                         f"validation improved, or by an older fact_fast); use --thresholds fixed")
    return np.asarray(stored, dtype=np.float64)


def write_predictions(path: str, fmt: str, paths: list, scores: np.ndarray, errors: list, class_names: list,
                      thresholds: np.ndarray) -> None:
    """CSV or JSON with one row per image (see the module docstring)."""
    pos = scores > thresholds[None, :]
    rows = []
    for k, p in enumerate(paths):
        ok = not errors[k]
        row = {"path": p, "error": errors[k]}
        for c, name in enumerate(class_names):
            row[f"score:{name}"] = float(scores[k, c]) if ok else None
        for c, name in enumerate(class_names):
            row[f"positive:{name}"] = int(pos[k, c]) if ok else None
        row["positives"] = "|".join(n for c, n in enumerate(class_names) if ok and pos[k, c])
        rows.append(row)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if fmt == "json":
        with open(path, "w") as fh:
            json.dump({"class_names": class_names, "thresholds": thresholds.tolist(), "predictions": rows}, fh,
                      indent=1)
        return
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["path", "error"])
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})


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
                   help="write heatmap overlays (PNG) per image and positive class into DIR")
    p.add_argument("--max-explain", type=int, default=100, metavar="N",
                   help="explain at most N images (default: 100)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default: auto)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: 0)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="data root for dataset:SPLIT inputs")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    return p


def _dataset_paths(ckpt: dict, split: str, data_root: str | None) -> tuple[list, object]:
    """Image paths of a split of the checkpoint's dataset, or (None, dataset) for procedural data."""
    from fact_fast.data import build_dataset
    from fact_fast.engine import config_of

    cfg = config_of(ckpt)
    ds = build_dataset(cfg.dataset, split, root=data_root or cfg.data_root, image_size=cfg.image_size,
                       seed=cfg.seed, train=False, pipeline=ckpt.get("preprocessing"),
                       **dict(cfg.dataset_kwargs or {}))
    if list(ds.class_names) != list(ckpt["class_names"]):
        raise ValueError(f"dataset:{split}: class list {list(ds.class_names)} does not match the checkpoint's "
                         f"{list(ckpt['class_names'])}")
    return ds


def main(argv: Sequence[str] | None = None) -> int:
    from fact_fast.data import ImagePipeline
    from fact_fast.engine import load_trained_model
    from fact_fast.utils.checkpoint import CheckpointError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        parser.error("--batch-size must be positive")
    fmt = args.format or ("json" if args.out.lower().endswith(".json") else "csv")
    try:
        model, ckpt = load_trained_model(args.checkpoint, args.device)
        class_names = list(ckpt["class_names"])
        thresholds = thresholds_of(ckpt, args.thresholds, len(class_names))
        pipeline = ImagePipeline.from_dict(ckpt["preprocessing"])
        paths, specs = resolve_inputs(args.inputs)
        datasets = [_dataset_paths(ckpt, split, args.data_root) for split in specs]
    except (CheckpointError, InputError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = args.progress and sys.stderr.isatty()
    explain = args.explain is not None
    scores, errors, images = predict_images(model, pipeline, paths, batch_size=args.batch_size,
                                            workers=args.workers, progress=progress, keep_images=explain)
    names = list(paths)
    for split, ds in zip(specs, datasets):
        s, e, imgs = _predict_dataset(model, ds, args.batch_size, progress, keep_images=explain)
        scores = np.concatenate([scores, s])
        errors += e
        names += [ds.describe(i) if getattr(ds, "paths", None) is not None else f"dataset:{split}:{i}"
                  for i in range(len(ds))]
        if explain:
            images += imgs
    write_predictions(args.out, fmt, names, scores, errors, class_names, thresholds)
    n_err = sum(1 for e in errors if e)
    print(f"wrote {args.out}: {len(names)} images, {n_err} unreadable"
          + ("" if not n_err else f" (see the 'error' column, e.g. {next(e for e in errors if e)})"))
    if explain:
        from fact_fast.explain import write_explanations

        written = write_explanations(model, ckpt, pipeline, names, images, scores, thresholds, args.explain,
                                     limit=args.max_explain)
        print(f"wrote {written} heatmaps to {args.explain}")
    return 0


def _predict_dataset(model, ds, batch_size: int, progress: bool, keep_images: bool):
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    scores = np.full((len(ds), model.num_classes), np.nan, dtype=np.float32)
    errors = [""] * len(ds)
    kept = [None] * len(ds) if keep_images else None
    with torch.no_grad():
        for start in tqdm(range(0, len(ds), batch_size), desc="predict", disable=not progress):
            idx = list(range(start, min(start + batch_size, len(ds))))
            items = [ds[i] for i in idx]
            good = [i for i, it in zip(idx, items) if it is not None]
            for i, it in zip(idx, items):
                if it is None:
                    errors[i] = "unreadable image"
            if not good:
                continue
            x = torch.stack([it[0] for it in items if it is not None])
            scores[good] = model(x.to(device)).scores.float().cpu().numpy()
            if keep_images:
                for i, img in zip(good, x):
                    kept[i] = img
    return scores, errors, kept


if __name__ == "__main__":
    sys.exit(main())
