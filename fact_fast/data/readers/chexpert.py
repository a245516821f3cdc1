"""CheXpert and MIMIC-CXR-style label tables (dataset name ``"chexpert"``).

``root`` is the folder holding the unzipped ``CheXpert-v1.0-small/`` (or ``CheXpert-v1.0/``), or
that folder itself; it holds ``train.csv`` and ``valid.csv`` with a ``Path`` column
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``), ``Frontal/Lateral``,
``AP/PA`` and the 14 observation columns. Image paths are resolved inside the dataset folder
(the leading ``CheXpert-v1.0*`` component is replaced by it, so a renamed folder works). Any
other table with a path column and these class columns (e.g. MIMIC-CXR-JPG paths with the
CheXpert-labeler columns) is read with ``train_csv=`` / ``test_csv=``.

Splits: test = ``test_csv`` (default ``valid.csv``, the 234 radiologist-labelled images; pass
``test_csv="test_labels.csv"`` for the later test release); train and val = ``train_csv`` with
``val_fraction`` of its patients (seeded) carved out as val. Patients come from a
``subject_id`` / ``patient_id`` / ``Patient ID`` column when the table has one, else from the path
(``patient00001`` in CheXpert, ``p10000032`` in MIMIC-CXR); studies likewise (``study1``,
``s50414267`` or a ``study_id`` column). A patient in both tables raises ``ValueError`` (checked
when the train or val split is built).

Labels: ``1`` / ``0`` / ``-1`` / blank = positive / negative / uncertain / not mentioned.
``uncertain`` maps -1 to 1 (``"u_ones"``), 0 (``"u_zeros"``) or NaN (``"ignore"``, default, as
torchxrayvision); ``blank`` maps a blank cell to NaN (``"unknown"``, default) or 0
(``"negative"``). NaN targets are masked in every loss and metric. ``views``: "all", "frontal",
"lateral", "PA" or "AP" (or a list of them).
"""
from __future__ import annotations

import os
import re

import numpy as np

from ..base import check_split
from ..labels.sets import CHEXPERT_CLASS_NAMES
from ..splits import check_disjoint_groups, group_split
from .image_files import FileImageDataset, check_intensity
from .tables import LabelDecoder, column_index, parse_views, read_csv, require_nonempty

__all__ = ["CheXpert"]

DATASET_DIRS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
VIEWS = ("frontal", "lateral", "PA", "AP")
PATIENT_COLUMNS = ("subject_id", "patient_id", "Patient ID")
STUDY_COLUMNS = ("study_id", "Study ID")
# patient folder, then (optionally) the study folder right below it
_IDS_IN_PATH = re.compile(r"(?:^|/)(patient\d+|p\d{8})(?:/(study\d+|s\d{8})(?:/|$)|/|$)")
_SPLIT_SALT = 0xC4E7


