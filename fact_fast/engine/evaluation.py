"""What a training run writes of its evaluations: a split's metrics, JSON-safe values, the test
scores file (model-agnostic). Scoring a stored checkpoint is :mod:`fact_fast.inference`'s job."""
from __future__ import annotations

import math

import numpy as np
import torch

from fact_fast.metrics import compute_metrics

__all__ = ["compute_split_metrics", "jsonable", "save_scores", "load_scores", "TEST_SCORES_FILE"]


def jsonable(x):
    """``x`` with numpy/torch values as plain Python and non-finite floats as None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def compute_split_metrics(scores: np.ndarray, targets: np.ndarray, data, threshold: float) -> dict:
    """``fact_fast.metrics.compute_metrics`` with the run's class names and frequency groups."""
    return compute_metrics(scores, targets, threshold=threshold, class_names=data.class_names,
                           groups=data.groups)


TEST_SCORES_FILE = "scores_test.npz"


def save_scores(path: str, scores: np.ndarray, targets: np.ndarray, class_names) -> None:
    """``scores`` / ``targets`` float32 ``[N, C]`` and the class names as an ``.npz`` (no pickles)."""
    np.savez(path, scores=np.asarray(scores, np.float32), targets=np.asarray(targets, np.float32),
             class_names=np.array([str(c) for c in class_names]))


def load_scores(path: str) -> tuple[np.ndarray, np.ndarray, list]:
    """(scores, targets, class names) written by :func:`save_scores`."""
    with np.load(path, allow_pickle=False) as z:
        scores, targets, names = z["scores"], z["targets"], [str(c) for c in z["class_names"]]
    if scores.shape != targets.shape or scores.ndim != 2 or scores.shape[1] != len(names):
        raise ValueError(f"{path}: scores {list(scores.shape)}, targets {list(targets.shape)} and "
                         f"{len(names)} class names do not fit together")
    return scores, targets, names
