"""Scoring ``predict``'s inputs and writing one row per image.

The output (CSV, or JSON) has one row per image, in input order: ``path``, ``error``,
``score:<class>`` and ``positive:<class>`` per class, ``positives`` (names of the positive classes
joined by ``|``), then any extra columns. An image that could not be scored has its ``error`` and
empty scores.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import torch

from fact_fast.engine.loop import score_batches

from .inputs import DatasetItems, ImageFiles, collate_items
from .thresholds import positive_calls

__all__ = ["predict_images", "score_inputs", "write_predictions"]


def _unpack(batch, device: torch.device):
    _, images, _ = batch
    return (None if images is None else images.to(device, non_blocking=True)), None, None


def predict_images(model, items: torch.utils.data.Dataset, *, batch_size: int = 32, workers: int = 0,
                   progress: bool = False, keep: int = 0) -> tuple[np.ndarray, list, dict]:
    """Score ``items`` (a dataset of ``(index, image | None, error)``, see
    :mod:`fact_fast.inference.inputs`) in batches on the model's device. Returns scores float32
    ``[N, C]`` (NaN rows where the image failed), the error string per image ("" when scored) and
    ``{index: image [3, S, S]}`` of the first ``keep`` scored images."""
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(items, batch_size=batch_size, num_workers=workers, collate_fn=collate_items,
                                         pin_memory=device.type == "cuda")
    scores = np.full((len(items), model.num_classes), np.nan, dtype=np.float32)
    errors = [""] * len(items)
    kept: dict = {}
    for scored in score_batches(model, loader, progress=progress, desc="predict", unpack=_unpack):
        idx, images, errs = scored.batch
        for i, e in zip(idx, errs):
            errors[i] = e
        if scored.scores is None:
            continue
        good = [i for i, e in zip(idx, errs) if not e]
        scores[good] = scored.scores.cpu().numpy()
        for i, img in zip(good, images):
            if len(kept) < keep:
                kept[i] = img
    return scores, errors, kept


def score_inputs(model, pipeline, paths: list, datasets: list, *, batch_size: int = 32, workers: int = 0,
                 progress: bool = False, keep: int = 0) -> tuple[list, np.ndarray, list, list]:
    """Score the image files ``paths`` (through ``pipeline``'s eval transform), then every item of
    each dataset of ``datasets``. Returns the name of each image (its path, or the dataset's
    ``describe(i)``), scores float32 ``[N, C]``, the errors and ``[(row, image [3, S, S])]`` of
    the first ``keep`` scored images."""
    parts = [(ImageFiles(paths, pipeline), list(paths))]
    parts += [(DatasetItems(ds), [ds.describe(i) for i in range(len(ds))]) for ds in datasets]
    names, errors, chunks, kept = [], [], [], []
    for items, item_names in parts:
        s, e, k = predict_images(model, items, batch_size=batch_size, workers=workers, progress=progress,
                                 keep=keep - len(kept))
        kept += [(len(names) + i, img) for i, img in sorted(k.items())]
        names += item_names
        errors += e
        chunks.append(s)
    return names, np.concatenate(chunks), errors, kept


def write_predictions(path: str, fmt: str, names: list, scores: np.ndarray, errors: list, class_names: list,
                      thresholds: np.ndarray, meta: dict | None = None, extra: dict | None = None) -> None:
    """CSV or JSON (``fmt``) with one row per image (see the module docstring); ``extra`` maps
    further column names to one string per image, appended after ``positives``; ``meta`` goes
    into the JSON beside ``class_names``, ``thresholds`` and ``predictions``."""
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
