"""Decoding image files to the uint8 arrays of the dataset contract, and the base of file readers.

High-bit-depth images (12-, 14- or 16-bit radiographs stored as 16-bit PNG/TIFF, 32-bit integer
or float images) are mapped to uint8 by one of two documented rules (``intensity``):

* ``"bit_depth"`` (default): divide by ``2**b - 1`` where ``b`` is the bit depth actually used by
  the image -- the smallest of 8, 10, 12, 14, 16, ... bits whose range holds the image's maximum.
  PNG stores 12-bit detector data in 16-bit containers without saying so (Pillow does not read
  the ``sBIT`` chunk), so the container's 65535 would leave such an image at most 1/16 of the
  uint8 range; the data's own depth keeps its contrast and, unlike per-image max scaling, keeps
  one fixed scale for every image of a detector. Negative values are clipped to 0.
* ``"percentile"``: a linear window from the 0.5th to the 99.5th percentile of the image
  (robust to a few hot pixels; every image is stretched to the full range).

8-bit images are returned unchanged (converted to "L" or "RGB" by Pillow).
"""
from __future__ import annotations

import os

import numpy as np

from ..base import MultiLabelDataset

__all__ = ["INTENSITY_MODES", "FileImageDataset", "read_image_file", "high_bit_to_uint8"]

INTENSITY_MODES = ("bit_depth", "percentile")
PERCENTILE_WINDOW = (0.5, 99.5)
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def check_intensity(intensity: str) -> str:
    if intensity not in INTENSITY_MODES:
        raise ValueError(f"intensity must be one of {list(INTENSITY_MODES)}, got {intensity!r}")
    return intensity


def high_bit_to_uint8(arr: np.ndarray, intensity: str = "bit_depth") -> np.ndarray:
    """Integer or float grayscale ``[H, W]`` of any bit depth -> uint8 ``[H, W]`` (module docstring).

    Float images with all values in [0, 1] are read as fractions of full scale.
    """
    check_intensity(intensity)
    a = np.asarray(arr)
    if a.size == 0:
        return np.zeros(a.shape, np.uint8)
    x = a.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("image has NaN or infinite pixel values")
    if intensity == "percentile":
        lo, hi = np.percentile(x, PERCENTILE_WINDOW)
        scaled = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    elif a.dtype.kind == "f" and x.min() >= 0.0 and x.max() <= 1.0:
        scaled = x
    else:
        top = int(np.ceil(x.max())) if x.max() > 0 else 0
        bits = max(8, top.bit_length() + top.bit_length() % 2)  # 8, 10, 12, 14, 16, ...
        scaled = x / float(2 ** bits - 1)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def read_image_file(path, channels: str = "gray", *, intensity: str = "bit_depth") -> np.ndarray:
    """Decode an image file at its own size -> uint8 ``[H, W]`` (gray) or ``[H, W, 3]`` (rgb).

    High-bit-depth files keep their contrast (see the module docstring for ``intensity``).
    Raises what Pillow raises for a missing or undecodable file (``FileNotFoundError``,
    ``PIL.UnidentifiedImageError`` (an ``OSError``), ``OSError`` for a truncated file).
    """
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in _HIGH_BIT_MODES:
            gray = high_bit_to_uint8(np.asarray(im), intensity)
            return gray if channels == "gray" else np.repeat(gray[:, :, None], 3, axis=2)
        # np.array copies: Pillow's buffer is read-only and torch.from_numpy warns on it
        return np.array(im.convert("L" if channels == "gray" else "RGB"), dtype=np.uint8)


class FileImageDataset(MultiLabelDataset):
    """A reader whose samples are image files: ``paths[i]`` is decoded by :func:`read_image_file`.

    Subclasses set ``paths`` (absolute or root-joined file paths, one per sample) and
    ``intensity``; the on-disk cache (:mod:`fact_fast.data.cache`) keys its array on the paths
    and ``image_options``.
    """

    paths: list
    intensity: str = "bit_depth"

    @property
    def image_options(self) -> dict:
        """Reader options that change the decoded pixels (hashed into the cache key)."""
        return {"intensity": self.intensity}

    def load_raw(self, i: int) -> np.ndarray:
        p = self.paths[i]
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{self.name}: image file not found: {p}")
        return read_image_file(p, self.channels, intensity=self.intensity)

