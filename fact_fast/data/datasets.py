"""Dataset readers and the dataset registry.

Real datasets are read from the user's disk in their published layouts; nothing is ever
downloaded. Images are loaded with PIL, converted to grayscale, resized to
``image_size`` x ``image_size`` (bilinear), replicated to 3 channels and ImageNet-normalized.

* ``"synthetic"`` -- :class:`fact_fast.data.synthetic_benchmark.SyntheticBenchmark`, the default
  benchmark (no root needed; see ``docs/synthetic.md``).
* ``"synthetic_motifs"`` -- :class:`fact_fast.data.synthetic.SyntheticComorbidity`, the earlier
  12-motif set (one fixed-place motif per class; a linear probe on pixels solves it).
* ``"csv"`` -- an image folder plus a CSV: one image-path column (relative to ``root``) and 0/1
  label columns. Splits from a ``split`` column (train/val/test; "valid"/"validation" accepted)
  or, when there is none, a seeded random partition (``val_fraction``, ``test_fraction``).
  ODIR-5K, CXR-LT and RSNA-IHD label tables can be read this way once exported to one
  0/1 column per class.
* ``"chestmnist"`` -- MedMNIST ``chestmnist.npz`` / ``chestmnist_{size}.npz`` with
  ``{train,val,test}_{images,labels}`` arrays.
* ``"nih"`` -- NIH ChestX-ray14: ``Data_Entry_2017.csv`` (or ``Data_Entry_2017_v2020.csv``),
  ``train_val_list.txt``, ``test_list.txt`` and the PNGs in ``images/`` or
  ``images_*/images/``. Labels from "Finding Labels" split on "|" ("No Finding" -> all
  zero). Validation is carved from train_val by patient id (``val_fraction``, seeded).
"""
from __future__ import annotations

import csv
import glob
import os
from pathlib import Path

import numpy as np
import torch

from .base import MultiLabelDataset, SPLITS, check_split
from .label_sets import NIH_CLASS_NAMES
from .synthetic import SyntheticComorbidity
from .synthetic_benchmark import SyntheticBenchmark

__all__ = ["DATASETS", "build_dataset", "CSVImageDataset", "ChestMNIST", "NIHChestXray14",
           "read_image_file", "register_dataset"]


def read_image_file(path: str, channels: str = "gray") -> np.ndarray:
    """Decode an image file at its own size -> uint8 ``[H, W]`` (gray) or ``[H, W, 3]`` (rgb).

    16-bit and 32-bit images keep their contrast: they are scaled by their own maximum
    (the actual bit depth in use), not by 65535.
    """
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(im, dtype=np.float32)
            hi = float(arr.max()) if arr.size else 1.0
            gray = np.clip(np.rint(arr * (255.0 / max(hi, 1.0))), 0, 255).astype(np.uint8)
            return gray if channels == "gray" else np.repeat(gray[:, :, None], 3, axis=2)
        return np.asarray(im.convert("L" if channels == "gray" else "RGB"), dtype=np.uint8)


def _array_to_uint8(img: np.ndarray) -> np.ndarray:
    """uint8/float grayscale [H, W] (or [H, W, 3]) -> uint8 [H, W]."""
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr.mean(axis=-1)
    if arr.dtype == np.uint8:
        return arr
    scale = 255.0 if arr.max() <= 1.0 else 1.0
    return np.clip(np.rint(arr.astype(np.float32) * scale), 0, 255).astype(np.uint8)


def _split_indices(n: int, seed: int, val_fraction: float, test_fraction: float) -> dict:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction + test_fraction must be in [0, 1), got {val_fraction} + {test_fraction}")
    perm = np.random.default_rng([seed, 0x5EED]).permutation(n)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    return {"test": np.sort(perm[:n_test]), "val": np.sort(perm[n_test:n_test + n_val]),
            "train": np.sort(perm[n_test + n_val:])}


class _FileImageDataset(MultiLabelDataset):
    paths: list
    image_size: int

    def load_raw(self, i: int) -> np.ndarray:
        p = self.paths[i]
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{self.name}: image file not found: {p}")
        return read_image_file(p, self.channels)


