"""Array checks and conversions shared by the metrics: scores and targets as float64 numpy,
labels 1 / 0 / NaN, class names and per-class thresholds; undefined values as None."""
from __future__ import annotations

import math

import numpy as np


def to_float(x):
    """float or None (for NaN/inf/None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def mean_or_none(values):
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def to_numpy(x, argname):
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover
        pass
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{argname} must be a numeric [N, C] array") from None


def check_labels(t: np.ndarray, argname: str) -> None:
    bad = ~(np.isnan(t) | (t == 0) | (t == 1))
    if bad.any():
        r, c = np.argwhere(bad)[0][:2] if t.ndim == 2 else (np.argwhere(bad)[0][0], 0)
        raise ValueError(f"{argname} must contain only 0, 1 or NaN (unknown); found {float(t[bad][0])!r} "
                         f"(row {r}, column {c})")


def scores_and_targets(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    s = to_numpy(scores, "scores")
    t = to_numpy(targets, "targets")
    if s.ndim != 2:
        raise ValueError(f"scores must be a 2-D [N, C] array, got shape {list(s.shape)}")
    if t.ndim != 2:
        raise ValueError(f"targets must be a 2-D [N, C] array, got shape {list(t.shape)}")
    if s.shape != t.shape:
        raise ValueError(f"targets shape {list(t.shape)} does not match scores shape {list(s.shape)}")
    if s.shape[0] == 0:
        raise ValueError("scores: need at least one sample (N = 0)")
    if s.shape[1] == 0:
        raise ValueError("scores: need at least one class (C = 0)")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    check_labels(t, "targets")
    return s, t


def class_names_for(class_names, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    names = [str(c) for c in class_names]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names for {num_classes} classes")
    if len(set(names)) != num_classes:
        raise ValueError("class_names must be unique")
    return names


def per_class_thresholds(threshold, num_classes: int) -> np.ndarray:
    """float64 [C] from a scalar or a per-class sequence."""
    thr = np.asarray(threshold, dtype=np.float64)
    if thr.ndim == 0:
        thr = np.full(num_classes, float(thr))
    if thr.shape != (num_classes,):
        raise ValueError(f"threshold must be a number or one value per class ({num_classes}), "
                         f"got shape {list(thr.shape)}")
    if not np.all(np.isfinite(thr)):
        raise ValueError("threshold contains NaN or inf")
    return thr
