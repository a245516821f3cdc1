"""The dataset contract shared by the synthetic set and every real-data reader.

A reader subclasses :class:`MultiLabelDataset`, fills ``class_names``, ``labels`` (float32
``[N, C]`` with 1 / 0 / NaN = positive / negative / unknown) and ``channels``, and implements
:meth:`MultiLabelDataset.load_raw`. Decoding, resizing, augmentation and normalisation happen in
the transform (``fact_fast.data.transforms``), so every reader gets the same image pipeline.
"""
from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SPLITS = ("train", "val", "test")
CHANNELS = ("gray", "rgb")

# What a failed decode raises: OSError covers PIL's UnidentifiedImageError and truncated files,
# ValueError/EOFError malformed headers; pydicom raises InvalidDicomError (a subclass of Exception
# with no finer common base), which readers convert to ValueError.
DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    return split


def as_label_matrix(labels, num_classes: int, where: str) -> np.ndarray:
    """Validate a label table and return it as float32 ``[N, C]`` with values in {0, 1, NaN}.

    ``where`` names the file or argument in the error message.
    """
    arr = np.asarray(labels, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != num_classes:
        raise ValueError(f"{where}: labels must be [N, {num_classes}], got shape {list(arr.shape)}")
    bad = ~(np.isnan(arr) | (arr == 0) | (arr == 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{where}: label values must be 0, 1 or NaN (unknown); row {r}, column {c} is {arr[r, c]!r}")
    return arr


_LABEL_CELLS = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0, "": float("nan")}


def parse_label_cells(rows: Sequence, columns: Sequence[int], names: Sequence[str], where: str,
                      row_name: Callable[[int], str] = lambda i: f"row {i + 2}") -> np.ndarray:
    """Label cells of a table (strings) -> float32 ``[N, C]``.

    ``"1"`` / ``"0"`` (or ``"1.0"`` / ``"0.0"``) are positive / negative, a blank cell is unknown
    (NaN); any other value raises ``ValueError`` naming ``where`` (the file), the row
    (``row_name(i)``, by default its line in a CSV with one header line) and the column
    (``names[j]`` for ``columns[j]``).
    """
    out = np.empty((len(rows), len(columns)), dtype=np.float32)
    if not len(columns):
        return out
    get = _LABEL_CELLS.get
    pick = operator.itemgetter(*columns) if len(columns) > 1 else (lambda r: (r[columns[0]],))
    for i, r in enumerate(rows):
        values = list(map(get, pick(r)))  # 10M cells for CXR-LT's train file: keep the loop in C
        if None in values:
            values = [get(c.strip()) for c in pick(r)]
            if None in values:
                j = values.index(None)
                raise ValueError(f"{where}: {row_name(i)}, column {names[j]!r} is {r[columns[j]]!r}; "
                                 "expected 0 or 1 (blank = unknown)")
        out[i] = values
    return out


class MultiLabelDataset(torch.utils.data.Dataset):
    """A multi-label image dataset (see ``docs/architecture.md``).

    Subclasses set ``name``, ``split``, ``class_names``, ``labels`` (float32 [N, C], NaN =
    unknown), ``channels`` ("gray" or "rgb") and implement :meth:`load_raw`. ``mean`` / ``std``
    are the per-channel normalisation constants (ImageNet by default; a dataset with its own
    statistics overrides them).

    ``__getitem__(i)`` returns ``(image float32 [3, S, S], target float32 [C])`` after
    ``transform`` (uint8 array -> normalised tensor; see :mod:`fact_fast.data.transforms`), or
    ``None`` when the image cannot be decoded (a warning names the file; the collate function
    drops it from the batch).
    """

    name: str = "dataset"
    split: str = "train"
    class_names: list
    labels: np.ndarray
    channels: str = "gray"
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    patient_ids: Sequence[str] | None = None
    study_ids: Sequence[str] | None = None

    transform: Callable | None = None

    # Per-sample attributes (length N, aligned with ``labels``) that :meth:`keep_samples`
    # re-indexes; a reader with more of them (image names, views...) extends the tuple.
    sample_fields: tuple = ("labels", "paths", "patient_ids", "study_ids")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def skipped(self) -> list:
        """``(path, reason)`` of the samples dropped because their file is missing or unreadable."""
        return self.__dict__.setdefault("_skipped", [])

    @property
    def label_prevalence(self) -> np.ndarray:
        """Fraction of positives among the known labels of each class (float64 [C]; NaN when a
        class has no known label)."""
        if len(self) == 0:
            return np.full(self.num_classes, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column -> NaN, intended
            return np.nanmean(self.labels.astype(np.float64), axis=0)

    def describe(self, i: int) -> str:
        """Where sample ``i`` comes from (a file path for file readers), for error messages."""
        paths = getattr(self, "paths", None)
        return str(paths[i]) if paths is not None else f"{self.name} {self.split} sample {i}"

    def load_raw(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        """Sample ``i`` as uint8 ``[H, W]`` (gray) or ``[H, W, 3]`` (rgb). Raises one of
        :data:`DECODE_ERRORS` (or FileNotFoundError) when the file cannot be read."""
        raise NotImplementedError

    @property
    def image_options(self) -> dict:
        """Reader options that change the decoded pixels (hashed into the cache key)."""
        return {}

    def cache_key(self) -> dict | None:
        """What the decoded images depend on (JSON-serialisable: reader, split, channels, pixel
        options, one source file per sample), hashed by the on-disk image cache
        (:mod:`fact_fast.data.cache`): defined for readers of files (a ``paths`` attribute);
        ``None`` for datasets held or generated in memory, which the cache leaves alone."""
        paths = getattr(self, "paths", None)
        if paths is None:
            return None
        return {"reader": type(self).__qualname__, "name": self.name, "split": self.split,
                "channels": self.channels, "options": self.image_options, "items": [str(p) for p in paths]}

    def keep_samples(self, keep) -> None:
        """Keep only the samples ``keep`` (strictly increasing int indices), re-indexing every
        attribute named in :attr:`sample_fields` so labels, paths and ids stay aligned.

        Used to drop unreadable files (recorded in :attr:`skipped`).
        """
        n = len(self)
        keep = np.asarray(keep, dtype=np.int64).reshape(-1)
        if keep.size and (keep[0] < 0 or keep[-1] >= n or np.any(np.diff(keep) <= 0)):
            raise ValueError(f"keep: indices must be strictly increasing in [0, {n}), got {keep[:8].tolist()}...")
        for field in self.sample_fields:
            values = getattr(self, field, None)
            if values is None:
                continue
            if len(values) != n:
                raise ValueError(f"{type(self).__name__}.{field} has {len(values)} entries for {n} samples")
            if isinstance(values, np.ndarray):
                setattr(self, field, values[keep])
            else:
                setattr(self, field, [values[k] for k in keep])

    def raw_image(self, i: int) -> np.ndarray:
        """``load_raw`` through the on-disk cache when one is attached."""
        cache = self.__dict__.get("_image_cache")
        return cache[i] if cache is not None else self.load_raw(i)

    def _index(self, i) -> int:
        n = len(self)
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(f"index must be an integer, got {type(i).__name__}") from None
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {self.name} {self.split} of size {n}")
        return i

    def __getitem__(self, i):
        i = self._index(i)
        try:
            raw = self.raw_image(i)
        except DECODE_ERRORS as exc:
            warnings.warn(f"{self.name}: skipping unreadable image {self.describe(i)} "
                          f"({type(exc).__name__}: {exc})", RuntimeWarning, stacklevel=2)
            return None
        img = self.transform(raw) if self.transform is not None else to_normalized_tensor(raw, self.mean, self.std)
        target = torch.from_numpy(np.asarray(self.labels[i], dtype=np.float32))
        return img, target

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, "
                f"n={len(self)}, classes={self.num_classes}, channels={self.channels!r})")


def to_uint8_chw(raw: np.ndarray, replicate_gray: bool = True) -> torch.Tensor:
    """uint8 ``[H, W]`` or ``[H, W, 3]`` -> uint8 tensor ``[3, H, W]`` (gray replicated, a view),
    or ``[1, H, W]`` for gray with ``replicate_gray=False``."""
    arr = np.asarray(raw)
    if arr.dtype != np.uint8:
        raise TypeError(f"raw image must be uint8, got {arr.dtype}")
    if not arr.flags.writeable:  # PIL / memory-mapped arrays: torch wants writable memory
        arr = arr.copy()
    if arr.ndim == 2:
        t = torch.from_numpy(np.ascontiguousarray(arr)).unsqueeze(0)
        return t.expand(3, -1, -1) if replicate_gray else t
    if arr.ndim == 3 and arr.shape[2] == 3:
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    raise ValueError(f"raw image must be [H, W] or [H, W, 3], got shape {list(arr.shape)}")


def to_normalized_tensor(raw: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 image -> float32 ``[3, H, W]`` scaled to [0, 1] and normalised per channel."""
    x = to_uint8_chw(raw).to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (x - m) / s


class MultiViewDataset(torch.utils.data.Dataset):
    """Groups the images of a per-image dataset by an id (a patient's two eyes, a study's views).

    ``__getitem__(g) -> (images float32 [V, 3, S, S], target float32 [C])`` with the views in
    dataset order (at most ``max_views``; unreadable views dropped; ``None`` if none is left).
    The group's target is the element-wise max over its views' known labels (NaN where no view
    knows the label), so study-level labels repeated on every image come back unchanged.
    """

    def __init__(self, base: MultiLabelDataset, group_ids: Sequence | str, max_views: int | None = None):
        if max_views is not None and int(max_views) < 1:
            raise ValueError(f"max_views must be >= 1, got {max_views}")
        self.base = base
        self.max_views = None if max_views is None else int(max_views)
        # an attribute name of ``base`` (e.g. "patient_ids") lets :meth:`regroup` follow the base
        # when it drops samples (the on-disk cache drops unreadable files)
        self.group_field = group_ids if isinstance(group_ids, str) else None
        self._group(group_ids)

    def regroup(self) -> None:
        """Recompute the groups after the per-image dataset changed (needs a ``group_field``)."""
        if self.group_field is None:
            raise ValueError("regroup: this MultiViewDataset was built from a list of ids, not a field name")
        self._group(self.group_field)

    def _group(self, group_ids) -> None:
        base = self.base
        if isinstance(group_ids, str):
            field = group_ids
            group_ids = getattr(base, field, None)
            if group_ids is None:
                raise ValueError(f"group_ids: {base.name} {base.split} has no {field!r}")
        if len(group_ids) != len(base):
            raise ValueError(f"group_ids: {len(group_ids)} ids for {len(base)} images of {base.name} {base.split}")
        order: dict = {}
        for i, g in enumerate(group_ids):
            order.setdefault(g, []).append(i)
        self.group_ids = list(order)
        self.members = [m if self.max_views is None else m[:self.max_views] for m in order.values()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN, intended
            self.labels = np.stack([np.nanmax(base.labels[m], axis=0) for m in self.members]).astype(
                np.float32) if self.members else np.zeros((0, base.num_classes), np.float32)

    # the attributes the engine reads, taken from the per-image dataset
    name = property(lambda self: self.base.name)
    split = property(lambda self: self.base.split)
    class_names = property(lambda self: self.base.class_names)
    channels = property(lambda self: self.base.channels)
    mean = property(lambda self: self.base.mean)
    std = property(lambda self: self.base.std)
    num_classes = property(lambda self: self.base.num_classes)
    skipped = property(lambda self: self.base.skipped)
    label_prevalence = MultiLabelDataset.label_prevalence
    patient_ids = property(lambda self: self._per_group("patient_ids"))
    study_ids = property(lambda self: self._per_group("study_ids"))

    @property
    def transform(self):
        return self.base.transform

    @transform.setter
    def transform(self, value):
        # build_dataset attaches the pipeline to what the builder returns; the views are decoded
        # and transformed by the per-image dataset
        self.base.transform = value

    def _per_group(self, attr):
        """The per-image ids of the first view of each group (None when the base has none)."""
        ids = getattr(self.base, attr, None)
        return None if ids is None else [ids[m[0]] for m in self.members]

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, g):
        g = MultiLabelDataset._index(self, g)
        views = [v for v in (self.base[i] for i in self.members[g]) if v is not None]
        if not views:
            return None
        return torch.stack([img for img, _ in views]), torch.from_numpy(self.labels[g])


def collate(batch):
    """DataLoader collate for both item kinds; drops ``None`` (unreadable) items.

    Single-view items give ``(images [B, 3, S, S], targets [B, C])``; multi-view items give
    ``(images [B, V, 3, S, S], targets [B, C], view_mask bool [B, V])`` with missing views zero.
    An all-unreadable batch gives ``None`` (the engine skips it).
    """
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    images = [b[0] for b in batch]
    targets = torch.stack([b[1] for b in batch])
    if images[0].dim() == 3:
        return torch.stack(images), targets
    v_max = max(x.shape[0] for x in images)
    out = images[0].new_zeros((len(images), v_max) + tuple(images[0].shape[1:]))
    mask = torch.zeros(len(images), v_max, dtype=torch.bool)
    for k, x in enumerate(images):
        out[k, :x.shape[0]] = x
        mask[k, :x.shape[0]] = True
    return out, targets, mask
