"""CXR-LT 2023 / 2024 (long-tailed multi-label chest X-ray) over a MIMIC-CXR-JPG root.

The label files come from the PhysioNet project ``cxr-lt-iccv-workshop-cvamd`` (folders
``cxr-lt-2023/`` and ``cxr-lt-2024/``); the images are MIMIC-CXR-JPG's
``files/p1x/p<subject>/s<study>/<dicom_id>.jpg``. One file per split:

========  =========================================  ==========================================
version   columns                                    files (first one present and labelled)
========  =========================================  ==========================================
``2023``  ``dicom_id, subject_id, study_id, ...,``   train: ``train.csv``;
          ``path`` + 26 classes (``No Finding``)     val: ``development_labeled.csv``, ``development.csv``;
                                                     test: ``test_labeled.csv``, ``test.csv``
``2024``  ``dicom_id, subject_id, study_id,``        train: ``train_labeled.csv``;
          ``ViewPosition, ViewCodeSequence_Code``    val: ``development_labeled_task1.csv``,
          ``Meaning, fpath`` + 40 classes            ``development_labeled.csv``, ``development.csv``;
          (``Normal``)                               test: ``test_labeled_task1.csv``,
                                                     ``test_labeled.csv``, ``test.csv``
========  =========================================  ==========================================

Columns are found by name (``path`` or ``fpath`` for the image, ``study_id``, the class
columns; ``subject_id`` and ``dicom_id`` when present); other columns are ignored. Label cells
are 0 / 1, blank = unknown (NaN); anything else is an error naming the file, row and column.
``study_id`` is kept (``study_ids``) for study-level fusion (``fusion="study"`` in
:func:`build_cxr_lt`: up to ``max_views`` images of a study form one item).
"""
from __future__ import annotations

import csv
import os
import re

import numpy as np

from ..base import MultiLabelDataset, MultiViewDataset, check_split, parse_label_cells
from ..labels.sets import CXR_LT_2023_CLASS_NAMES, CXR_LT_CLASS_NAMES
from ..splits import check_disjoint_groups
from .image_files import read_image_file

__all__ = ["CXRLT", "CXR_LT_VERSIONS", "build_cxr_lt"]

CXR_LT_VERSIONS = {
    "2023": {
        "folder": "cxr-lt-2023",
        "classes": CXR_LT_2023_CLASS_NAMES,
        "files": {"train": ("train.csv",),
                  "val": ("development_labeled.csv", "development.csv"),
                  "test": ("test_labeled.csv", "test.csv")},
    },
    "2024": {
        "folder": "cxr-lt-2024",
        "classes": CXR_LT_CLASS_NAMES,
        "files": {"train": ("train_labeled.csv",),
                  "val": ("development_labeled_task1.csv", "development_labeled.csv", "development.csv"),
                  "test": ("test_labeled_task1.csv", "test_labeled.csv", "test.csv")},
    },
}
_PATH_COLUMNS = ("fpath", "path")
_SUBJECT_IN_PATH = re.compile(r"(?:^|/)p(\d+)/s\d+/")
_MIMIC_LEVEL = re.compile(r"[ps]\d+")  # files/p10/p10000032/s50414267/: never searched through


def _find_dirs(root: str, name: str, max_depth: int = 5, max_dirs: int = 20000) -> list:
    """Folders called ``name`` below ``root`` (breadth first, at most ``max_depth`` levels and
    ``max_dirs`` folders visited), without descending into MIMIC-CXR's patient/study folders."""
    found, level, visited = [], [root], 0
    for _ in range(max_depth):
        below = []
        for d in level:
            try:
                entries = sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))
            except OSError:
                continue
            for e in entries:
                path = os.path.join(d, e)
                if e == name:
                    found.append(path)
                if not _MIMIC_LEVEL.fullmatch(e):
                    below.append(path)
            visited += len(entries)
            if visited > max_dirs:
                return found
        level = below
    return found


def _header(path: str) -> list:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [h.strip() for h in next(csv.reader(f), [])]


def _find_labels_dir(root, version, labels_dir):
    if labels_dir is not None:
        labels_dir = labels_dir if os.path.isabs(labels_dir) or root is None else os.path.join(root, labels_dir)
        if not os.path.isdir(labels_dir):
            raise FileNotFoundError(f"cxr_lt: labels_dir not found: {labels_dir}")
        return labels_dir
    spec = CXR_LT_VERSIONS[version]
    train_file = spec["files"]["train"][0]
    # the label folder itself, or a cxr-lt-<year>/ folder below root
    if os.path.isfile(os.path.join(root, train_file)):
        return root
    for d in _find_dirs(root, spec["folder"]):
        if os.path.isfile(os.path.join(d, train_file)):
            return d
    raise FileNotFoundError(
        f"cxr_lt: no CXR-LT {version} label folder under {root} (looked for {train_file} in it and in "
        f"{spec['folder']}/ folders up to five levels down); pass labels_dir=<folder holding {train_file}>")