class CSVImageDataset(_FileImageDataset):
    """Image folder + CSV of 0/1 label columns.

    Args:
        root: directory the image paths are relative to (and the CSV, when relative).
        split: "train", "val" or "test".
        csv: CSV file name/path (default ``labels.csv``).
        image_col: column with image paths (default: the first column).
        label_cols: label columns (default: all columns except the image and split columns).
        split_col: column holding the split name; if absent, a seeded random partition with
            ``val_fraction`` / ``test_fraction`` is used.
    """

    _SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                      "validation": "val", "dev": "val", "test": "test", "testing": "test"}

    def __init__(self, root: str, split: str = "train", *, csv: str = "labels.csv",
                 image_col: str | None = None, label_cols=None, split_col: str = "split",
                 image_size: int = 224, seed: int = 0, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, transform=None, name: str = "csv"):
        self.split = check_split(split)
        if root is None:
            raise ValueError("root: the 'csv' dataset needs root=<image folder>")
        root = os.fspath(root)
        csv_path = csv if os.path.isabs(csv) else os.path.join(root, csv)
        if not os.path.isfile(csv_path):
            raise FileNotFoundError(
                f"{name}: label CSV not found: {csv_path} (pass csv=<file> relative to root={root})")
        with open(csv_path, newline="") as f:
            rows = list(_csv_reader(f))
        if not rows:
            raise ValueError(f"csv: {csv_path} is empty")
        header, body = rows[0], [r for r in rows[1:] if r]
        image_col = header[0] if image_col is None else image_col
        if image_col not in header:
            raise ValueError(f"image_col: column {image_col!r} not in {csv_path} (columns: {header})")
        has_split = split_col in header
        if label_cols is None:
            label_cols = [h for h in header if h != image_col and not (has_split and h == split_col)]
        else:
            label_cols = list(label_cols)
            missing = [c for c in label_cols if c not in header]
            if missing:
                raise ValueError(f"label_cols: columns {missing} not in {csv_path} (columns: {header})")
        if not label_cols:
            raise ValueError(f"label_cols: no label columns in {csv_path}")
        ii = header.index(image_col)
        li = [header.index(c) for c in label_cols]
        try:
            labels = np.array([[int(float(r[j])) for j in li] for r in body], dtype=np.int64).reshape(-1, len(li))
        except ValueError as e:
            raise ValueError(f"label_cols: non-numeric label value in {csv_path}: {e}") from None
        if labels.size and not np.all((labels == 0) | (labels == 1)):
            raise ValueError(f"label_cols: labels in {csv_path} must be 0/1")
        paths = [os.path.join(root, r[ii]) for r in body]
        if has_split:
            si = header.index(split_col)
            raw = [r[si].strip().lower() for r in body]
            bad = sorted({s for s in raw if s not in self._SPLIT_ALIASES})
            if bad:
                raise ValueError(f"csv: unknown values {bad} in column {split_col!r} of {csv_path}; "
                                 f"expected one of {list(self._SPLIT_ALIASES)}")
            idx = np.array([k for k, s in enumerate(raw) if self._SPLIT_ALIASES[s] == split], dtype=np.int64)
        else:
            idx = _split_indices(len(body), seed, val_fraction, test_fraction)[split]
        self.name = name
        self.root = root
        self.image_size = int(image_size)
        self.transform = transform
        self.class_names = list(label_cols)
        self.paths = [paths[k] for k in idx]
        self.labels = labels[idx].astype(np.float32).reshape(-1, len(label_cols))


def _csv_reader(f):
    return csv.reader(f)


