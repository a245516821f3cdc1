"""The report of a training run: its test scores, statistics, figures and page, written to disk."""
from __future__ import annotations

import csv
import os

import numpy as np

from fact_fast.engine import TEST_SCORES_FILE, load_scores, save_scores
from fact_fast.inference import code_counts, load_trained_model, score_checkpoint_split, thresholds_of
from fact_fast.metrics import compute_metrics
from fact_fast.utils.checkpoint import BEST, RunCheckpoint

from .figures import png_bytes
from .page import Section, render_page
from .sections import RunResults, report_figures, threshold_label
from .statistics import read_log, threshold_table

__all__ = ["build_report", "load_test_scores"]


def load_test_scores(run_dir: str, model, ckpt: RunCheckpoint, *, batch_size: int | None = None,
                     data_root: str | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """The test scores and targets float32 ``[N, C]`` of ``run_dir`` and where they came from:
    its ``scores_test.npz`` when present, else recomputed from ``model`` on the checkpoint's test
    split (and saved there unless the directory is read-only)."""
    path = os.path.join(run_dir, TEST_SCORES_FILE)
    if os.path.isfile(path):
        scores, targets, names = load_scores(path)
        if names != list(ckpt.class_names):
            raise ValueError(f"{path}: its classes differ from {ckpt.path}'s; delete it to recompute")
        return scores, targets, f"read from {TEST_SCORES_FILE}"
    scores, targets = score_checkpoint_split(model, ckpt, "test", batch_size=batch_size, data_root=data_root,
                                             progress=progress)
    try:
        save_scores(path, scores, targets, ckpt.class_names)
    except OSError:
        pass  # a read-only run directory: the scores are simply recomputed next time
    return scores, targets, f"recomputed from {os.path.basename(ckpt.path)} (no {TEST_SCORES_FILE})"


def build_report(run_dir: str, out_dir: str | None = None, *, thresholds: str = "fixed", device: str = "auto",
                 batch_size: int | None = None, data_root: str | None = None, progress: bool = False) -> str:
    """Write the report of ``run_dir`` (its ``best.pt``, ``metrics.jsonl`` and test scores) into
    ``out_dir`` (default ``run_dir/report``): ``report.html``, each figure as a PNG and the
    threshold table as ``thresholds.csv``. ``thresholds`` (a ``predict --thresholds`` mode) is
    what the summary F1 and the predicted co-occurrence use. Returns the HTML path."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    model, ckpt = load_trained_model(os.path.join(run_dir, BEST), device)
    out_dir = out_dir or os.path.join(run_dir, "report")
    os.makedirs(out_dir, exist_ok=True)
    names = list(ckpt.class_names)
    log = read_log(os.path.join(run_dir, "metrics.jsonl"))
    scores, targets, source = load_test_scores(run_dir, model, ckpt, batch_size=batch_size, data_root=data_root,
                                          progress=progress)
    thr = thresholds_of(ckpt, thresholds, len(names))
    metrics = compute_metrics(scores, targets, threshold=thr, class_names=names, groups=ckpt.groups)
    codes = code_counts(model, ckpt, batch_size=batch_size, data_root=data_root, progress=progress)
    run = RunResults(ckpt, names, log, scores, targets, source, thresholds, thr, metrics, codes)
    sections = []
    for fig, file, title, caption in report_figures(run):
        png = png_bytes(fig)
        with open(os.path.join(out_dir, file), "wb") as fh:
            fh.write(png)
        sections.append(Section(title, file, png, caption))
    table = threshold_table(ckpt, scores, targets, names, run.groups)
    with open(os.path.join(out_dir, "thresholds.csv"), "w", newline="") as fh:
        csv.writer(fh).writerows(table)
    html_path = os.path.join(out_dir, "report.html")
    with open(html_path, "w") as fh:
        fh.write(render_page(run_dir, ckpt, metrics, source, threshold_label(ckpt, thresholds), sections, table))
    return html_path
