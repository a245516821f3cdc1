"""DICOM slices of head CT: the header fields a split needs, Hounsfield units and CT windows.

pydicom is imported on first use (an optional dependency: ``fact_fast[data]``); a missing one is
an ImportError saying how to install it.
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["DEFAULT_WINDOWS", "check_windows", "dicom_to_hu", "import_pydicom", "read_dicom_header",
           "window_channels"]

# (centre, width) in HU: brain, subdural, bone
DEFAULT_WINDOWS = ((40.0, 80.0), (80.0, 200.0), (600.0, 2800.0))


def import_pydicom():
    """The pydicom module, or an ImportError naming the extra that installs it."""
    try:
        import pydicom
    except ImportError:
        raise ImportError("rsna_ihd: reading DICOM files needs pydicom "
                          "(pip install pydicom, or fact_fast[data])") from None
    return pydicom


def dicom_to_hu(ds) -> np.ndarray:
    """Pixel data of a pydicom dataset in Hounsfield units, float32 ``[H, W]``.

    HU = stored value x RescaleSlope + RescaleIntercept (1 and 0 when absent). Some RSNA-IHD
    slices are 12-bit unsigned with an intercept above -100 although their values wrap around:
    those get the community fix (stored value + 1000, modulo 4096, with intercept -1000), as
    published by J. Howard, "Cleaning the data for rapid prototyping (fastai)",
    https://www.kaggle.com/jhoward/cleaning-the-data-for-rapid-prototyping-fastai , and used
    in e.g. https://www.kaggle.com/reppic/gradient-sigmoid-windowing .
    """
    pixels = ds.pixel_array
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if int(ds.get("BitsStored", 16)) == 12 and int(ds.get("PixelRepresentation", 0)) == 0 and int(intercept) > -100:
        fixed = pixels.astype(np.int32) + 1000
        fixed[fixed >= 4096] -= 4096
        pixels, intercept = fixed, -1000.0
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def window_channels(hu: np.ndarray, windows=DEFAULT_WINDOWS) -> np.ndarray:
    """HU ``[H, W]`` -> uint8 ``[H, W, len(windows)]``: channel k maps ``[c - w/2, c + w/2]`` of
    window ``(c, w)`` linearly to 0..255 (rounded to nearest, clipped outside)."""
    hu = np.asarray(hu, dtype=np.float32)
    out = np.empty(hu.shape + (len(windows),), dtype=np.uint8)
    for k, (centre, width) in enumerate(windows):
        scaled = (hu - np.float32(centre - width / 2)) * np.float32(255.0 / width)
        out[..., k] = np.clip(np.rint(scaled), 0, 255)
    return out


def check_windows(windows) -> tuple:
    """Three ``(centre, width)`` HU pairs as floats, width > 0; a ValueError otherwise."""
    try:
        wins = tuple((float(c), float(w)) for c, w in windows)
    except (TypeError, ValueError):
        raise ValueError(f"windows must be three (centre, width) pairs in HU, got {windows!r}") from None
    if len(wins) != 3 or any(not w > 0 for _, w in wins):
        raise ValueError(f"windows must be three (centre, width) pairs with width > 0, got {windows!r}")
    return wins


def _pixel_data_problem(ds, path: str) -> str:
    """Why the (deferred) pixel data cannot be decoded, or '' (uncompressed data only)."""
    if "PixelData" not in ds:
        return "no PixelData element"
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and getattr(syntax, "is_compressed", False):
        return ""  # encapsulated frames: the length says nothing; a bad frame fails at decode
    raw = ds.get_item("PixelData")
    length = getattr(raw, "length", None)
    if length is None or length == 0xFFFFFFFF:
        return ""
    rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = rows * cols * int(ds.get("SamplesPerPixel", 1)) * frames * ((bits + 7) // 8)
    available = min(int(length), os.path.getsize(path) - int(raw.value_tell))
    if available < expected:
        return (f"PixelData holds {available} bytes, expected {expected} "
                f"({rows} x {cols}, {bits}-bit): corrupt pixel data")
    return ""


def read_dicom_header(path: str) -> tuple:
    """``(PatientID, StudyInstanceUID, SeriesInstanceUID, problem)`` of one file, reading the
    header only; ``problem`` is '' for a readable slice, else why it cannot be used."""
    pydicom = import_pydicom()
    try:
        with pydicom.config.disable_value_validation():  # RSNA UIDs are "ID_..." (not valid UI values)
            ds = pydicom.dcmread(path, defer_size=1024)
            ids = tuple(str(ds.get(k, "") or "").strip()
                        for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"))
            problem = _pixel_data_problem(ds, path)
    except Exception as exc:  # one bad file among 750k must not end the scan: report it
        return "", "", "", f"unreadable DICOM ({type(exc).__name__}: {exc})".replace("\n", " ")
    return ids + (problem,)
