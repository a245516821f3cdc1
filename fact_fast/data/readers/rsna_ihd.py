"""RSNA Intracranial Hemorrhage Detection (head CT slices, DICOM) in its published layout.

``root`` holds the Kaggle release: ``stage_2_train.csv`` beside ``stage_2_train/`` (or the
stage-1 names ``stage_1_train.csv`` / ``stage_1_train_images/``; or give ``csv=`` and
``image_dir=``). The CSV is long: one row per image and class, ``ID,Label`` with ``ID`` =
``ID_<image>_<subtype>``; it is reshaped to one row per image with the classes of
:data:`~fact_fast.data.labels.sets.RSNA_IHD_CLASS_NAMES` (``any`` + 5 subtypes;
``subtypes_only=True`` keeps the 5 subtypes, as the FACT paper does). Identical duplicate rows
(the real file has some) are dropped; duplicates that disagree make that label unknown (NaN, with
a warning); a class with no row is unknown; an unknown subtype or a label other than 0/1 is an
error naming the file and row.

Each slice is converted to Hounsfield units (``RescaleSlope`` / ``RescaleIntercept``, with the
community fix for 12-bit unsigned slices stored with a wrong intercept) and the three CT windows
(``windows``, default brain 40/80, subdural 80/200, bone 600/2800 as centre/width HU) become the
three uint8 channels (``channels="rgb"``; see :mod:`fact_fast.data.readers.dicom`).

Splits are a seeded partition (7:1:2 by default) of the groups read from the DICOM headers:
``group_by="patient"`` (default) joins every slice sharing a PatientID, StudyInstanceUID or
SeriesInstanceUID into one group, so no scan and no patient straddles two splits. Reading
750k headers takes a while; the header table is cached (``header_cache``, default
``<cache dir>/rsna_ihd_headers_<hash of image_dir>.csv``; a ``fact_fast_rsna_ihd_headers.csv``
beside the data is read too) and only new or changed files are read again. Files that are
missing, not DICOM, or whose pixel data is shorter than their header says (the real
``ID_6431af929.dcm``) are dropped and listed in ``skipped``.
"""
from __future__ import annotations

import csv
import hashlib
import os
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from ..base import MultiLabelDataset, check_split
from ..labels.sets import RSNA_IHD_CLASS_NAMES
from ..splits import group_split
from .dicom import (DEFAULT_WINDOWS, check_windows, dicom_to_hu, import_pydicom, read_dicom_header,
                    window_channels)

__all__ = ["RSNAIHD", "DEFAULT_WINDOWS", "build_rsna_ihd", "dicom_to_hu", "read_dicom_header",
           "read_rsna_labels", "window_channels"]

_LAYOUTS = (("stage_2_train.csv", "stage_2_train"), ("stage_1_train.csv", "stage_1_train_images"))
_SHARED_CACHE_NAME = "fact_fast_rsna_ihd_headers.csv"
_CACHE_COLUMNS = ("image_id", "size", "patient_id", "study_id", "series_id", "problem")
_PARALLEL_MIN_FILES = 2000  # below this the header scan runs in-process
_CACHE_EVERY = 100_000  # rows scanned between cache writes (an interrupted scan keeps its work)
GROUP_BY = ("patient", "study", "series")


