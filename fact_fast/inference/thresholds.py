"""The decision thresholds of a checkpoint and the rule that applies them.

A class is positive when ``score > threshold``, compared in float64: the comparison
:func:`fact_fast.metrics.choose_thresholds` chooses its per-class thresholds for, so the stored
thresholds reproduce the validation optimum they were chosen at.
"""
from __future__ import annotations

import numpy as np

from fact_fast.utils.checkpoint import RunCheckpoint

__all__ = ["THRESHOLD_CHOICES", "positive_calls", "thresholds_of", "available_thresholds"]

# threshold mode -> key of ckpt.thresholds (None: the model's default threshold for every class)
THRESHOLD_CHOICES = {"fixed": None, "val-f1": "f1", "val-youden": "youden"}


def positive_calls(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """bool ``[N, C]``: ``scores [N, C] > thresholds [C]`` in float64 (NaN scores -> False)."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    if s.ndim != 2 or t.shape != (s.shape[1],):
        raise ValueError(f"thresholds must have one value per class ({s.shape[-1]}), got shape {list(t.shape)}")
    return s > t[None, :]


def thresholds_of(ckpt: RunCheckpoint, mode: str, num_classes: int) -> np.ndarray:
    """Per-class thresholds float64 ``[C]`` for ``mode`` (one of :data:`THRESHOLD_CHOICES`): the
    checkpoint's default threshold, or the ones chosen on the validation split at training time.
    Raises ValueError when the checkpoint stores none for ``mode`` (only a best.pt written after
    a validation pass does) or they are not ``num_classes`` finite numbers."""
    if mode not in THRESHOLD_CHOICES:
        raise ValueError(f"thresholds must be one of {list(THRESHOLD_CHOICES)}, got {mode!r}")
    key = THRESHOLD_CHOICES[mode]
    if key is None:
        return np.full(num_classes, float(ckpt.default_threshold), dtype=np.float64)
    stored = (ckpt.thresholds or {}).get(key)
    if stored is None:
        raise ValueError(f"thresholds: {ckpt.path or 'the checkpoint'} has no {mode} thresholds (only a "
                         f"best.pt written after a validation pass stores them); use --thresholds fixed")
    values = np.asarray(stored, dtype=np.float64)
    if values.shape != (num_classes,) or not np.all(np.isfinite(values)):
        raise ValueError(f"thresholds: the stored {mode} thresholds are not {num_classes} finite numbers")
    return values


def available_thresholds(ckpt: RunCheckpoint, num_classes: int) -> dict[str, np.ndarray]:
    """``{mode: thresholds float64 [C]}`` for every mode of :data:`THRESHOLD_CHOICES` the
    checkpoint can give (``fixed`` always), in that order."""
    found = {}
    for mode in THRESHOLD_CHOICES:
        try:
            found[mode] = thresholds_of(ckpt, mode, num_classes)
        except ValueError:
            continue  # not stored in this checkpoint
    return found
