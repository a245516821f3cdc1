"""NIH ChestX-ray14 in its published layout (dataset name ``"nih"``).

``root`` holds ``Data_Entry_2017.csv`` (or ``Data_Entry_2017_v2020.csv``), for the official split
``train_val_list.txt`` and ``test_list.txt``, and the PNGs in ``images/``, ``images_*/images/``
or ``images_*/``. Labels come from "Finding Labels" split on "|" ("No Finding" -> all
negative; every label is known). Patients come from "Patient ID".

Splits (``split_mode``):

* ``"official"`` (default): test = ``test_list.txt``; train and val = ``train_val_list.txt`` with
  ``val_fraction`` of its patients (seeded) carved out as val.
* ``"random"``: LDR's protocol -- all images, a seeded random patient-level partition into
  train / val / test with ``1 - val_fraction - test_fraction`` / ``val_fraction`` /
  ``test_fraction`` of the patients (7:1:2 with ``val_fraction=0.1, test_fraction=0.2``).

``views`` keeps "all" images, the "frontal" ones (View Position PA or AP: every NIH image is
frontal, so this keeps all of them), or only "PA" / only "AP". The split is made before the view
filter, so a patient's split does not depend on it. A patient in two splits raises ``ValueError``
naming the files.
"""
from __future__ import annotations

import glob
import os

import numpy as np

from ..base import check_split
from ..labels.sets import NIH_CLASS_NAMES
from ..splits import check_disjoint_groups, group_split
from .image_files import FileImageDataset, check_intensity
from .tables import column_index, parse_views, read_csv, require_nonempty

__all__ = ["NIHChestXray14"]

ENTRY_FILES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
SPLIT_MODES = ("official", "random")
VIEWS = ("frontal", "PA", "AP")
_SPLIT_SALT = 0x1114


