"""The numbers a run report shows: the training log, label co-occurrence, calibration bins,
codebook use and the per-class threshold table (numpy in, numpy or plain Python out)."""
from __future__ import annotations

import json
import os

import numpy as np

from fact_fast.inference import available_thresholds
from fact_fast.metrics import compute_metrics
from fact_fast.utils.checkpoint import RunCheckpoint

__all__ = ["read_log", "cooccurrence", "reliability_bins", "circular_layout", "codebook_usage", "threshold_table",
           "fmt_pct"]


def fmt_pct(v) -> str:
    """A fraction as a percentage with two decimals; "–" for None."""
    return "–" if v is None else f"{100 * v:.2f}"


def read_log(path: str) -> list:
    """The rows of a ``metrics.jsonl`` (one dict per epoch), in order; [] when absent."""
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {n} is not JSON ({exc})") from None
    return rows


def cooccurrence(y: np.ndarray) -> np.ndarray:
    """P(j | i) float64 ``[C, C]`` from 1/0/NaN labels ``[N, C]``: among rows where i is positive
    and j known, the fraction with j positive (NaN where i has no such row)."""
    y = np.asarray(y, dtype=np.float64)
    known = ~np.isnan(y)
    pos = np.where(known, y, 0.0)
    both = pos.T @ pos                               # [i, j]: i and j positive
    base = pos.T @ known.astype(np.float64)          # [i, j]: i positive, j known
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(base > 0, both / np.maximum(base, 1), np.nan)


def reliability_bins(scores: np.ndarray, targets: np.ndarray, bins: int = 10) -> dict:
    """Equal-width score bins over [0, 1] of every known (score, label) pair of ``scores`` /
    ``targets`` ``[N, C]``: ``edges`` [bins+1], ``count``, ``mean_score`` and ``positive_rate``
    per bin (NaN for empty bins), and the expected calibration error ``ece`` (count-weighted
    |positive_rate - mean_score|)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(targets, dtype=np.float64).ravel()
    keep = ~np.isnan(t)
    s, t = s[keep], t[keep]
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(s, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(which, weights=s, minlength=bins) / count
        rate = np.bincount(which, weights=t, minlength=bins) / count
    ece = float(np.nansum(count * np.abs(rate - mean_score)) / max(count.sum(), 1))
    return {"edges": edges, "count": count, "mean_score": mean_score, "positive_rate": rate, "ece": ece}


def circular_layout(n: int) -> np.ndarray:
    """float64 ``[n, 2]`` node positions on the unit circle, node 0 at the top, clockwise."""
    angle = np.pi / 2 - 2 * np.pi * np.arange(n) / max(n, 1)
    return np.stack([np.cos(angle), np.sin(angle)], axis=1)


def codebook_usage(counts: np.ndarray) -> tuple[int, float]:
    """(atoms used, perplexity) of per-atom counts int ``[K]``: the perplexity is the number of
    equally used atoms with the same entropy (0 when nothing was counted)."""
    used = int((counts > 0).sum())
    p = counts / max(counts.sum(), 1)
    nz = p[p > 0]
    return used, float(np.exp(-(nz * np.log(nz)).sum())) if nz.size else 0.0


def threshold_table(ckpt: RunCheckpoint, scores: np.ndarray, targets: np.ndarray, names: list, groups) -> list:
    """Rows of strings (the first the header): class, group, train prevalence, and per threshold
    mode the checkpoint stores, its value and the test F1 it gives."""
    modes = list(available_thresholds(ckpt, len(names)).items())
    f1 = {mode: compute_metrics(scores, targets, threshold=t, class_names=names)["per_class_f1"] for mode, t in modes}
    head = ["class", "group", "train prevalence %"]
    for mode, _ in modes:
        head += [f"{mode} threshold", f"{mode} test F1 %"]
    rows = [head]
    prev = ckpt.train_prevalence or [None] * len(names)
    for c, name in enumerate(names):
        row = [name, (groups or [""] * len(names))[c], fmt_pct(prev[c])]
        for mode, t in modes:
            row += [f"{t[c]:.4f}", fmt_pct(f1[mode][name])]
        rows.append(row)
    return rows
