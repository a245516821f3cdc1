"""The figures of a run report (matplotlib, drawn off-screen); each ``fig_*`` returns its Figure.

Per-class inputs are aligned with ``names`` (class order); scores and targets are float
``[N, C]`` with NaN targets where a label is unknown.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

from .statistics import circular_layout, codebook_usage, reliability_bins

__all__ = ["fig_training_curves", "fig_ap_auc_vs_prevalence", "fig_class_curves", "fig_reliability", "fig_codebook",
           "fig_label_graph", "fig_cooccurrence", "png_bytes"]


def pyplot():
    """matplotlib.pyplot on the off-screen Agg backend (matplotlib is imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    plt = pyplot()
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
    """Per-class test AP (left) and AUC (right), ``{class: fraction | None}``, against the train
    ``prevalence`` (one per class, log axis); chance levels from ``test_prev`` ``{class: fraction}``."""
    plt = pyplot()
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


def fig_class_curves(scores, targets, names, kind: str):
    """One panel per class: its precision-recall (``kind="pr"``) or ROC (``"roc"``) curve."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = pyplot()
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
    """(figure, ECE): the reliability diagram of every known (score, label) pair over 10 bins."""
    plt = pyplot()
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
    """(figure, atoms used, perplexity) of per-atom counts int ``[K]``: by index and ranked."""
    plt = pyplot()
    k = len(counts)
    used, perplexity = codebook_usage(counts)
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
    """The label graph of ``report`` (a ``graph_report``: ``edge_list`` of (class, class, weight |
    None), ``method``, ``edges``, ``density``) on a circle: node area ∝ train prevalence, colour
    = frequency group."""
    plt = pyplot()
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
    """P(j | i) float ``[C, C]`` from the labels (``true_p``) beside the one from the positive
    calls (``pred_p``), diagonal greyed out."""
    plt = pyplot()
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


def png_bytes(fig) -> bytes:
    """``fig`` as a PNG at 110 dpi; the figure is closed."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