class CheXpert(FileImageDataset):
    """CheXpert / MIMIC-CXR-style table reader (see the module docstring)."""

    sample_fields = FileImageDataset.sample_fields + ("views",)

    def __init__(self, root, split: str = "train", *, uncertain: str = "ignore", blank: str = "unknown",
                 views="all", classes=None, val_fraction: float = 0.1, train_csv: str = "train.csv",
                 test_csv: str = "valid.csv", path_col: str = "Path", image_size: int = 224, seed: int = 0,
                 split_seed: int | None = None, intensity: str = "bit_depth", transform=None,
                 name: str = "chexpert"):
        self.split = check_split(split)
        decode = LabelDecoder(uncertain, blank)
        keep_views = parse_views(views, VIEWS, name)
        self.intensity = check_intensity(intensity)
        classes = list(CHEXPERT_CLASS_NAMES if classes is None else classes)
        if not classes:
            raise ValueError(f"{name}: classes must not be empty")
        if root is None:
            raise ValueError(f"root: the {name!r} dataset needs root=<folder holding CheXpert-v1.0-small/>")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"{name}: val_fraction must be in [0, 1), got {val_fraction}")
        data_dir = self._find_dataset_dir(os.fspath(root), train_csv, name)
        csv_of = {s: os.path.join(data_dir, test_csv if s == "test" else train_csv) for s in ("train", "test")}
        source = csv_of["test" if split == "test" else "train"]
        rows = self._read_table(source, classes, decode, path_col, keep_views, data_dir, name)
        if split != "test":
            if not os.path.isfile(csv_of["test"]):
                raise FileNotFoundError(f"{name}: test table {csv_of['test']} not found (test_csv=)")
            test_rows = self._read_table(csv_of["test"], classes, decode, path_col, None, data_dir, name)
            check_disjoint_groups({source: rows["patients"], csv_of["test"]: test_rows["patients"]}, dataset=name)
            part = group_split(rows["patients"], seed=seed if split_seed is None else split_seed,
                               val_fraction=val_fraction, test_fraction=0.0, salt=_SPLIT_SALT)[split]
            rows = {k: [v[i] for i in part] for k, v in rows.items()}
        if keep_views is not None:
            kept = [i for i, v in enumerate(rows["views"]) if v & keep_views]
            rows = {k: [v[i] for i in kept] for k, v in rows.items()}
        require_nonempty(len(rows["paths"]), name, split, source, f" (views={views!r})")

        self.name = name
        self.root = data_dir
        self.csv_path = source
        self.uncertain, self.blank = uncertain, blank
        self.image_size = int(image_size)
        self.transform = transform
        self.class_names = classes
        self.labels = np.asarray(rows["labels"], dtype=np.float32).reshape(-1, len(classes))
        self.paths = rows["paths"]
        self.patient_ids = rows["patients"]
        self.study_ids = rows["studies"] if all(rows["studies"]) else None
        self.views = rows["views"]  # frozenset per image: {"frontal"|"lateral"} plus "AP"/"PA" if given

    @staticmethod
    def _find_dataset_dir(root: str, train_csv: str, name: str) -> str:
        candidates = [root] + [os.path.join(root, d) for d in DATASET_DIRS]
        for d in candidates:
            if os.path.isfile(os.path.join(d, train_csv)):
                return d
        raise FileNotFoundError(f"{name}: {train_csv} not found in any of {candidates} (root= is the folder "
                                "holding the unzipped CheXpert-v1.0-small/ or that folder itself)")

    @staticmethod
    def _read_table(path: str, classes, decode, path_col, keep_views, data_dir, name) -> dict:
        """Rows of one table -> dict of per-row lists (paths, labels, patients, studies, views)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{name}: {path} not found")
        header, lines = read_csv(path, name)
        pi = column_index(header, path_col, path, name, "path_col")
        ci = [column_index(header, c, path, name, "classes") for c in classes]
        fl = column_index(header, "Frontal/Lateral", path, name) if keep_views is not None else (
            header.index("Frontal/Lateral") if "Frontal/Lateral" in header else None)
        ap = header.index("AP/PA") if "AP/PA" in header else None
        patient_col = next((header.index(c) for c in PATIENT_COLUMNS if c in header), None)
        study_col = next((header.index(c) for c in STUDY_COLUMNS if c in header), None)
        out = {"paths": [], "labels": [], "patients": [], "studies": [], "views": []}
        paths, labels, patients, studies, views = (out[k] for k in ("paths", "labels", "patients", "studies", "views"))
        prefix, folder = os.path.join(data_dir, ""), os.path.basename(os.path.normpath(data_dir))
        ids_in_path = _IDS_IN_PATH.search
        view_of = {}  # (Frontal/Lateral, AP/PA) cells -> frozenset, validated once per spelling
        for line, cells in lines:  # a tight loop: CheXpert's train.csv has 223k rows
            rel = cells[pi].strip().replace("\\", "/")
            m = ids_in_path(rel)
            patient = cells[patient_col].strip() if patient_col is not None else (m.group(1) if m else "")
            if not patient:
                raise ValueError(f"{name}: {path}: line {line}: no patient id in path {rel!r} (expected a "
                                 f"'patientNNNNN' or 'pNNNNNNNN' folder, or a column among {list(PATIENT_COLUMNS)})")
            if study_col is not None:
                studies.append(cells[study_col].strip())
            else:
                study = m.group(2) if m else None
                studies.append(f"{patient}/{study}" if study else "")
            key = (cells[fl] if fl is not None else "", cells[ap] if ap is not None else "")
            view = view_of.get(key)
            if view is None:
                view = view_of[key] = _view(key, fl is not None, name, path, line)
            # the table's leading dataset-folder component (CheXpert-v1.0-small/) is data_dir
            head, _, rest = rel.partition("/")
            paths.append(prefix + (rest if rest and (head.startswith("CheXpert-v1.0") or head == folder) else rel))
            labels.append(decode.row(cells, ci, header, path, line))
            patients.append(patient)
            views.append(view)
        return out


def _view(cells: tuple, has_orientation: bool, name: str, path: str, line: int) -> frozenset:
    """(Frontal/Lateral, AP/PA) cells -> {"frontal"|"lateral"} plus "AP"/"PA" when given."""
    if not has_orientation:
        return frozenset()
    orientation, position = cells[0].strip().lower(), cells[1].strip()
    if orientation not in ("frontal", "lateral"):
        raise ValueError(f"{name}: {path}: line {line}, column 'Frontal/Lateral': expected "
                         f"'Frontal' or 'Lateral', got {cells[0]!r}")
    return frozenset((orientation, position) if position in ("AP", "PA") else (orientation,))