class NIHChestXray14(FileImageDataset):
    """NIH ChestX-ray14 (see the module docstring)."""

    sample_fields = FileImageDataset.sample_fields + ("image_names", "view_positions")

    def __init__(self, root, split: str = "train", *, split_mode: str = "official", val_fraction: float = 0.1,
                 test_fraction: float = 0.2, views="all", image_size: int = 224, seed: int = 0,
                 split_seed: int | None = None, intensity: str = "bit_depth", transform=None):
        self.split = check_split(split)
        if split_mode not in SPLIT_MODES:
            raise ValueError(f"nih: split_mode must be one of {list(SPLIT_MODES)}, got {split_mode!r}")
        keep_views = parse_views(views, VIEWS, "nih")
        self.intensity = check_intensity(intensity)
        if root is None:
            raise ValueError("root: the 'nih' dataset needs root=<ChestX-ray14 folder>")
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"nih: directory not found: {root}")
        entry = next((os.path.join(root, f) for f in ENTRY_FILES if os.path.isfile(os.path.join(root, f))), None)
        if entry is None:
            raise FileNotFoundError(f"nih: none of {list(ENTRY_FILES)} found in {root} "
                                    "(expected the NIH ChestX-ray14 layout)")
        table = self._read_entry(entry, need_view=keep_views is not None)
        seed = seed if split_seed is None else split_seed

        if split_mode == "official":
            lists = {s: os.path.join(root, f) for s, f in (("train_val", "train_val_list.txt"), ("test", "test_list.txt"))}
            names = {s: self._read_list(p, table, entry) for s, p in lists.items()}
            check_disjoint_groups({p: [table[n][1] for n in names[s]] for s, p in lists.items()}, dataset="nih")
            if split == "test":
                wanted, source = names["test"], lists["test"]
            else:
                if not 0 <= val_fraction < 1:
                    raise ValueError(f"nih: val_fraction must be in [0, 1), got {val_fraction}")
                part = group_split([table[n][1] for n in names["train_val"]], seed=seed,
                                   val_fraction=val_fraction, test_fraction=0.0, salt=_SPLIT_SALT)
                wanted, source = [names["train_val"][k] for k in part[split]], lists["train_val"]
        else:
            every = list(table)
            part = group_split([table[n][1] for n in every], seed=seed, val_fraction=val_fraction,
                               test_fraction=test_fraction, salt=_SPLIT_SALT)
            wanted, source = [every[k] for k in part[split]], entry
        if keep_views is not None:
            wanted = [n for n in wanted if table[n][2] in keep_views or
                      ("frontal" in keep_views and table[n][2] in ("PA", "AP"))]
        require_nonempty(len(wanted), "nih", split, source, f" (split_mode={split_mode!r}, views={views!r})")

        index = {c: k for k, c in enumerate(NIH_CLASS_NAMES)}
        labels = np.zeros((len(wanted), len(NIH_CLASS_NAMES)), dtype=np.float32)
        for r, n in enumerate(wanted):
            for finding in table[n][0]:
                labels[r, index[finding]] = 1.0
        self.name = "nih"
        self.root = root
        self.entry_file = entry
        self.split_mode = split_mode
        self.image_size = int(image_size)
        self.transform = transform
        self.class_names = list(NIH_CLASS_NAMES)
        self.labels = labels
        self.image_names = wanted
        self.patient_ids = [table[n][1] for n in wanted]
        self.view_positions = [table[n][2] for n in wanted]
        located = self._index_images(root)
        fallback = os.path.join(root, "images")
        self.paths = [located.get(n, os.path.join(fallback, n)) for n in wanted]

    @staticmethod
    def _read_entry(entry: str, need_view: bool) -> dict:
        """Image Index -> (findings tuple, patient id, view position or "") from Data_Entry_2017*.csv
        (the View Position column is required only by a view filter)."""
        header, rows = read_csv(entry, "nih")
        ii, fi, pi = (column_index(header, c, entry, "nih") for c in ("Image Index", "Finding Labels", "Patient ID"))
        vi = column_index(header, "View Position", entry, "nih") if need_view else (
            header.index("View Position") if "View Position" in header else None)
        known = set(NIH_CLASS_NAMES)
        table = {}
        for line, cells in rows:
            findings = tuple(f.strip() for f in cells[fi].split("|") if f.strip() not in ("", "No Finding"))
            unknown = [f for f in findings if f not in known]
            if unknown:
                raise ValueError(f"nih: {entry}: line {line}, column 'Finding Labels': unknown finding(s) "
                                 f"{unknown} (known: {NIH_CLASS_NAMES} and 'No Finding')")
            name = cells[ii].strip()
            if name in table:
                raise ValueError(f"nih: {entry}: line {line}: image {name!r} listed twice")
            patient = cells[pi].strip()
            if not patient:
                raise ValueError(f"nih: {entry}: line {line}, column 'Patient ID' is blank")
            table[name] = (findings, patient, cells[vi].strip() if vi is not None else "")
        if not table:
            raise ValueError(f"nih: {entry} has a header but no rows")
        return table

    @staticmethod
    def _read_list(path: str, table: dict, entry: str) -> list:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"nih: {os.path.basename(path)} not found in {os.path.dirname(path)} "
                                    "(needed by split_mode='official'; split_mode='random' needs no lists)")
        with open(path) as f:
            names = [ln.strip() for ln in f if ln.strip()]
        missing = [n for n in names if n not in table]
        if missing:
            raise ValueError(f"nih: {len(missing)} images of {path} are missing from {entry}, e.g. {missing[:3]}")
        return names

    @staticmethod
    def _index_images(root: str) -> dict:
        """File name -> path for the PNGs of the published folders (one directory scan, no
        per-image stat: the table has 112k rows)."""
        dirs = [os.path.join(root, "images")] + sorted(glob.glob(os.path.join(root, "images_*", "images")))
        dirs += sorted(glob.glob(os.path.join(root, "images_*")))
        found: dict = {}
        for d in dirs:
            if os.path.isdir(d):
                with os.scandir(d) as it:
                    for e in it:
                        found.setdefault(e.name, e.path)
        return found
