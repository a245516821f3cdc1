"""What ``predict`` scores: image files, folders, CSV listings and dataset splits, as items
``(index, image float32 [3, S, S] | None, error)`` of a torch Dataset.

An item that cannot be scored carries its reason instead of an image: a missing file, an
unreadable or corrupt file, or an image too small for the model (shorter side below
1/:data:`MAX_UPSCALE` of the model's input side; blowing an image up more than 8 times gives the
model blur, not anatomy).
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence

import torch

from fact_fast.data.base import DECODE_ERRORS
from fact_fast.data.datasets import read_image_file

__all__ = ["InputError", "resolve_inputs", "min_image_side", "ImageFiles", "DatasetItems", "collate_items",
           "IMAGE_EXTENSIONS", "MAX_UPSCALE"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PATH_COLUMNS = ("path", "Path", "fpath", "Image Index", "image", "filename")
LABEL_VALUES = {"", "0", "1", "-1", "0.0", "1.0", "-1.0", "nan", "NaN"}
MAX_UPSCALE = 8


class InputError(ValueError):
    """An INPUT argument that cannot be used: unknown kind, missing CSV/folder, wrong label set."""


def min_image_side(pipeline) -> int:
    """Smallest accepted shorter side (px) of an input image for ``pipeline`` (an ImagePipeline):
    the model's resize side divided by :data:`MAX_UPSCALE`, rounded up."""
    return max(1, math.ceil(pipeline.resize_to / MAX_UPSCALE))


def _csv_paths(path: str, class_names: Sequence[str]) -> list:
    """The image paths a CSV lists (its path column, else the first), relative to its folder.
    Columns whose every value is 0, 1, -1 or empty are label columns; when there are any they must
    be exactly ``class_names`` (a CSV labelled for another task is the wrong input)."""
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


class ImageFiles(torch.utils.data.Dataset):
    """Image files through ``pipeline``'s eval transform: ``(index, image [3, S, S] | None, error)``."""

    def __init__(self, paths: list, pipeline):
        self.paths, self.pipeline = paths, pipeline
        self.transform = pipeline.build(train=False)
        self.min_side = min_image_side(pipeline)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
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


class DatasetItems(torch.utils.data.Dataset):
    """A MultiLabelDataset as ``(index, image | None, error)`` (its transform is the eval one)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        item = self.ds[i]  # None when the file cannot be decoded (the dataset warns with the file)
        return (i, None, "unreadable image") if item is None else (i, item[0], "")


def collate_items(batch):
    """``(indices, images [b, 3, S, S] of the items with an image | None, errors)``."""
    idx = [b[0] for b in batch]
    errors = [b[2] for b in batch]
    ok = [b for b in batch if b[1] is not None]
    images = torch.stack([b[1] for b in ok]) if ok else None
    return idx, images, errors