def read_rsna_labels(path: str) -> tuple[list, np.ndarray, int, list]:
    """Reshape the long ``ID,Label`` CSV to one row per image.

    Returns ``(image_ids, labels, duplicate_rows, conflicts)``: image ids (``ID_<hex>``) in
    order of first appearance, float32 ``[N, 6]`` labels in the order of
    :data:`RSNA_IHD_CLASS_NAMES` (NaN = no row or disagreeing rows), the number of identical
    duplicate rows dropped and the ``(image_id, subtype)`` pairs whose rows disagree.
    """
    index = {name: k for k, name in enumerate(RSNA_IHD_CLASS_NAMES)}
    width = len(index)
    unknown = float("nan")
    value_of = {"0": 0.0, "1": 1.0}
    ids, rows_of = [], {}
    flat: list = []  # row-major [N * 6]; shared float objects keep 4.5M cells small
    duplicates, conflicts = 0, []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if header[:2] != ["ID", "Label"]:
            raise ValueError(f"rsna_ihd: {path} must start with the columns ['ID', 'Label'], got {header}")
        for n, r in enumerate(reader, start=2):
            if len(r) != 2:
                if not any(c.strip() for c in r):
                    continue
                if len(r) < 2:
                    raise ValueError(f"rsna_ihd: row {n} of {path} has {len(r)} field(s): {r}")
            key, value = r[0].strip(), r[1].strip()
            image, _, subtype = key.rpartition("_")
            c = index.get(subtype)
            if c is None or not image.startswith("ID_"):
                raise ValueError(f"rsna_ihd: row {n} of {path}: ID {key!r} is not ID_<image>_<subtype> "
                                 f"with a subtype in {list(RSNA_IHD_CLASS_NAMES)}")
            v = value_of.get(value)
            if v is None:
                raise ValueError(f"rsna_ihd: row {n} of {path}: Label of {key} is {value!r}; expected 0 or 1")
            k = rows_of.get(image)
            if k is None:
                k = rows_of[image] = len(ids)
                ids.append(image)
                flat.extend([unknown] * width)
            cell = k * width + c
            old = flat[cell]
            if old is unknown:  # first row for this (image, subtype)
                flat[cell] = v
            elif old == v:
                duplicates += 1
            elif (image, subtype) not in conflicts:
                conflicts.append((image, subtype))
    lab = np.asarray(flat, dtype=np.float32).reshape(-1, width)
    for image, subtype in conflicts:
        lab[rows_of[image], index[subtype]] = np.nan
    if conflicts:
        warnings.warn(f"rsna_ihd: {len(conflicts)} (image, subtype) pairs of {path} have disagreeing "
                      f"duplicate rows (e.g. {conflicts[:3]}); those labels are unknown (NaN)",
                      RuntimeWarning, stacklevel=2)
    return ids, lab, duplicates, conflicts


_LABELS_MEMO: dict = {}


