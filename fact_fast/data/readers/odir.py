"""ODIR-5K (Ocular Disease Intelligent Recognition) in its published layout.

The annotation workbook has one row per patient::

    ID, Patient Age, Patient Sex, Left-Fundus, Right-Fundus,
    Left-Diagnostic Keywords, Right-Diagnostic Keywords, N, D, G, C, A, H, M, O

``Left-Fundus`` / ``Right-Fundus`` name the two colour fundus photographs (``0_left.jpg``,
``0_right.jpg``); the eight 0/1 columns are the **patient's** labels (a disease seen in either
eye). They map to the full names of :data:`~fact_fast.data.labels.sets.ODIR_CLASS_NAMES`
(N -> Normal, D -> Diabetes, ..., O -> Other diseases/abnormalities), the keys of the shipped
text embeddings. A blank label cell is unknown (NaN); any other value than 0/1 is an error.

Layouts found under ``root`` (or give ``annotations=`` and ``image_dir=``):

* the challenge release: ``ODIR-5K_Training_Annotations(Updated)_V2.xlsx`` beside
  ``ODIR-5K_Training_Dataset/``;
* the common re-distribution: ``data.xlsx`` beside ``Training Images/`` (also one or two
  ``ODIR-5K/`` levels down);
* the CSV export of either workbook (same columns, same stem, ``.csv``).

Only the training set has public labels, so train/val/test are a seeded split of its patients
(``val_fraction`` 0.1, ``test_fraction`` 0.2 by default: 7:1:2), never separating a patient's
two eyes. ``eyes="both"`` (default of :func:`build_odir`) gives one two-view item per patient
(:class:`~fact_fast.data.base.MultiViewDataset`); ``"left"`` / ``"right"`` one image per
patient; ``"each"`` both images as separate samples, each with the patient's labels.
"""
from __future__ import annotations

import csv
import os

import numpy as np

from ..base import MultiLabelDataset, MultiViewDataset, check_split, parse_label_cells
from ..labels.sets import ODIR_CLASS_NAMES
from ..splits import group_split
from .image_files import read_image_file

__all__ = ["ODIR5K", "ODIR_LABEL_COLUMNS", "build_odir", "crop_fundus_border", "read_table"]

# workbook column -> class, in the order of ODIR_CLASS_NAMES
ODIR_LABEL_COLUMNS = ("N", "D", "G", "C", "A", "H", "M", "O")
_REQUIRED = ("ID", "Left-Fundus", "Right-Fundus") + ODIR_LABEL_COLUMNS
# (annotation file stem, image folder) of the known layouts
_LAYOUTS = (
    ("ODIR-5K_Training_Annotations(Updated)_V2", "ODIR-5K_Training_Dataset"),
    ("data", "Training Images"),
)
EYES = ("both", "left", "right", "each")


