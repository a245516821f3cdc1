"""Multi-view studies of the synthetic benchmark: which of a study's V views shows each finding.

A study's views are separate renderings of the same findings; each positive finding is drawn in
every view, except that with probability ``view_only_rate`` it is drawn in one view only, chosen
uniformly. A single image then misses findings its labels claim; the study as a whole shows them
all.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["view_visibility"]


def view_visibility(clean_labels: np.ndarray, views: int, view_only_rate: float,
                    view_rng: Callable[[int], np.random.Generator]) -> np.ndarray:
    """bool ``[N * V, C]``: row ``i * V + v`` says which findings view v of study i shows.

    ``clean_labels`` float ``[N, C]`` are the studies' true labels; ``view_rng(i)`` is study i's
    generator (two draws per class: whether the finding is in one view only, and which).
    """
    V, (N, C) = views, clean_labels.shape
    visible = np.repeat(clean_labels > 0, V, axis=0).reshape(N, V, C)
    for i in range(N):
        u = view_rng(i).random(2 * C)
        only = (clean_labels[i] > 0) & (u[:C] < view_only_rate)
        which = np.minimum((u[C:] * V).astype(np.int64), V - 1)
        for c in np.flatnonzero(only):
            visible[i, :, c] = np.arange(V) == which[c]
    return visible.reshape(N * V, C)
