"""The label model of the synthetic benchmark: which findings a sample has (the empirical
co-occurrence of NIH ChestX-ray14), which form and presentation each one takes, and which
positives the training labels miss.
"""
from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Callable

import numpy as np

from ..labels.sets import NIH_CLASS_NAMES

__all__ = ["LABEL_TABLE", "PRESENTATIONS", "PRESENTATION_PROBS", "label_vector_table", "sample_labels"]

LABEL_TABLE = Path(__file__).resolve().parent.parent / "tables" / "nih14_label_vectors.json"

PRESENTATIONS = ("clear", "faint", "small", "occluded")
PRESENTATION_PROBS = (0.55, 0.20, 0.15, 0.10)


def label_vector_table(path: Path = LABEL_TABLE) -> tuple[np.ndarray, np.ndarray]:
    """The shipped label-vector distribution: ``(vectors uint8 [V, 14], probabilities float64 [V])``."""
    with open(path) as f:
        table = json.load(f)
    if table.get("class_names") != list(NIH_CLASS_NAMES):
        raise ValueError(f"{path}: class_names do not match NIH_CLASS_NAMES")
    masks = np.array([m for m, _ in table["vectors"]], dtype=np.int64)
    counts = np.array([n for _, n in table["vectors"]], dtype=np.float64)
    C = len(NIH_CLASS_NAMES)
    vectors = ((masks[:, None] >> np.arange(C)) & 1).astype(np.uint8)
    return vectors, counts / counts.sum()


def sample_labels(label_rng: Callable[[int], np.random.Generator], num_samples: int, n_forms: np.ndarray,
                  missed_label_rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw the findings of ``num_samples`` samples, each from its own generator ``label_rng(i)``.

    ``n_forms`` int ``[C]`` is the number of forms of each class. Returns ``(clean uint8 [N, C],
    forms int8 [N, C], presentation int8 [N, C], missed bool [N, C])``: the true label vectors,
    each positive's form index and :data:`PRESENTATIONS` index (-1 where absent), and the
    positives the training labels miss.
    """
    vectors, probs = label_vector_table()
    cdf = np.cumsum(probs)
    cdf[-1] = 1.0
    N, C = num_samples, len(n_forms)
    pres_cdf = np.cumsum(PRESENTATION_PROBS)
    clean = np.zeros((N, C), np.uint8)
    forms = np.full((N, C), -1, np.int8)
    pres = np.full((N, C), -1, np.int8)
    missed = np.zeros((N, C), bool)
    for i in range(N):
        # a fixed number of draws per sample, so every quantity is independent of the others
        # and a larger missed_label_rate misses a superset of the positives
        u = label_rng(i).random(1 + 3 * C)
        y = vectors[min(int(np.searchsorted(cdf, u[0], side="right")), len(cdf) - 1)]
        pos = y.astype(bool)
        clean[i] = y
        forms[i, pos] = np.minimum((u[1:1 + C] * n_forms).astype(np.int64), n_forms - 1)[pos]
        pres[i, pos] = np.minimum(np.searchsorted(pres_cdf, u[1 + C:1 + 2 * C], side="right"),
                                  len(PRESENTATIONS) - 1)[pos]
        missed[i] = pos & (u[1 + 2 * C:] < missed_label_rate)
    return clean, forms, pres, missed
