"""The dataset base class shared by the synthetic and the real-data readers."""
from __future__ import annotations

import operator
from typing import Callable, Optional

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SPLITS = ("train", "val", "test")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    return split


class MultiLabelDataset(torch.utils.data.Dataset):
    """A multi-label image dataset.

    Subclasses set ``name``, ``split``, ``class_names``, ``labels`` (uint8 [N, C] of 0/1) and
    implement :meth:`load_image` returning a float32 tensor [3, H, W], already normalized.
    ``__getitem__`` returns ``(image, target)`` with target float32 [C]; an optional
    ``transform`` (tensor -> tensor) is applied to the normalized image.
    """

    name: str = "dataset"
    split: str = "train"
    class_names: list
    labels: np.ndarray

    transform: Optional[Callable] = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def label_prevalence(self) -> np.ndarray:
        """Observed fraction of positives per class in this split (float64 [C])."""
        if len(self) == 0:
            return np.zeros(self.num_classes)
        return self.labels.mean(axis=0, dtype=np.float64)

    def load_image(self, i: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i):
        n = len(self)
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(f"index must be an integer, got {type(i).__name__}") from None
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {self.name} {self.split} of size {n}")
        img = self.load_image(i)
        if self.transform is not None:
            img = self.transform(img)
        target = torch.from_numpy(self.labels[i].astype(np.float32))
        return img, target

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, "
                f"n={len(self)}, classes={self.num_classes})")


def gray_to_normalized_tensor(gray: np.ndarray) -> torch.Tensor:
    """float32 grayscale [H, W] in [0, 1] -> ImageNet-normalized float32 tensor [3, H, W]."""
    g = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32))
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return (g.unsqueeze(0).expand(3, -1, -1) - mean) / std
