"""The figures of a run report in page order, each with the caption that says how to read it."""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterator

import numpy as np

from fact_fast.inference import positive_calls
from fact_fast.utils.checkpoint import RunCheckpoint

from .figures import (fig_ap_auc_vs_prevalence, fig_class_curves, fig_codebook, fig_cooccurrence, fig_label_graph,
                      fig_reliability, fig_training_curves)
from .statistics import cooccurrence

__all__ = ["RunResults", "report_figures", "threshold_label"]


@dataclass
class RunResults:
    """What a run report draws, aligned with ``names`` (the checkpoint's class order).

    ``log``: the ``metrics.jsonl`` rows. ``scores`` / ``targets``: float32 ``[N, C]`` of the test
    split (NaN = unknown label). ``thresholds``: float64 ``[C]`` of ``threshold_mode``.
    ``metrics``: :func:`fact_fast.metrics.compute_metrics` of the test split at those
    thresholds. ``codes``: per-atom counts int64 ``[K]`` over the test split, or None.
    """

    ckpt: RunCheckpoint
    names: list
    log: list
    scores: np.ndarray
    targets: np.ndarray
    source: str
    threshold_mode: str
    thresholds: np.ndarray
    metrics: dict
    codes: np.ndarray | None

    @property
    def prevalence(self) -> list:
        return list(self.ckpt.train_prevalence or [None] * len(self.names))

    @property
    def groups(self):
        return self.ckpt.groups


def threshold_label(ckpt: RunCheckpoint, mode: str) -> str:
    """How the report names the thresholds of ``mode`` (a ``predict --thresholds`` value)."""
    return {"fixed": f"fixed threshold {float(ckpt.default_threshold):g}",
            "val-f1": "validation F1-optimal thresholds",
            "val-youden": "validation Youden thresholds"}[mode]


def report_figures(run: RunResults) -> Iterator[tuple]:
    """``(figure, PNG file name, title, caption)`` per section; sections without data (no
    training log, no codebook, no label graph) are left out."""
    names, m = run.names, run.metrics
    if run.log:
        yield (fig_training_curves(run.log), "training_curves.png", "Training curves",
               "Per epoch of every stage (dotted lines mark a new stage): the training losses (means over the "
               "epoch's batches), the validation metrics used to pick best.pt, the learning rate, and each "
               "statistic the model logs, drawn as found in metrics.jsonl. For FACT: τ, the width of its fuzzy "
               "membership; how many codebook atoms were used and their perplexity; how alike the classes are "
               "(mean pairwise cosine of the anchors, cosine between two classes' embeddings E_c in one image, "
               "correlation between two classes' validation scores: near 1, every class sees the same thing); "
               "the interface gates' spread and ‖Q‖/‖attended‖ (near 0: a shared mean pool); and the "
               "10th/50th/90th percentiles of the point loss's logit over the validation positives and "
               "negatives.")
    yield (fig_ap_auc_vs_prevalence(names, run.prevalence, m["per_class_ap"], m["per_class_auc"],
                                    m["per_class_prevalence"]),
           "ap_auc_vs_prevalence.png", "Per-class AP and AUC against prevalence",
           "Each dot is one class: its test-split average precision (left) and ROC AUC (right) against how often "
           "it is positive in the training split. Rare classes are usually harder. What a random ranking "
           "achieves: the grey dashes on the left (AP = the class's test prevalence), the dashed line on the "
           "right (AUC = 50 %). Classes without a test positive (or, for AUC, without a test negative) are left "
           "out.")
    yield (fig_class_curves(run.scores, run.targets, names, "pr"), "pr_curves.png", "Precision-recall curves",
           "One panel per class on the test split: precision against recall as the decision threshold sweeps "
           "from high to low; the dashed line is the class's prevalence (a random ranking). n+ = test positives.")
    yield (fig_class_curves(run.scores, run.targets, names, "roc"), "roc_curves.png", "ROC curves",
           "One panel per class on the test split: true positive rate (sensitivity) against false positive rate "
           "(1 − specificity) as the threshold sweeps; the diagonal is a random ranking.")
    fig, ece = fig_reliability(run.scores, run.targets)
    yield (fig, "reliability.png", "Reliability of the scores",
           f"All (image, class) pairs of the test split with a known label, grouped into 10 score bins: the "
           f"fraction that is truly positive against the mean score of the bin (top) and how many pairs fall in "
           f"each bin (bottom, log scale). A calibrated model lies on the diagonal; expected calibration error "
           f"{100 * ece:.1f} %. FACT's scores are fuzzy memberships, not probabilities: read this as how far "
           f"they are from calibrated, not as a defect.")
    if run.codes is not None:
        fig, used, perplexity = fig_codebook(run.codes)
        yield (fig, "codebook_usage.png", "Codebook usage",
               f"How many feature positions of the test images were assigned to each atom of the codebook (the "
               f"atomic visual space), by index (left) and sorted (right): {used} of {len(run.codes)} atoms "
               f"used, perplexity {perplexity:.1f} (the number of equally used atoms with the same entropy).")
    graph = run.ckpt.label_graph
    if graph and graph.get("edge_list") is not None:
        yield (fig_label_graph(graph, names, run.prevalence, run.groups), "label_graph.png", "Label graph",
               f"The comorbidity graph the model was given, built from the training labels "
               f"(method {graph.get('method')}, parameters {graph.get('params')}). Nodes are classes (area ∝ "
               f"train prevalence, colour = frequency group); lines join co-occurring classes (arrows for "
               f"one-way edges), thicker and labelled with the weight when the graph is weighted. "
               f"{len(graph.get('isolated', []))} classes have no edge.")
    label = threshold_label(run.ckpt, run.threshold_mode)
    pred = positive_calls(run.scores, run.thresholds).astype(np.float64)
    yield (fig_cooccurrence(cooccurrence(run.targets), cooccurrence(pred), names, label), "cooccurrence.png",
           "Co-occurrence: true against predicted",
           f"Cell (i, j) is the probability that finding j is present given finding i is present, on the test "
           f"split: from the labels (left) and from the model's positive calls with the {label} (right). "
           f"Similar matrices mean the model reproduces how findings occur together; grey cells are the "
           f"diagonal (always 1) and rows of findings never present (left) or never called (right).")
