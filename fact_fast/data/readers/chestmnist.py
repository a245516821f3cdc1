"""MedMNIST ChestMNIST (dataset name ``"chestmnist"``): ``chestmnist.npz`` or
``chestmnist_{size}.npz`` with ``{train,val,test}_{images,labels}`` arrays, held in memory."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from ..base import MultiLabelDataset, check_split
from ..labels.sets import NIH_CLASS_NAMES

__all__ = ["ChestMNIST"]


def _array_to_uint8(img: np.ndarray) -> np.ndarray:
    """uint8/float grayscale [H, W] (or [H, W, 3]) -> uint8 [H, W]."""
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr.mean(axis=-1)
    if arr.dtype == np.uint8:
        return arr
    scale = 255.0 if arr.max() <= 1.0 else 1.0
    return np.clip(np.rint(arr.astype(np.float32) * scale), 0, 255).astype(np.uint8)


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
