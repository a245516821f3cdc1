"""Per-class decision thresholds chosen on a split's scores (best F1 or Youden's J)."""
from __future__ import annotations

import math

import numpy as np

from .arrays import scores_and_targets

THRESHOLD_METHODS = ("f1", "youden")
#: Fewest known positives (and, for Youden's J, negatives) a class needs for its own threshold:
#: the best cut over one or two positives is chance (the bundled benchmark's Hernia, 2 validation
#: positives, got a cut that called it on 72 % of the test images).
MIN_EXAMPLES = 10


def choose_thresholds(scores, targets, method: str = "f1", default: float = 0.5,
                      min_examples: int = MIN_EXAMPLES) -> np.ndarray:
    """Per-class decision thresholds chosen on validation data, float64 ``[C]``.

    For each class (on its known rows) every cut between two consecutive distinct scores is
    tried — the threshold is their midpoint, so ``score > threshold`` predicts exactly the rows
    above the cut; below the lowest score it is the largest float under it — and the one with
    the best criterion is kept:

    * ``"f1"``: the class's F1 = 2 TP / (2 TP + FP + FN);
    * ``"youden"``: Youden's J = sensitivity + specificity − 1.

    Ties (within 1e-12) go to the highest threshold (fewest predicted positives), so the choice
    is deterministic. A class with fewer than ``min_examples`` known positives (for ``"youden"``
    also one with fewer known negatives) keeps ``default``, the model's own threshold.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"method must be one of {list(THRESHOLD_METHODS)}, got {method!r}")
    if not math.isfinite(float(default)):
        raise ValueError(f"default must be a finite number, got {default!r}")
    if isinstance(min_examples, bool) or not isinstance(min_examples, (int, np.integer)) or min_examples < 1:
        raise ValueError(f"min_examples must be an integer >= 1, got {min_examples!r}")
    s, t = scores_and_targets(scores, targets)
    out = np.full(s.shape[1], float(default))
    for c in range(s.shape[1]):
        known = ~np.isnan(t[:, c])
        y, sc = t[known, c], s[known, c]
        pos = y.sum()
        neg = len(y) - pos
        if pos < min_examples or (method == "youden" and neg < min_examples):
            continue
        order = np.argsort(-sc, kind="stable")
        sc, y = sc[order], y[order]
        block_end = np.r_[sc[1:] != sc[:-1], True]  # last row of each run of equal scores
        tp, fp = np.cumsum(y)[block_end], np.cumsum(1.0 - y)[block_end]
        upper = sc[block_end]                        # lowest score predicted positive at each cut
        lower = np.r_[upper[1:], -np.inf]            # highest score predicted negative
        if method == "f1":
            crit = 2.0 * tp / (tp + fp + pos)
        else:
            crit = tp / pos - fp / neg
        k = int(np.flatnonzero(crit >= crit.max() - 1e-12)[0])
        if np.isinf(lower[k]):
            thr = np.nextafter(upper[k], -np.inf)
        else:
            thr = 0.5 * (upper[k] + lower[k])
            if thr >= upper[k]:  # adjacent floats: the midpoint rounded up
                thr = lower[k]
        out[c] = thr
    return out