class ChestMNIST(MultiLabelDataset):
    """MedMNIST ChestMNIST from ``chestmnist.npz`` (or ``chestmnist_{size}.npz``).

    ``root`` is the directory holding the file or the ``.npz`` path itself; ``npz`` names the
    file explicitly. With several sizes present the one closest to ``image_size`` (>= it when
    possible) is used.
    """

    def __init__(self, root: str, split: str = "train", *, npz: str | None = None,
                 image_size: int = 64, seed: int = 0, transform=None):
        self.split = check_split(split)
        if root is None and npz is None:
            raise ValueError("root: the 'chestmnist' dataset needs root=<folder with chestmnist.npz>")
        path = self._find(root, npz, image_size)
        with np.load(path) as z:
            for k in (f"{split}_images", f"{split}_labels"):
                if k not in z.files:
                    raise ValueError(f"chestmnist: {path} has no array {k!r} (has {sorted(z.files)})")
            self._images = z[f"{split}_images"]
            labels = z[f"{split}_labels"]
        if labels.ndim != 2 or labels.shape[1] != len(NIH_CLASS_NAMES) or len(labels) != len(self._images):
            raise ValueError(f"chestmnist: {split}_labels in {path} must be [N, 14] matching the images, "
                             f"got {list(labels.shape)} for {len(self._images)} images")
        self.name = "chestmnist"
        self.path = path
        self.image_size = int(image_size)
        self.transform = transform
        self.class_names = list(NIH_CLASS_NAMES)
        self.labels = (labels > 0).astype(np.float32)

    @staticmethod
    def _find(root, npz, image_size):
        if npz is not None:
            p = npz if os.path.isabs(npz) or root is None else os.path.join(root, npz)
            if not os.path.isfile(p):
                raise FileNotFoundError(f"chestmnist: file not found: {p}")
            return p
        root = os.fspath(root)
        if os.path.isfile(root):
            return root
        if not os.path.isdir(root):
            raise FileNotFoundError(f"chestmnist: directory not found: {root}")
        found = {}
        if os.path.isfile(os.path.join(root, "chestmnist.npz")):
            found[28] = os.path.join(root, "chestmnist.npz")
        for p in glob.glob(os.path.join(root, "chestmnist_*.npz")):
            try:
                found[int(Path(p).stem.split("_")[-1])] = p
            except ValueError:
                pass
        if not found:
            raise FileNotFoundError(
                f"chestmnist: no chestmnist.npz or chestmnist_<size>.npz in {root} "
                "(get it from https://medmnist.com; fact_fast never downloads data)")
        bigger = sorted(s for s in found if s >= image_size)
        return found[bigger[0] if bigger else max(found)]

    def load_raw(self, i: int) -> np.ndarray:
        return _array_to_uint8(self._images[i])


class NIHChestXray14(_FileImageDataset):
    """NIH ChestX-ray14 in its published layout (see the module docstring)."""

    def __init__(self, root: str, split: str = "train", *, image_size: int = 224, seed: int = 0,
                 val_fraction: float = 0.1, transform=None):
        self.split = check_split(split)
        if root is None:
            raise ValueError("root: the 'nih' dataset needs root=<ChestX-ray14 folder>")
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"nih: directory not found: {root}")
        entry = None
        for cand in ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv"):
            if os.path.isfile(os.path.join(root, cand)):
                entry = os.path.join(root, cand)
                break
        if entry is None:
            raise FileNotFoundError(f"nih: Data_Entry_2017.csv not found in {root} "
                                    "(expected the NIH ChestX-ray14 layout)")
        list_name = "test_list.txt" if split == "test" else "train_val_list.txt"
        list_path = os.path.join(root, list_name)
        if not os.path.isfile(list_path):
            raise FileNotFoundError(f"nih: {list_name} not found in {root}")
        with open(list_path) as f:
            wanted = [ln.strip() for ln in f if ln.strip()]
        with open(entry, newline="") as f:
            reader = csv.DictReader(f)
            for col in ("Image Index", "Finding Labels", "Patient ID"):
                if col not in (reader.fieldnames or []):
                    raise ValueError(f"nih: column {col!r} missing from {entry}")
            table = {r["Image Index"]: (r["Finding Labels"], r["Patient ID"]) for r in reader}
        missing = [w for w in wanted if w not in table]
        if missing:
            raise ValueError(f"nih: {len(missing)} images of {list_name} missing from {entry}, e.g. {missing[:3]}")
        if split != "test":
            if not 0 <= val_fraction < 1:
                raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
            patients = sorted({table[w][1] for w in wanted}, key=lambda p: (len(p), p))
            perm = np.random.default_rng([seed, 0x1114]).permutation(len(patients))
            n_val = int(round(len(patients) * val_fraction))
            val_patients = {patients[k] for k in perm[:n_val]}
            wanted = [w for w in wanted if (table[w][1] in val_patients) == (split == "val")]
        index = {name: k for k, name in enumerate(NIH_CLASS_NAMES)}
        labels = np.zeros((len(wanted), len(NIH_CLASS_NAMES)), dtype=np.float32)
        for r, w in enumerate(wanted):
            for finding in table[w][0].split("|"):
                finding = finding.strip()
                if finding in ("", "No Finding"):
                    continue
                if finding not in index:
                    raise ValueError(f"nih: unknown finding {finding!r} for {w} in {entry}")
                labels[r, index[finding]] = 1
        self.name = "nih"
        self.root = root
        self.image_size = int(image_size)
        self.transform = transform
        self.class_names = list(NIH_CLASS_NAMES)
        self.labels = labels
        self.image_names = wanted
        self.patient_ids = [table[w][1] for w in wanted]
        dirs = self._image_dirs(root)
        self.paths = [self._locate(dirs, w) for w in wanted]

    @staticmethod
    def _image_dirs(root):
        dirs = [os.path.join(root, "images")] + sorted(glob.glob(os.path.join(root, "images_*", "images")))
        dirs += sorted(glob.glob(os.path.join(root, "images_*")))
        return [d for d in dirs if os.path.isdir(d)]

    def _locate(self, dirs, name):
        for d in dirs:
            p = os.path.join(d, name)
            if os.path.isfile(p):
                return p
        # report lazily, at load time, with the first candidate location
        return os.path.join(dirs[0] if dirs else os.path.join(self.root, "images"), name)


