"""The generic "image folder + CSV of 0/1 label columns" reader (dataset name ``"csv"``)."""
from __future__ import annotations

import os

import numpy as np

from ..base import CHANNELS, check_split
from ..splits import check_disjoint_groups, group_split
from .image_files import FileImageDataset, check_intensity
from .tables import LabelDecoder, column_index, read_csv, require_nonempty

__all__ = ["CSVImageDataset"]

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}


class CSVImageDataset(FileImageDataset):
    """Image folder + CSV: one image-path column (relative to ``root``) and label columns.

    Label cells are ``1`` / ``0`` / blank or ``nan`` (unknown -> NaN, masked); ``-1`` only with
    an ``uncertain`` policy (``"u_ones"``, ``"u_zeros"``, ``"ignore"``); any other value raises
    ``ValueError`` naming the file, line and column. Unreadable images are skipped and listed
    (see :mod:`fact_fast.data.cache`), never a crash.

    Args:
        root: directory the image paths are relative to (and the CSV, when relative).
        split: "train", "val" or "test".
        csv: CSV file name/path (default ``labels.csv``).
        image_col: column with image paths (default: the first column).
        label_cols: label columns (default: every column except the image, split and patient
            columns).
        split_col: column holding the split name (train/val/test; "valid", "validation",
            "dev", "training", "testing" accepted); if absent, a seeded random partition with
            ``val_fraction`` / ``test_fraction`` (by patient when ``patient_col`` is given).
        patient_col: optional patient id column: random splits are made by patient, and a split
            column that puts one patient in two splits raises ``ValueError``.
        channels: "gray" or "rgb" (what the images are decoded to).
        uncertain: policy for ``-1`` cells (None: ``-1`` is an error).
        split_seed: seed of the random partition (default: ``seed``).
        intensity: high-bit-depth rule, see :mod:`fact_fast.data.readers.image_files`.
    """

    def __init__(self, root, split: str = "train", *, csv: str = "labels.csv", image_col: str | None = None,
                 label_cols=None, split_col: str = "split", patient_col: str | None = None,
                 channels: str = "gray", uncertain: str | None = None, image_size: int = 224, seed: int = 0,
                 val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int | None = None,
                 intensity: str = "bit_depth", transform=None, name: str = "csv"):
        self.split = check_split(split)
        if root is None:
            raise ValueError(f"root: the {name!r} dataset needs root=<image folder>")
        if channels not in CHANNELS:
            raise ValueError(f"channels must be one of {list(CHANNELS)}, got {channels!r}")
        self.intensity = check_intensity(intensity)
        decode = LabelDecoder(uncertain)
        root = os.fspath(root)
        csv_path = csv if os.path.isabs(csv) else os.path.join(root, csv)
        if not os.path.isfile(csv_path):
            raise FileNotFoundError(
                f"{name}: label CSV not found: {csv_path} (pass csv=<file> relative to root={root})")
        header, rows = read_csv(csv_path, name)
        image_col = header[0] if image_col is None else image_col
        ii = column_index(header, image_col, csv_path, name, "image_col")
        si = header.index(split_col) if split_col in header else None
        pi = None if patient_col is None else column_index(header, patient_col, csv_path, name, "patient_col")
        special = {ii, si, pi}
        if label_cols is None:
            label_cols = [h for k, h in enumerate(header) if k not in special]
        else:
            label_cols = list(label_cols)
            missing = [c for c in label_cols if c not in header]
            if missing:
                raise ValueError(f"{name}: label_cols: columns {missing} missing from {csv_path} (columns: {header})")
        if not label_cols:
            raise ValueError(f"{name}: label_cols: no label columns in {csv_path} (columns: {header})")
        li = [header.index(c) for c in label_cols]

        paths, labels, split_names, patients = [], [], [], []
        for line, cells in rows:
            paths.append(os.path.join(root, cells[ii].strip()))
            labels.append(decode.row(cells, li, header, csv_path, line))
            if si is not None:
                value = cells[si].strip().lower()
                if value not in SPLIT_ALIASES:
                    raise ValueError(f"{name}: {csv_path}: line {line}, column {split_col!r}: unknown split "
                                     f"{cells[si]!r}; expected one of {list(SPLIT_ALIASES)}")
                split_names.append(SPLIT_ALIASES[value])
            if pi is not None:
                patients.append(cells[pi].strip())
        if not paths:
            raise ValueError(f"{name}: {csv_path} has a header but no rows")

        if si is not None:
            if pi is not None:
                check_disjoint_groups({f"{s} rows of {csv_path}": [p for p, t in zip(patients, split_names) if t == s]
                                       for s in ("train", "val", "test")}, dataset=name)
            idx = np.array([k for k, s in enumerate(split_names) if s == split], dtype=np.int64)
        else:
            groups = patients if pi is not None else [str(k) for k in range(len(paths))]
            idx = group_split(groups, seed=seed if split_seed is None else split_seed,
                              val_fraction=val_fraction, test_fraction=test_fraction)[split]
        require_nonempty(len(idx), name, split, csv_path,
                         f" (column {split_col!r})" if si is not None else
                         f" (random split: val_fraction={val_fraction}, test_fraction={test_fraction})")

        self.name = name
        self.root = root
        self.csv_path = csv_path
        self.channels = channels
        self.image_size = int(image_size)
        self.transform = transform
        self.class_names = list(label_cols)
        self.paths = [paths[k] for k in idx]
        self.labels = np.asarray(labels, dtype=np.float32)[idx].reshape(-1, len(label_cols))
        self.patient_ids = [patients[k] for k in idx] if pi is not None else None
