"""A run at a glance: ``python -m fact_fast.report RUN_DIR [--out DIR]``.

Writes into ``RUN_DIR/report/`` (or ``--out``) one self-contained ``report.html`` (every figure
embedded as a base64 PNG, readable offline and mailable) plus the figures as PNG files and the
threshold table as ``thresholds.csv``:

==========================  =================================================================
``training_curves.png``     every numeric series of ``metrics.jsonl`` per epoch: losses,
                            validation metrics, learning rate and the model's own statistics
                            (FACT: τ, codebook perplexity and usage) -- whatever the log has
``ap_auc_vs_prevalence.png`` per-class test AP and AUC against the class's train prevalence
``pr_curves.png``           precision-recall curve per class (test split)
``roc_curves.png``          ROC curve per class (test split)
``reliability.png``         reliability diagram of the scores (test split, all classes)
``codebook_usage.png``      how often each codebook atom is used on the test split (models
                            whose forward returns ``extras["codes"]``, i.e. FACT with VQ)
``label_graph.png``         the run's label graph (from the checkpoint's ``label_graph``
                            report) with its edge weights, circular layout
``cooccurrence.png``        P(j | i) from the test labels next to P(j | i) from the
                            thresholded predictions
==========================  =================================================================

Test scores come from ``scores_test.npz`` (written by the training run); when it is absent they
are recomputed from ``best.pt`` on the checkpoint's test split (and saved there). Thresholded
figures and the table use ``score > threshold`` in float64, as ``predict``.
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import os
import sys
from typing import Sequence

import numpy as np

__all__ = ["main", "build_parser", "build_report", "read_log", "cooccurrence", "reliability_bins",
           "circular_layout"]

CAPTION_WIDTH = 110


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -- data ------------------------------------------------------------------------------------------
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
    """Equal-width score bins over [0, 1] of every known (score, label) pair: ``edges`` [bins+1],
    ``count``, ``mean_score`` and ``positive_rate`` per bin (NaN for empty bins), and the expected
    calibration error ``ece`` (count-weighted |positive_rate - mean_score|)."""
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


# -- figures ---------------------------------------------------------------------------------------
def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return int(math.ceil(n / ncols)), ncols


# FACT's head diagnostics (FACT.diagnostics) drawn together: how alike the classes are, the
# interface, and the point loss's logit
_HEAD_SIMILARITY = ("anchor_cos", "class_embedding_cos", "val_class_score_correlation")
_INTERFACE = ("gate_std", "query_ratio")


def _curve_group(key: str) -> str:
    if key in _HEAD_SIMILARITY:
        return "how alike the classes are"
    if key in _INTERFACE:
        return "interface gates"
    if key.startswith("logit_"):
        return "point-loss logit percentiles"
    if key.startswith("train_"):
        return "training losses"
    return "validation metrics" if key.startswith("val_") else key


def fig_training_curves(rows: list):
    """One panel per group of numeric series of the log (losses, validation, lr, each statistic)."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    skip = {"epoch", "step", "stage_index", "stage"}
    keys = []
    for r in rows:
        keys += [k for k, v in r.items() if k not in skip and k not in keys and isinstance(v, (int, float))
                 and not isinstance(v, bool)]
    groups = {}
    for k in keys:
        groups.setdefault(_curve_group(k), []).append(k)
    x = np.arange(1, len(rows) + 1)
    stages = [r.get("stage", "") for r in rows]
    nr, nc = _grid(len(groups), 3)
    fig, axes = plt.subplots(nr, nc, figsize=(4.6 * nc, 3.3 * nr), squeeze=False)
    for ax, (title, series) in zip(axes.flat, groups.items()):
        for k in series:
            y = np.array([r.get(k) if r.get(k) is not None else np.nan for r in rows], dtype=np.float64)
            label = k.removeprefix("train_").removeprefix("val_")
            ax.plot(x, y, marker="o", ms=3, label=label)
        for i in range(1, len(stages)):
            if stages[i] != stages[i - 1]:
                ax.axvline(i + 0.5, color="gray", ls=":", lw=1)
                ax.text(i + 0.6, ax.get_ylim()[1], stages[i], fontsize=7, va="top", color="gray")
        ax.set_title(title.replace("_", " "))
        ax.set_xlabel("epoch (all stages in order)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("value" if len(series) > 1 else title.replace("_", " "))
        if title == "lr":
            ax.set_yscale("log")
        if len(series) > 1:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _percent_ticks(ax, lo: float, hi: float) -> None:
    """Plain-number ticks (0.1, 0.3, 1, 3, 10, ...) on a logarithmic percent axis."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ticks = [t for t in (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100) if lo / 1.5 <= t <= hi * 1.5]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def fig_ap_auc_vs_prevalence(names: list, prevalence: Sequence[float], ap: dict, auc: dict, test_prev: dict):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, values, label in ((axes[0], ap, "average precision (AP)"), (axes[1], auc, "ROC AUC")):
        pts = [(100 * p, 100 * values[n], n) for n, p in zip(names, prevalence)
               if values.get(n) is not None and p is not None and p > 0]
        if pts:
            xs, ys, labels = zip(*pts)
            ax.scatter(xs, ys, s=28, color="tab:blue", zorder=3)
            for xx, yy, lab in pts:
                ax.annotate(lab, (xx, yy), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xscale("log")
            _percent_ticks(ax, min(xs), max(xs))
        if label.startswith("average") and pts:
            chance = [(100 * p, 100 * test_prev[n]) for n, p in zip(names, prevalence)
                      if p and values.get(n) is not None]
            ax.scatter(*zip(*chance), marker="_", s=120, color="gray", label="chance = the class's test prevalence")
            ax.legend(fontsize=8, loc="lower right")
        elif pts:
            ax.axhline(50, color="gray", ls="--", lw=1)
        ax.set_ylim(0, 102)
        ax.set_xlabel("train prevalence of the class (%, log scale)")
        ax.set_ylabel(f"test {label} (%)")
        ax.set_title(f"per-class test {label.split(' (')[0]} vs. how common the class is")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def _class_curves(scores, targets, names, kind: str):
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _plt()
    nr, nc = _grid(len(names), 6 if len(names) > 24 else 4)
    fig, axes = plt.subplots(nr, nc, figsize=(2.6 * nc, 2.45 * nr), squeeze=False)
    for c, (ax, name) in enumerate(zip(axes.flat, names)):
        known = ~np.isnan(targets[:, c])
        y, s = targets[known, c], scores[known, c].astype(np.float64)
        pos = int(y.sum())
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        if pos == 0 or (kind == "roc" and pos == len(y)):
            ax.text(0.5, 0.5, "not defined:\nno positive" if pos == 0 else "not defined:\nno negative",
                    ha="center", va="center", fontsize=8, color="gray")
            ax.set_title(name, fontsize=8)
            continue
        if kind == "pr":
            from sklearn.metrics import average_precision_score

            precision, recall, _ = precision_recall_curve(y, s)
            ax.step(recall, precision, where="post", color="tab:blue")
            ax.axhline(pos / len(y), color="gray", ls="--", lw=0.8)
            ax.set_title(f"{name}\nAP {100 * average_precision_score(y, s):.1f}, n+ {pos}", fontsize=8)
        else:
            from sklearn.metrics import roc_auc_score

            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, color="tab:orange")
            ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=0.8)
            ax.set_title(f"{name}\nAUC {100 * roc_auc_score(y, s):.1f}, n+ {pos}", fontsize=8)
        ax.tick_params(labelsize=7)
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.axis("off")
        elif k % nc == 0:
            ax.set_ylabel("precision" if kind == "pr" else "true positive rate", fontsize=8)
        if len(names) - nc <= k < len(names):
            ax.set_xlabel("recall" if kind == "pr" else "false positive rate", fontsize=8)
    fig.tight_layout()
    return fig


def fig_reliability(scores, targets):
    plt = _plt()
    r = reliability_bins(scores, targets)
    centers = 0.5 * (r["edges"][1:] + r["edges"][:-1])
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5.6, 6.2), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="perfect calibration")
    ok = r["count"] > 0
    ax.plot(r["mean_score"][ok], r["positive_rate"][ok], marker="o", color="tab:blue", label="this model")
    ax.set_ylabel("observed fraction of positives")
    ax.set_title(f"reliability of the scores (ECE {100 * r['ece']:.1f} %)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    ax2.bar(centers, r["count"], width=r["edges"][1] - r["edges"][0], color="tab:gray", edgecolor="white")
    ax2.set_yscale("log")
    from matplotlib.ticker import NullFormatter

    ax2.yaxis.set_minor_formatter(NullFormatter())
    ax2.set_xlabel("score (all classes, test split, 10 bins)")
    ax2.set_ylabel("pairs")
    fig.tight_layout()
    return fig, r["ece"]


def fig_codebook(counts: np.ndarray):
    plt = _plt()
    k = len(counts)
    used = int((counts > 0).sum())
    p = counts / max(counts.sum(), 1)
    nz = p[p > 0]
    perplexity = float(np.exp(-(nz * np.log(nz)).sum())) if nz.size else 0.0
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    a1.bar(np.arange(k), counts, width=1.0, color="tab:blue")
    a1.set_xlabel("codebook atom index")
    a1.set_ylabel("feature positions assigned")
    a1.set_title(f"atom use on the test split: {used}/{k} atoms used")
    ranked = np.sort(counts)[::-1]
    a2.bar(np.arange(1, k + 1), ranked, width=1.0, color="tab:green")
    a2.set_xlabel("atoms ranked by use")
    a2.set_ylabel("feature positions assigned")
    a2.set_title(f"rank-frequency (perplexity {perplexity:.1f} of {k})")
    for ax in (a1, a2):
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig, used, perplexity


def fig_label_graph(report: dict, names: list, prevalence: Sequence[float], groups: Sequence[str] | None):
    plt = _plt()
    from matplotlib.patches import FancyArrowPatch

    n = len(names)
    pos = circular_layout(n)
    index = {c: i for i, c in enumerate(names)}
    edges = [(index[a], index[b], w) for a, b, w in report.get("edge_list", []) if a in index and b in index]
    pairs = {(a, b) for a, b, _ in edges}
    weights = [w for _, _, w in edges if w is not None]
    wmax = max(weights) if weights else 1.0
    fig, ax = plt.subplots(figsize=(7.5, 7.5))
    drawn = set()
    for a, b, w in edges:
        mutual = (b, a) in pairs
        if mutual and (b, a) in drawn:
            continue
        drawn.add((a, b))
        lw = 0.8 + 4.0 * (w / wmax if w is not None and wmax > 0 else 0.35)
        arrow = FancyArrowPatch(pos[a], pos[b], arrowstyle="-" if mutual else "-|>", mutation_scale=12,
                                lw=lw, color="tab:blue", alpha=0.55, shrinkA=11, shrinkB=11,
                                connectionstyle="arc3,rad=0.08")
        ax.add_patch(arrow)
        if w is not None and len(edges) <= 80:
            mid = 0.5 * (pos[a] + pos[b])
            ax.text(mid[0], mid[1], f"{w:.2g}", fontsize=7, ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
    colors = {"head": "tab:red", "medium": "tab:orange", "tail": "tab:purple"}
    prev = np.array([p if p is not None else 0.0 for p in prevalence], dtype=np.float64)
    size = 40 + 900 * np.sqrt(prev / max(prev.max(), 1e-12))
    node_colors = [colors.get(g, "tab:gray") for g in (groups or ["?"] * n)]
    ax.scatter(pos[:, 0], pos[:, 1], s=size, c=node_colors, zorder=3, edgecolors="black", linewidths=0.6)
    for i, name in enumerate(names):
        x, y = pos[i]
        ha = "center" if abs(x) < 0.2 else ("left" if x > 0 else "right")
        ax.text(1.14 * x + (0.05 if ha == "left" else -0.05 if ha == "right" else 0), 1.14 * y, name, fontsize=8,
                ha=ha, va="center")
    for g, col in colors.items():
        if groups and g in groups:
            ax.scatter([], [], c=col, s=60, label=f"{g} class", edgecolors="black", linewidths=0.6)
    if groups:
        ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1.08, -0.06))
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.4, 1.4)
    ax.set_aspect("equal")
    ax.axis("off")
    weighted = "edge width and label = weight" if weights else "unweighted"
    ax.set_title(f"label graph ({report.get('method', '?')}, {report.get('edges', len(edges))} directed edges, "
                 f"density {report.get('density', float('nan')):.3f}; {weighted})", fontsize=10)
    fig.tight_layout()
    return fig


def fig_cooccurrence(true_p: np.ndarray, pred_p: np.ndarray, names: list, threshold_label: str):
    plt = _plt()
    c = len(names)
    side = max(5.0, 0.42 * c + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side, side * 0.92))
    for ax, m, title in ((axes[0], true_p, "from the test labels"),
                         (axes[1], pred_p, f"from the predictions ({threshold_label})")):
        shown = m.copy()
        np.fill_diagonal(shown, np.nan)
        ax.set_facecolor("#e6e6e6")  # undefined cells (i never positive) and the diagonal
        im = ax.imshow(shown, vmin=0, vmax=1, cmap="viridis")
        if not np.isfinite(shown).any():
            ax.text((c - 1) / 2, (c - 1) / 2, "no positive calls", ha="center", va="center", fontsize=11)
        ax.set_xticks(range(c))
        ax.set_yticks(range(c))
        ax.set_xticklabels(names, rotation=90, fontsize=7)
        ax.set_yticklabels(names, fontsize=7)
        ax.set_xlabel("finding j")
        ax.set_ylabel("given finding i")
        ax.set_title(f"P(j | i) {title}", fontsize=10)
        if c <= 15:
            for i in range(c):
                for j in range(c):
                    if i != j and np.isfinite(m[i, j]):
                        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                                color="white" if m[i, j] < 0.5 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="P(j | i)")
    fig.tight_layout()
    return fig


# -- assembly --------------------------------------------------------------------------------------
def _save(fig, path: str) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    data = buf.getvalue()
    with open(path, "wb") as fh:
        fh.write(data)
    return data


def _fmt_pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _test_scores(run_dir: str, model, ckpt: dict, args) -> tuple[np.ndarray, np.ndarray, str]:
    from fact_fast.engine import TEST_SCORES_FILE, load_scores, save_scores
    from fact_fast.inference import score_checkpoint_split

    path = os.path.join(run_dir, TEST_SCORES_FILE)
    if os.path.isfile(path):
        scores, targets, names = load_scores(path)
        if names != list(ckpt["class_names"]):
            raise ValueError(f"{path}: its classes differ from {ckpt['_path']}'s; delete it to recompute")
        return scores, targets, f"read from {TEST_SCORES_FILE}"
    scores, targets = score_checkpoint_split(model, ckpt, "test", batch_size=args.batch_size,
                                             data_root=args.data_root, progress=args.progress)
    try:
        save_scores(path, scores, targets, ckpt["class_names"])
    except OSError:
        pass  # a read-only run directory: the scores are simply recomputed next time
    return scores, targets, f"recomputed from {os.path.basename(ckpt['_path'])} (no {TEST_SCORES_FILE})"


def build_report(run_dir: str, out_dir: str | None = None, *, thresholds: str = "fixed", device: str = "auto",
                 batch_size: int | None = None, data_root: str | None = None, progress: bool = False) -> str:
    """Write the report of ``run_dir`` (see the module docstring); returns the HTML path."""
    from fact_fast.inference import code_counts, load_trained_model, positive_calls, thresholds_of
    from fact_fast.metrics import compute_metrics
    from fact_fast.utils.checkpoint import BEST

    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    ckpt_path = os.path.join(run_dir, BEST)
    model, ckpt = load_trained_model(ckpt_path, device)
    args = argparse.Namespace(batch_size=batch_size, data_root=data_root, progress=progress)
    out_dir = out_dir or os.path.join(run_dir, "report")
    os.makedirs(out_dir, exist_ok=True)
    names = list(ckpt["class_names"])
    C = len(names)
    rows = read_log(os.path.join(run_dir, "metrics.jsonl"))
    scores, targets, source = _test_scores(run_dir, model, ckpt, args)
    thr = thresholds_of(ckpt, thresholds, C)
    groups = ckpt.get("groups")
    metrics = compute_metrics(scores, targets, threshold=thr, class_names=names, groups=groups)
    prevalence = list(ckpt.get("train_prevalence") or [None] * C)
    sections = []

    def add(fig, file: str, title: str, caption: str):
        data = _save(fig, os.path.join(out_dir, file))
        sections.append((title, file, base64.b64encode(data).decode("ascii"), caption))

    if rows:
        add(fig_training_curves(rows), "training_curves.png", "Training curves",
            "Per epoch of every stage (dotted lines mark a new stage): the training losses (means over the "
            "epoch's batches), the validation metrics used to pick best.pt, the learning rate, and each "
            "statistic the model logs, drawn as found in metrics.jsonl. For FACT: τ, the width of its fuzzy "
            "membership; how many codebook atoms were used and their perplexity; how alike the classes are "
            "(mean pairwise cosine of the anchors, cosine between two classes' embeddings E_c in one image, "
            "correlation between two classes' validation scores: near 1, every class sees the same thing); the "
            "interface gates' spread and ‖Q‖/‖attended‖ (near 0: a shared mean pool); and the 10th/50th/90th "
            "percentiles of the point loss's logit over the validation positives and negatives.")
    add(fig_ap_auc_vs_prevalence(names, prevalence, metrics["per_class_ap"], metrics["per_class_auc"],
                                 metrics["per_class_prevalence"]),
        "ap_auc_vs_prevalence.png", "Per-class AP and AUC against prevalence",
        "Each dot is one class: its test-split average precision (left) and ROC AUC (right) against how often "
        "it is positive in the training split. Rare classes are usually harder. What a random ranking achieves: "
        "the grey dashes on the left (AP = the class's test prevalence), the dashed line on the right (AUC = "
        "50 %). Classes without a test positive (or, for AUC, without a test negative) are left out.")
    add(_class_curves(scores, targets, names, "pr"), "pr_curves.png", "Precision-recall curves",
        "One panel per class on the test split: precision against recall as the decision threshold sweeps "
        "from high to low; the dashed line is the class's prevalence (a random ranking). n+ = test positives.")
    add(_class_curves(scores, targets, names, "roc"), "roc_curves.png", "ROC curves",
        "One panel per class on the test split: true positive rate (sensitivity) against false positive rate "
        "(1 − specificity) as the threshold sweeps; the diagonal is a random ranking.")
    fig, ece = fig_reliability(scores, targets)
    add(fig, "reliability.png", "Reliability of the scores",
        f"All (image, class) pairs of the test split with a known label, grouped into 10 score bins: the "
        f"fraction that is truly positive against the mean score of the bin (top) and how many pairs fall in "
        f"each bin (bottom, log scale). A calibrated model lies on the diagonal; expected calibration error "
        f"{100 * ece:.1f} %. FACT's scores are fuzzy memberships, not probabilities: read this as how far they "
        f"are from calibrated, not as a defect.")
    counts = code_counts(model, ckpt, batch_size=batch_size, data_root=data_root, progress=progress)
    if counts is not None:
        fig, used, perplexity = fig_codebook(counts)
        add(fig, "codebook_usage.png", "Codebook usage",
            f"How many feature positions of the test images were assigned to each atom of the codebook (the "
            f"atomic visual space), by index (left) and sorted (right): {used} of {len(counts)} atoms used, "
            f"perplexity {perplexity:.1f} (the number of equally used atoms with the same entropy).")
    graph = ckpt.get("label_graph")
    if graph and graph.get("edge_list") is not None:
        add(fig_label_graph(graph, names, prevalence, groups), "label_graph.png", "Label graph",
            f"The comorbidity graph the model was given, built from the training labels "
            f"(method {graph.get('method')}, parameters {graph.get('params')}). Nodes are classes (area ∝ "
            f"train prevalence, colour = frequency group); lines join co-occurring classes (arrows for "
            f"one-way edges), thicker and labelled with the weight when the graph is weighted. "
            f"{len(graph.get('isolated', []))} classes have no edge.")
    label = {"fixed": f"fixed threshold {float(ckpt['default_threshold']):g}",
             "val-f1": "validation F1-optimal thresholds",
             "val-youden": "validation Youden thresholds"}[thresholds]
    pred = positive_calls(scores, thr).astype(np.float64)
    add(fig_cooccurrence(cooccurrence(targets), cooccurrence(pred), names, label), "cooccurrence.png",
        "Co-occurrence: true against predicted",
        f"Cell (i, j) is the probability that finding j is present given finding i is present, on the test "
        f"split: from the labels (left) and from the model's positive calls with the {label} (right). "
        f"Similar matrices mean the model reproduces how findings occur together; grey cells are the diagonal "
        f"(always 1) and rows of findings never present (left) or never called (right).")
    table = _threshold_table(ckpt, scores, targets, names, groups)
    with open(os.path.join(out_dir, "thresholds.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(table[0])
        w.writerows(table[1:])
    html_path = os.path.join(out_dir, "report.html")
    with open(html_path, "w") as fh:
        fh.write(_html(run_dir, ckpt, metrics, source, label, sections, table))
    return html_path


def _threshold_table(ckpt, scores, targets, names, groups) -> list:
    """Rows: class, group, train prevalence, and per threshold mode its value and the test F1."""
    from fact_fast.inference import available_thresholds
    from fact_fast.metrics import compute_metrics

    modes = list(available_thresholds(ckpt, len(names)).items())
    f1 = {mode: compute_metrics(scores, targets, threshold=t, class_names=names)["per_class_f1"] for mode, t in modes}
    head = ["class", "group", "train prevalence %"]
    for mode, _ in modes:
        head += [f"{mode} threshold", f"{mode} test F1 %"]
    rows = [head]
    prev = ckpt.get("train_prevalence") or [None] * len(names)
    for c, name in enumerate(names):
        row = [name, (groups or [""] * len(names))[c], _fmt_pct(prev[c])]
        for mode, t in modes:
            row += [f"{t[c]:.4f}", _fmt_pct(f1[mode][name])]
        rows.append(row)
    return rows


def _html(run_dir, ckpt, metrics, source, label, sections, table) -> str:
    e = html.escape
    cfg = ckpt.get("config", {})
    summary = [("run", os.path.abspath(run_dir)), ("model", ckpt["model_spec"].get("name")),
               ("dataset", cfg.get("dataset")), ("best checkpoint", f"stage {ckpt.get('stage')}, epoch "
                                                                    f"{ckpt.get('epoch')}"),
               ("test images", metrics["num_samples"]), ("classes", metrics["num_classes"]),
               ("test mAP", _fmt_pct(metrics["mAP"])), ("test macro AUC", _fmt_pct(metrics["macro_auc"])),
               (f"test F1 micro / macro ({label})", f"{_fmt_pct(metrics['f1_micro'])} / "
                                                     f"{_fmt_pct(metrics['f1_macro'])}"),
               ("test scores", source)]
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             f"<title>fact_fast report: {e(os.path.basename(os.path.abspath(run_dir)))}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "img{max-width:100%;border:1px solid #ddd}p.caption{color:#444;max-width:900px}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}</style></head><body>",
             f"<h1>Run report: {e(os.path.basename(os.path.abspath(run_dir)))}</h1><table>"]
    parts += [f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in summary]
    parts.append("</table>")
    for title, file, b64, caption in sections:
        parts.append(f"<h2>{e(title)}</h2><img alt='{e(title)}' src='data:image/png;base64,{b64}'>"
                     f"<p class='caption'>{e(caption)} <i>({e(file)})</i></p>")
    parts.append("<h2>Decision thresholds per class</h2><table>")
    parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in table[0]) + "</tr>")
    parts += ["<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>" for r in table[1:]]
    parts.append("</table><p class='caption'>A class is called positive when its score is above the threshold. "
                 "<b>fixed</b>: the model's default; <b>val-f1</b> / <b>val-youden</b>: chosen per class on the "
                 "validation split at training time to maximise F1 / Youden's J (sensitivity + specificity − 1). "
                 "Next to each, the F1 it gives on the test split (– where the class has no test positive). "
                 "Use them with <code>predict --thresholds</code>. <i>(thresholds.csv)</i></p></body></html>")
    return "\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fact_fast.report",
                                description="One self-contained HTML report (plus PNGs) of a training run.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory (with best.pt)")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (default: RUN_DIR/report)")
    p.add_argument("--thresholds", default="fixed", choices=("fixed", "val-f1", "val-youden"),
                   help="thresholds for the predicted co-occurrence and the summary F1 (default: fixed)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default: auto)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size for the test pass (default: the run's)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="dataset root, if it moved since training")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bar (only on a TTY)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from fact_fast.utils.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    if args.batch_size is not None and args.batch_size <= 0:
        build_parser().error("--batch-size must be positive")
    try:
        path = build_report(args.run_dir, args.out, thresholds=args.thresholds, device=args.device,
                            batch_size=args.batch_size, data_root=args.data_root,
                            progress=args.progress and sys.stderr.isatty())
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} (and its PNGs in {os.path.dirname(path)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