def _build_synthetic(split, root=None, image_size=128, seed=0, **kw):
    return SyntheticBenchmark(split, image_size=image_size, seed=seed, **kw)


def _build_synthetic_motifs(split, root=None, image_size=64, seed=0, **kw):
    return SyntheticComorbidity(split, image_size=image_size, seed=seed, **kw)


def _build_csv(split, root=None, image_size=224, seed=0, **kw):
    return CSVImageDataset(root, split, image_size=image_size, seed=seed, **kw)


def _build_chestmnist(split, root=None, image_size=64, seed=0, **kw):
    return ChestMNIST(root, split, image_size=image_size, seed=seed, **kw)


def _build_nih(split, root=None, image_size=224, seed=0, **kw):
    return NIHChestXray14(root, split, image_size=image_size, seed=seed, **kw)


# name -> builder(split, root=..., image_size=..., seed=..., **kwargs) -> MultiLabelDataset
DATASETS = {
    "synthetic": _build_synthetic,
    "synthetic_motifs": _build_synthetic_motifs,
    "csv": _build_csv,
    "chestmnist": _build_chestmnist,
    "nih": _build_nih,
}


def register_dataset(name: str, builder) -> None:
    """Add a dataset builder ``builder(split, root=, image_size=, seed=, **kwargs)``."""
    if not callable(builder):
        raise TypeError("builder must be callable")
    DATASETS[name] = builder


def build_dataset(name: str = "synthetic", split: str = "train", *, root: str | None = None,
                  image_size: int = 64, seed: int = 0, train: bool | None = None,
                  pipeline: dict | None = None, **kwargs) -> MultiLabelDataset:
    """Build a dataset from the :data:`DATASETS` registry with its image pipeline attached.

    ``train`` (default: ``split == "train"``) picks the augmenting transform; ``pipeline``
    holds :class:`~fact_fast.data.transforms.ImagePipeline` overrides (crop, flip, resize...);
    channels and normalisation come from the dataset unless given there.
    """
    from .transforms import ImagePipeline

    if name not in DATASETS:
        raise ValueError(f"name: unknown dataset {name!r}; valid values: {sorted(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split: unknown split {split!r}; valid values: {list(SPLITS)}")
    ds = DATASETS[name](split, root=root, image_size=image_size, seed=seed, **kwargs)
    settings = {"image_size": image_size, "channels": ds.channels, "mean": ds.mean, "std": ds.std}
    settings.update(pipeline or {})
    ds.pipeline = ImagePipeline(**settings)
    ds.transform = ds.pipeline.build(train=split == "train" if train is None else bool(train))
    return ds