def _read_labels_once(path: str):
    """:func:`read_rsna_labels`, remembered for the last file read (train, val and test are built
    from the same 4.5M-row CSV, which takes seconds to parse)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _LABELS_MEMO:
        _LABELS_MEMO.clear()
        _LABELS_MEMO[key] = read_rsna_labels(path)
    return _LABELS_MEMO[key]




def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("FACT_FAST_CACHE_DIR") or os.path.join(base, "fact_fast")


def _read_cache(path: str) -> dict:
    table = {}
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            if tuple(next(reader, ())) != _CACHE_COLUMNS:
                return {}
            for r in reader:
                if len(r) == len(_CACHE_COLUMNS):
                    table[r[0]] = (int(r[1]), r[2], r[3], r[4], r[5])
    except (OSError, ValueError):
        return {}
    return table


def _write_cache(path: str, table: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(_CACHE_COLUMNS)
        for image_id, entry in table.items():
            w.writerow((image_id,) + tuple(entry))
    os.replace(tmp, path)


def _scan_headers(image_dir: str, wanted: list, header_cache: str | None, workers: int):
    """Header table ``{image_id: (size, patient, study, series, problem)}`` of the wanted ids
    present in image_dir, and the cache file written (or read)."""
    from tqdm.auto import tqdm

    sizes = {}
    with os.scandir(image_dir) as it:
        for entry in it:
            if entry.name.endswith(".dcm"):
                sizes[entry.name[:-4]] = entry.stat().st_size
    key = hashlib.sha1(os.path.abspath(image_dir).encode()).hexdigest()[:16]
    write_to = header_cache or os.path.join(_default_cache_dir(), f"rsna_ihd_headers_{key}.csv")
    table = {}
    for p in (os.path.join(os.path.dirname(os.path.abspath(image_dir)), _SHARED_CACHE_NAME), write_to):
        table.update(_read_cache(p))
    todo = [i for i in wanted if i in sizes and (i not in table or table[i][0] != sizes[i])]
    if todo:
        paths = [os.path.join(image_dir, i + ".dcm") for i in todo]
        bar = tqdm(total=len(todo), desc="rsna_ihd: reading DICOM headers", unit="file",
                   disable=len(todo) < 100)
        pool = ProcessPoolExecutor(workers) if workers > 1 and len(todo) >= _PARALLEL_MIN_FILES else None
        try:
            results = pool.map(read_dicom_header, paths, chunksize=256) if pool else map(read_dicom_header, paths)
            for n, (image_id, header) in enumerate(zip(todo, results), start=1):
                table[image_id] = (sizes[image_id],) + tuple(header)
                bar.update()
                if n % _CACHE_EVERY == 0:
                    _write_cache(write_to, table)
        finally:
            bar.close()
            if pool:
                pool.shutdown()
        try:
            _write_cache(write_to, table)
        except OSError as exc:
            warnings.warn(f"rsna_ihd: could not write the header cache {write_to} ({exc}); "
                          "headers will be read again next time", RuntimeWarning, stacklevel=3)
    return table, sizes, write_to


def _groups(image_ids, table, group_by) -> list:
    """Group id per image: the connected component of the images sharing any of the DICOM ids
    that ``group_by`` uses (a study or series split across two patients is kept whole)."""
    fields = {"patient": (1, 2, 3), "study": (2, 3), "series": (3,)}[group_by]
    parent: dict = {}

    def find(x):
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    keys_of = []
    for image_id in image_ids:
        entry = table[image_id]
        keys = [f"{f}:{entry[f]}" for f in fields if entry[f]] or [f"image:{image_id}"]
        for k in keys:
            parent.setdefault(k, k)
        for k in keys[1:]:
            ra, rb = find(keys[0]), find(k)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        keys_of.append(keys[0])
    return [find(k) for k in keys_of]


class RSNAIHD(MultiLabelDataset):
    """RSNA-IHD head CT slices, one sample per DICOM file (see the module docstring).

    Args:
        root: folder holding ``stage_2_train.csv`` and ``stage_2_train/`` (or stage-1 names).
        split: "train", "val" or "test" (a seeded split of the ``group_by`` groups).
        csv / image_dir: explicit label CSV and DICOM folder (relative to ``root``).
        subtypes_only: drop ``any`` (5 classes, as in the FACT paper).
        windows: three ``(centre, width)`` HU windows, one per channel.
        group_by: "patient" (default), "study" or "series".
        val_fraction / test_fraction / seed: the group split.
        header_cache: header table file to read and write (default: see the module docstring).
        workers: processes reading headers (default ``min(8, cpu count)``).

    Attributes: ``paths``, ``image_ids``, ``patient_ids``, ``study_ids``, ``series_ids``,
    ``group_ids``, ``windows``, ``header_cache``, ``duplicate_rows`` (identical duplicate CSV
    rows dropped), ``label_conflicts``.
    """

    sample_fields = MultiLabelDataset.sample_fields + ("image_ids", "series_ids")

    name = "rsna_ihd"
    channels = "rgb"

    def __init__(self, root: str | None = None, split: str = "train", *, csv: str | None = None,
                 image_dir: str | None = None, subtypes_only: bool = False, windows=DEFAULT_WINDOWS,
                 group_by: str = "patient", val_fraction: float = 0.1, test_fraction: float = 0.2,
                 header_cache: str | None = None, workers: int | None = None, image_size: int = 224,
                 seed: int = 0, transform=None):
        self.split = check_split(split)
        if group_by not in GROUP_BY:
            raise ValueError(f"group_by must be one of {list(GROUP_BY)}, got {group_by!r}")
        self.windows = check_windows(windows)
        import_pydicom()  # fail early, before reading a 4.5M-row CSV, when pydicom is missing
        csv_path, image_dir = self._find_layout(root, csv, image_dir)
        image_ids, labels, self.duplicate_rows, self.label_conflicts = _read_labels_once(csv_path)
        workers = min(8, os.cpu_count() or 1) if workers is None else int(workers)
        table, sizes, self.header_cache = _scan_headers(image_dir, image_ids, header_cache, workers)

        usable = []
        for k, image_id in enumerate(image_ids):
            path = os.path.join(image_dir, image_id + ".dcm")
            if image_id not in sizes:
                self.skipped.append((path, "file not found"))
            elif table[image_id][4]:
                self.skipped.append((path, table[image_id][4]))
            else:
                usable.append(k)
        if image_ids and not usable:
            raise FileNotFoundError(f"rsna_ihd: none of the {len(image_ids)} images of {csv_path} is a readable "
                                    f"DICOM in {image_dir} (first: {self.skipped[0]})")
        usable_ids = [image_ids[k] for k in usable]
        groups = _groups(usable_ids, table, group_by)
        chosen = group_split(groups, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                             salt=0x1CD)[split]
        rows = [usable[k] for k in chosen]
        self.image_ids = [image_ids[k] for k in rows]
        self.paths = [os.path.join(image_dir, i + ".dcm") for i in self.image_ids]
        self.patient_ids = [table[i][1] for i in self.image_ids]
        self.study_ids = [table[i][2] for i in self.image_ids]
        self.series_ids = [table[i][3] for i in self.image_ids]
        self.group_ids = [groups[k] for k in chosen]
        labels = labels[rows]
        self.class_names = list(RSNA_IHD_CLASS_NAMES)
        if subtypes_only:
            labels, self.class_names = labels[:, 1:], self.class_names[1:]
        self.labels = np.ascontiguousarray(labels, dtype=np.float32)
        self.csv, self.image_dir = csv_path, image_dir
        self.image_size = int(image_size)
        self.transform = transform

    @staticmethod
    def _find_layout(root, csv_path, image_dir):
        def under_root(p):
            return p if p is None or os.path.isabs(p) or root is None else os.path.join(root, p)

        csv_path, image_dir = under_root(csv_path), under_root(image_dir)
        if csv_path is None or image_dir is None:
            if root is None:
                raise ValueError("root: the 'rsna_ihd' dataset needs root=<folder with stage_2_train.csv> "
                                 "(or csv= and image_dir=)")
            for name, folder in _LAYOUTS:
                if os.path.isfile(os.path.join(root, csv_path or name)):
                    csv_path = csv_path or os.path.join(root, name)
                    image_dir = image_dir or os.path.join(root, folder)
                    break
            else:
                raise FileNotFoundError(f"rsna_ihd: no {' or '.join(n for n, _ in _LAYOUTS)} in {root}; "
                                        "pass csv=<label csv> and image_dir=<DICOM folder>")
        if not os.path.isfile(csv_path):
            raise FileNotFoundError(f"rsna_ihd: label CSV not found: {csv_path}")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"rsna_ihd: DICOM folder not found: {image_dir} (labels: {csv_path}); "
                                    "pass image_dir=<folder with the ID_*.dcm files>")
        return csv_path, image_dir

    @property
    def image_options(self) -> dict:
        return {"windows": [list(w) for w in self.windows]}

    def load_raw(self, i: int) -> np.ndarray:
        pydicom = import_pydicom()
        path = self.paths[i]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"rsna_ihd: DICOM file not found: {path}")
        try:
            with pydicom.config.disable_value_validation():
                hu = dicom_to_hu(pydicom.dcmread(path))
        except (pydicom.errors.InvalidDicomError, AttributeError, KeyError, IndexError, TypeError,
                ValueError, EOFError) as exc:
            raise ValueError(f"rsna_ihd: cannot decode {path} ({type(exc).__name__}: {exc})") from None
        return window_channels(hu, self.windows)


def build_rsna_ihd(split, root=None, image_size=224, seed=0, **kw):
    """Registry builder for :class:`RSNAIHD`."""
    return RSNAIHD(root, split, image_size=image_size, seed=seed, **kw)