def read_table(path: str) -> tuple[list, list]:
    """Header and rows (lists of stripped strings) of an ``.xlsx`` workbook's first sheet or a
    ``.csv`` file. Numbers that are whole come back without a decimal part (``1.0`` -> ``"1"``)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [[c.strip() for c in r] for r in csv.reader(f)]
    elif ext in (".xlsx", ".xlsm"):
        try:
            import openpyxl
        except ImportError:
            raise ImportError(f"odir: reading {path} needs openpyxl (pip install openpyxl, or "
                              "fact_fast[data]); or pass the workbook's CSV export as annotations=") from None
        try:
            wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises zipfile/KeyError/InvalidFileException variants
            raise ValueError(f"odir: cannot read workbook {path} ({type(exc).__name__}: {exc})") from None
        try:
            rows = [[_cell_text(v) for v in r] for r in wb.worksheets[0].iter_rows(values_only=True)]
        finally:
            wb.close()
    else:
        raise ValueError(f"odir: annotations must be an .xlsx workbook or a .csv export, got {path}")
    rows = [r for r in rows if any(r)]
    if not rows:
        raise ValueError(f"odir: {path} is empty")
    return rows[0], rows[1:]


def _cell_text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def crop_fundus_border(img: np.ndarray, threshold: int = 10, min_fraction: float = 0.01) -> np.ndarray:
    """Crop the black border around a fundus photograph and pad the result to a square.

    Args:
        img: uint8 ``[H, W, 3]`` (or ``[H, W]``).
        threshold: a pixel is fundus when any channel is above it.
        min_fraction: a row (column) belongs to the fundus when more than this fraction of its
            pixels do, so isolated noise or burnt-in text in the border does not widen the box.

    Returns:
        uint8 ``[S, S, 3]`` (``[S, S]``): the bounding box of the fundus, centred on a black
        square of side ``S = max(box height, box width)``. An image with no pixel above
        ``threshold`` is returned unchanged.
    """
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise TypeError(f"crop_fundus_border expects a uint8 [H, W] or [H, W, 3] image, "
                        f"got {arr.dtype} {list(arr.shape)}")
    bright = (arr.max(axis=2) if arr.ndim == 3 else arr) > threshold
    h, w = bright.shape
    rows = np.flatnonzero(bright.sum(axis=1) > min_fraction * w)
    cols = np.flatnonzero(bright.sum(axis=0) > min_fraction * h)
    if rows.size == 0 or cols.size == 0:
        return arr
    box = arr[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    bh, bw = box.shape[:2]
    side = max(bh, bw)
    out = np.zeros((side, side) + arr.shape[2:], dtype=np.uint8)
    top, left = (side - bh) // 2, (side - bw) // 2
    out[top:top + bh, left:left + bw] = box
    return out


def _find_layout(root, annotations, image_dir):
    """(annotation file, image folder) from explicit paths or the known layouts under root."""
    def under_root(p):
        return p if p is None or os.path.isabs(p) or root is None else os.path.join(root, p)

    annotations, image_dir = under_root(annotations), under_root(image_dir)
    if annotations is None:
        if root is None:
            raise ValueError("root: the 'odir' dataset needs root=<ODIR-5K folder> "
                             "(or annotations=<workbook> and image_dir=<image folder>)")
        bases = (root, os.path.join(root, "ODIR-5K"), os.path.join(root, "ODIR-5K", "ODIR-5K"))
        tried = [os.path.join(b, stem + ext) for b in bases for stem, _ in _LAYOUTS for ext in (".xlsx", ".csv")]
        annotations = next((t for t in tried if os.path.isfile(t)), None)
        if annotations is None:
            raise FileNotFoundError(
                f"odir: no ODIR-5K annotation file under {root} (looked for "
                f"{sorted({os.path.basename(t) for t in tried})} in it, ODIR-5K/ and ODIR-5K/ODIR-5K/); "
                "pass annotations=<.xlsx or .csv> and image_dir=<image folder>")
    elif not os.path.isfile(annotations):
        raise FileNotFoundError(f"odir: annotation file not found: {annotations}")
    if image_dir is None:
        base = os.path.dirname(annotations)
        candidates = [os.path.join(base, images) for _, images in _LAYOUTS]
        image_dir = next((c for c in candidates if os.path.isdir(c)), None)
        if image_dir is None:
            raise FileNotFoundError(f"odir: no image folder {[os.path.basename(c) for c in candidates]} "
                                    f"beside {annotations}; pass image_dir=<folder with the fundus .jpg files>")
    elif not os.path.isdir(image_dir):
        raise FileNotFoundError(f"odir: image folder not found: {image_dir}")
    return annotations, image_dir


class ODIR5K(MultiLabelDataset):
    """ODIR-5K fundus photographs, one sample per image (see the module docstring).

    Args:
        root: folder holding one of the known layouts (see the module docstring).
        split: "train", "val" or "test" (a seeded split of the patients).
        annotations / image_dir: explicit annotation file (``.xlsx`` or ``.csv``) and image
            folder (relative paths are relative to ``root``).
        eyes: "left", "right" or "each" (both images, separately). :func:`build_odir` also
            offers "both" (one two-view item per patient).
        crop_border: crop the black border around the fundus and pad to a square
            (:func:`crop_fundus_border` with ``border_threshold``) before resizing.
        val_fraction / test_fraction / seed: the patient split.

    Attributes: ``paths``, ``patient_ids`` (the workbook's ``ID``), ``eye`` ("left"/"right"),
    ``keywords`` (that eye's diagnostic keywords), ``annotations``, ``image_dir``; labels are
    the patient's, float32 ``[N, 8]``.
    """

    name = "odir"
    channels = "rgb"

    def __init__(self, root: str | None = None, split: str = "train", *, annotations: str | None = None,
                 image_dir: str | None = None, eyes: str = "each", crop_border: bool = False,
                 border_threshold: int = 10, image_size: int = 224, seed: int = 0,
                 val_fraction: float = 0.1, test_fraction: float = 0.2, transform=None):
        self.split = check_split(split)
        if eyes not in ("left", "right", "each"):
            hint = " (eyes='both' is built by build_odir / build_dataset('odir'))" if eyes == "both" else ""
            raise ValueError(f"eyes must be one of ['left', 'right', 'each'], got {eyes!r}{hint}")
        root = None if root is None else os.fspath(root)
        ann, images = _find_layout(root, annotations, image_dir)
        header, rows = read_table(ann)
        header = [h.strip() for h in header]
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise ValueError(f"odir: columns {missing} missing from {ann} (columns: {header})")
        col = {h: k for k, h in enumerate(header)}
        rows = [r + [""] * (len(header) - len(r)) for r in rows]  # CSV rows may end early

        ids, files, keywords = [], [], []
        seen = set()
        for r in rows:
            pid = r[col["ID"]]
            if pid == "":
                raise ValueError(f"odir: a row of {ann} has an empty ID: {r}")
            if pid in seen:
                raise ValueError(f"odir: patient ID {pid} appears twice in {ann}")
            seen.add(pid)
            ids.append(pid)
            pair = [r[col[c]] for c in ("Left-Fundus", "Right-Fundus")]
            for name, column in zip(pair, ("Left-Fundus", "Right-Fundus")):
                if name == "":
                    raise ValueError(f"odir: {ann}: {column} of patient ID {pid} is empty")
            files.append(pair)
            keywords.append([r[col[c]] if c in col else "" for c in
                             ("Left-Diagnostic Keywords", "Right-Diagnostic Keywords")])
        labels = parse_label_cells(rows, [col[c] for c in ODIR_LABEL_COLUMNS], ODIR_LABEL_COLUMNS,
                                   f"odir: {ann}", row_name=lambda i: f"patient ID {ids[i]}")

        keep = set(group_split(ids, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                               salt=0x0D1B)[split].tolist())
        sides = {"left": (0,), "right": (1,), "each": (0, 1)}[eyes]
        self.paths, self.patient_ids, self.eye, self.keywords, rows_of = [], [], [], [], []
        for p in sorted(keep):
            for s in sides:
                path = os.path.join(images, files[p][s])
                if not os.path.isfile(path):
                    self.skipped.append((path, "file not found"))
                    continue
                self.paths.append(path)
                self.patient_ids.append(ids[p])
                self.eye.append(("left", "right")[s])
                self.keywords.append(keywords[p][s])
                rows_of.append(p)
        if keep and not self.paths:
            raise FileNotFoundError(f"odir: none of the {split} images named in {ann} is in {images} "
                                    f"(first missing: {self.skipped[0][0]})")
        self.labels = labels[rows_of]
        self.class_names = list(ODIR_CLASS_NAMES)
        self.annotations, self.image_dir = ann, images
        self.crop_border, self.border_threshold = bool(crop_border), int(border_threshold)
        self.image_size = int(image_size)
        self.transform = transform

    @property
    def image_options(self) -> dict:
        return {"crop_border": self.crop_border, "border_threshold": self.border_threshold}

    def load_raw(self, i: int) -> np.ndarray:
        path = self.paths[i]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"odir: image file not found: {path}")
        img = read_image_file(path, "rgb")
        return crop_fundus_border(img, self.border_threshold) if self.crop_border else img


def build_odir(split, root=None, image_size=224, seed=0, eyes: str = "both", **kw):
    """Registry builder: ``eyes="both"`` (default) returns a
    :class:`~fact_fast.data.base.MultiViewDataset` of the two eyes of each patient (views
    [left, right]; a missing image leaves one view); the engine fuses their scores by max and
    evaluates per patient. Other ``eyes`` values return :class:`ODIR5K`."""
    if eyes not in EYES:
        raise ValueError(f"eyes must be one of {list(EYES)}, got {eyes!r}")
    ds = ODIR5K(root, split, image_size=image_size, seed=seed, eyes="each" if eyes == "both" else eyes, **kw)
    return MultiViewDataset(ds, "patient_ids", max_views=2) if eyes == "both" else ds