def _split_file(labels_dir, version, split, split_files, classes):
    """The label file of a split: the explicit one, or the first default that has the labels."""
    if split_files and split in split_files:
        p = split_files[split]
        p = p if os.path.isabs(p) else os.path.join(labels_dir, p)
        if not os.path.isfile(p):
            raise FileNotFoundError(f"cxr_lt: split_files[{split!r}] not found: {p}")
        return p
    names = CXR_LT_VERSIONS[version]["files"][split]
    present = [os.path.join(labels_dir, n) for n in names if os.path.isfile(os.path.join(labels_dir, n))]
    for p in present:
        if any(c in _header(p) for c in classes):  # labelled; missing class columns are reported later
            return p
    if present:
        raise ValueError(f"cxr_lt: {present[0]} has no label columns (none of the {len(classes)} CXR-LT {version} "
                         f"classes: the unlabelled challenge file?); put the labelled file beside it "
                         f"({', '.join(names)}) or pass split_files={{{split!r}: <labelled csv>}}")
    raise FileNotFoundError(f"cxr_lt: no {split} label file in {labels_dir} (looked for {list(names)}); "
                            f"pass split_files={{{split!r}: <csv>}}")


def _read_ids(path: str) -> tuple[str, list]:
    """(id kind, ids) for the leak check: subject ids when the file has them (or its image paths
    name them), else study ids."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if "subject_id" in header:
            k = header.index("subject_id")
            return "patients (subject_id)", [r[k].strip() for r in reader if len(r) > k]
        pcol = next((c for c in _PATH_COLUMNS if c in header), None)
        if pcol is not None:
            k = header.index(pcol)
            ids = [_subject_from_path(r[k]) for r in reader if len(r) > k]
            if ids and all(ids):
                return "patients (subject_id)", ids
        if "study_id" in header:
            f.seek(0)
            reader = csv.reader(f)
            next(reader)
            k = header.index("study_id")
            return "studies (study_id)", [r[k].strip() for r in reader if len(r) > k]
    return "", []


def _subject_from_path(path: str):
    m = _SUBJECT_IN_PATH.search(path.replace("\\", "/"))
    return m.group(1) if m else None


def _find_image_root(root, image_root, rel_paths, where):
    if image_root is not None:
        if not os.path.isdir(image_root):
            raise FileNotFoundError(f"cxr_lt: image_root not found: {image_root}")
        return image_root
    # root itself, its parent when it is MIMIC-CXR-JPG's files/ folder, or a folder holding
    # files/ below root (e.g. physionet.org/files/mimic-cxr-jpg/2.0.0/); searched only when
    # root itself does not hold the images
    probe = rel_paths[:50]

    def holds_images(base):
        return any(os.path.isfile(os.path.join(base, p)) for p in probe)

    root = os.path.normpath(root)
    for base in [root] + ([os.path.dirname(root)] if os.path.basename(root) == "files" else []):
        if holds_images(base):
            return base
    for files_dir in _find_dirs(root, "files"):
        if holds_images(os.path.dirname(files_dir)):
            return os.path.dirname(files_dir)
    raise FileNotFoundError(
        f"cxr_lt: none of the first images of {where} (e.g. {probe[0] if probe else '?'}) exists under "
        f"{root} or a folder holding files/ below it; pass image_root=<MIMIC-CXR-JPG folder holding files/>")


class CXRLT(MultiLabelDataset):
    """CXR-LT 2023 / 2024, one sample per image (see the module docstring).

    Args:
        root: MIMIC-CXR-JPG folder (holding ``files/``) or a folder above it and the label folder.
        split: "train", "val" (the development file) or "test".
        version: "2024" (40 classes, default) or "2023" (26 classes).
        labels_dir: folder holding the split files (default: ``root`` or a ``cxr-lt-<year>/``
            folder up to five levels below it).
        image_root: folder the ``path``/``fpath`` values are relative to (default: found under root).
        split_files: ``{split: csv}`` overriding the default file of a split.
        check_files: look every image up now; missing ones are dropped and listed in ``skipped``.
        check_leaks: refuse split files that share patients (``subject_id``) with the other
            split files present.

    Attributes: ``paths``, ``study_ids``, ``patient_ids`` (subject ids; None when neither a
    ``subject_id`` column nor the image paths give them), ``dicom_ids`` (or None),
    ``labels_file``, ``image_root``, ``version``.
    """

    sample_fields = MultiLabelDataset.sample_fields + ("dicom_ids",)

    name = "cxr_lt"
    channels = "gray"

    def __init__(self, root: str | None = None, split: str = "train", *, version: str = "2024",
                 labels_dir: str | None = None, image_root: str | None = None,
                 split_files: dict | None = None, check_files: bool = True, check_leaks: bool = True,
                 image_size: int = 224, seed: int = 0, transform=None):
        self.split = check_split(split)
        version = str(version)
        if version not in CXR_LT_VERSIONS:
            raise ValueError(f"version must be one of {sorted(CXR_LT_VERSIONS)}, got {version!r}")
        if root is None and (labels_dir is None or image_root is None):
            raise ValueError("root: the 'cxr_lt' dataset needs root=<MIMIC-CXR-JPG folder> "
                             "(or labels_dir= and image_root=)")
        root = os.fspath(root) if root is not None else os.fspath(image_root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"cxr_lt: directory not found: {root}")
        if split_files is not None:
            bad = sorted(set(split_files) - {"train", "val", "test"})
            if bad:
                raise ValueError(f"split_files: unknown splits {bad}; valid: ['train', 'val', 'test']")
        classes = list(CXR_LT_VERSIONS[version]["classes"])
        labels_dir = _find_labels_dir(root, version, labels_dir)
        path = _split_file(labels_dir, version, split, split_files, classes)

        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            rows = [r for r in reader if any(r)]  # skip empty lines
        pcol = next((c for c in _PATH_COLUMNS if c in header), None)
        missing = ([] if pcol else ["fpath (or path)"]) + [c for c in ["study_id"] + classes if c not in header]
        if missing:
            raise ValueError(f"cxr_lt: columns {missing} missing from {path} (columns: {header})")
        col = {h: k for k, h in enumerate(header)}
        for n, r in enumerate(rows):
            if len(r) != len(header):
                raise ValueError(f"cxr_lt: row {n + 2} of {path} has {len(r)} fields, the header {len(header)}")
        rel = [r[col[pcol]].strip() for r in rows]
        labels = parse_label_cells(rows, [col[c] for c in classes], classes, f"cxr_lt: {path}")
        study = [r[col["study_id"]].strip() for r in rows]
        dicom = [r[col["dicom_id"]].strip() for r in rows] if "dicom_id" in col else None
        if "subject_id" in col:
            subject = [r[col["subject_id"]].strip() for r in rows]
        else:
            subject = [_subject_from_path(p) for p in rel]
            subject = subject if subject and all(subject) else None

        if check_leaks:
            sources = {path: ("patients (subject_id)", subject) if subject is not None else _read_ids(path)}
            for other in ("train", "val", "test"):
                if other == split:
                    continue
                try:
                    other_path = _split_file(labels_dir, version, other, split_files, classes)
                except (FileNotFoundError, ValueError):
                    continue  # no (labelled) file for that split: nothing to leak into
                sources[other_path] = _read_ids(other_path)
            kind, ids = sources.pop(path)
            for other_path, (other_kind, other_ids) in sources.items():
                if kind and other_kind == kind:
                    check_disjoint_groups({path: ids, other_path: other_ids}, what=kind, dataset="cxr_lt")

        image_root = _find_image_root(root, image_root, rel, path) if rows else root
        paths = [os.path.join(image_root, p) for p in rel]
        keep = np.ones(len(paths), dtype=bool)
        if check_files:
            from tqdm.auto import tqdm

            for k, p in enumerate(tqdm(paths, desc=f"cxr_lt {split}: checking images", unit="file",
                                       disable=len(paths) < 20000)):
                if not os.path.isfile(p):
                    keep[k] = False
                    self.skipped.append((p, "file not found"))
        idx = np.flatnonzero(keep)
        self.paths = [paths[k] for k in idx]
        self.labels = labels[idx]
        self.study_ids = [study[k] for k in idx]
        self.patient_ids = None if subject is None else [subject[k] for k in idx]
        self.dicom_ids = None if dicom is None else [dicom[k] for k in idx]
        self.class_names = classes
        self.version, self.labels_file, self.image_root = version, path, image_root
        self.image_size = int(image_size)
        self.transform = transform

    def load_raw(self, i: int) -> np.ndarray:
        path = self.paths[i]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"cxr_lt: image file not found: {path}")
        return read_image_file(path, "gray")


def build_cxr_lt(split, root=None, image_size=224, seed=0, fusion: str = "none", max_views: int = 4, **kw):
    """Registry builder: ``fusion="study"`` returns a
    :class:`~fact_fast.data.base.MultiViewDataset` of the images of each study (at most
    ``max_views``, in file order); the engine fuses their scores by max and evaluates per study.
    ``fusion="none"`` (default) returns :class:`CXRLT` (one image per sample)."""
    if fusion not in ("none", "study"):
        raise ValueError(f"fusion must be 'none' or 'study', got {fusion!r}")
    ds = CXRLT(root, split, image_size=image_size, seed=seed, **kw)
    return MultiViewDataset(ds, "study_ids", max_views=max_views) if fusion == "study" else ds
