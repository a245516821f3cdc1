"""Multi-label evaluation metrics (scikit-learn where it has them).

:func:`compute_metrics` returns a JSON-serialisable dict of plain Python floats/ints; an
undefined value (e.g. the AP of a class without positives) is ``None``, never NaN.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, cohen_kappa_score, f1_score, roc_auc_score

__all__ = ["compute_metrics", "format_metrics_table", "GROUPS"]

GROUPS = ("head", "medium", "tail")


def _f(x):
    """float or None (for NaN/inf/None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _mean(values):
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _to_numpy(x, argname):
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{argname} must be a numeric [N, C] array") from None


def compute_metrics(scores, targets, *, threshold: float = 0.5, class_names=None,
                    groups=None) -> dict:
    """Multi-label metrics of ``scores`` [N, C] (higher = more likely) against 0/1 ``targets``.

    Keys:
      * ``mAP``: mean over classes with >= 1 positive of sklearn's average precision.
      * ``per_class_ap`` / ``per_class_auc``: dict class name -> value or None (undefined).
      * ``macro_auc``: mean ROC-AUC over classes with both positives and negatives.
      * ``f1_micro`` / ``f1_macro``: F1 of predictions ``scores > threshold``; the macro mean
        runs over all classes (sklearn, ``zero_division=0``).
      * ``prevalence_baseline_map``: mean prevalence over the classes in ``mAP`` -- the
        expected AP of a random ranking.
      * ``group_map``: {"head", "medium", "tail"} -> mean AP of the group (None if the group
        is empty or has no class with positives); only when ``groups`` is given.
      * ``odir_score``: ODIR-5K final score = mean(kappa, micro-F1, AUC) computed on the
        flattened [N * C] labels: kappa and F1 on predictions at ``threshold`` (0.5 in the
        challenge), AUC on the flattened scores. ``odir_kappa``, ``odir_f1``, ``odir_auc``
        hold the parts.
      * ``num_samples``, ``num_classes``, ``threshold``.
    """
    s = _to_numpy(scores, "scores")
    t = _to_numpy(targets, "targets")
    if s.ndim != 2:
        raise ValueError(f"scores must be a 2-D [N, C] array, got shape {list(s.shape)}")
    if t.ndim != 2:
        raise ValueError(f"targets must be a 2-D [N, C] array, got shape {list(t.shape)}")
    if s.shape != t.shape:
        raise ValueError(f"targets shape {list(t.shape)} does not match scores shape {list(s.shape)}")
    N, C = s.shape
    if N == 0:
        raise ValueError("scores: need at least one sample (N = 0)")
    if C == 0:
        raise ValueError("scores: need at least one class (C = 0)")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    if not np.all((t == 0) | (t == 1)):
        raise ValueError("targets must contain only 0/1 values")
    if class_names is None:
        class_names = [str(c) for c in range(C)]
    class_names = [str(c) for c in class_names]
    if len(class_names) != C:
        raise ValueError(f"class_names has {len(class_names)} names for {C} classes")
    if len(set(class_names)) != C:
        raise ValueError("class_names must be unique")
    if groups is not None:
        groups = list(groups)
        if len(groups) != C:
            raise ValueError(f"groups has {len(groups)} entries for {C} classes")
        bad = sorted({g for g in groups if g not in GROUPS})
        if bad:
            raise ValueError(f"groups: unknown group names {bad}; valid values: {list(GROUPS)}")

    t_int = t.astype(np.int64)
    pos = t_int.sum(axis=0)
    ap, auc = [], []
    for c in range(C):
        if pos[c] == 0:
            ap.append(None)
            auc.append(None)
            continue
        ap.append(_f(average_precision_score(t_int[:, c], s[:, c])))
        auc.append(_f(roc_auc_score(t_int[:, c], s[:, c])) if pos[c] < N else None)

    pred = (s > threshold).astype(np.int64)
    f1_micro = _f(f1_score(t_int, pred, average="micro", zero_division=0))
    f1_macro = _f(f1_score(t_int, pred, average="macro", zero_division=0))

    prevalence = pos / N
    valid = pos > 0
    baseline = float(prevalence[valid].mean()) if valid.any() else None

    flat_t, flat_p, flat_s = t_int.ravel(), pred.ravel(), s.ravel()
    if flat_t.min() == flat_t.max():
        kappa = None  # undefined (sklearn gives NaN) when every label is the same
        odir_auc = None
    else:
        kappa = _f(cohen_kappa_score(flat_t, flat_p))
        odir_auc = _f(roc_auc_score(flat_t, flat_s))
    odir_f1 = _f(f1_score(flat_t, flat_p, zero_division=0))
    parts = [kappa, odir_f1, odir_auc]
    odir = float(np.mean(parts)) if all(p is not None for p in parts) else None

    out = {
        "num_samples": int(N),
        "num_classes": int(C),
        "threshold": float(threshold),
        "mAP": _mean(ap),
        "macro_auc": _mean(auc),
        "f1_micro": f1_micro,
        "f1_macro": f1_macro,
        "prevalence_baseline_map": baseline,
        "odir_score": odir,
        "odir_kappa": kappa,
        "odir_f1": odir_f1,
        "odir_auc": odir_auc,
        "per_class_ap": dict(zip(class_names, ap)),
        "per_class_auc": dict(zip(class_names, auc)),
        "per_class_prevalence": dict(zip(class_names, (float(p) for p in prevalence))),
    }
    if groups is not None:
        out["group_map"] = {g: _mean([a for a, gg in zip(ap, groups) if gg == g]) for g in GROUPS}
        out["groups"] = dict(zip(class_names, groups))
    return out


def _fmt(v, width=8, pct=True):
    if v is None:
        return "-".rjust(width)
    return f"{100 * v:{width}.2f}" if pct else f"{v:{width}.4f}"


def format_metrics_table(metrics: dict) -> str:
    """A fixed-width text table: summary lines, then per-class AP / AUC (%) with group."""
    lines = []
    summary = [("samples", metrics.get("num_samples"), False),
               ("mAP", metrics.get("mAP"), True),
               ("prevalence baseline mAP", metrics.get("prevalence_baseline_map"), True),
               ("macro AUC", metrics.get("macro_auc"), True),
               (f"F1 micro @ {metrics.get('threshold', 0.5):g}", metrics.get("f1_micro"), True),
               (f"F1 macro @ {metrics.get('threshold', 0.5):g}", metrics.get("f1_macro"), True),
               ("ODIR score", metrics.get("odir_score"), True)]
    gm = metrics.get("group_map")
    if gm:
        summary += [(f"mAP {g}", gm.get(g), True) for g in GROUPS]
    lines.append("metric".ljust(28) + "value".rjust(10))
    lines.append("-" * 38)
    for name, v, pct in summary:
        if name == "samples":
            lines.append(name.ljust(28) + (str(v) if v is not None else "-").rjust(10))
        else:
            lines.append(name.ljust(28) + _fmt(v, 10, pct))
    ap = metrics.get("per_class_ap") or {}
    if ap:
        auc = metrics.get("per_class_auc") or {}
        prev = metrics.get("per_class_prevalence") or {}
        grp = metrics.get("groups") or {}
        w = max(12, max(len(n) for n in ap) + 1)
        lines.append("")
        lines.append("class".ljust(w) + "group".rjust(8) + "prev%".rjust(8) + "AP%".rjust(8) + "AUC%".rjust(8))
        lines.append("-" * (w + 32))
        for name in ap:
            lines.append(name.ljust(w) + str(grp.get(name, "")).rjust(8) + _fmt(prev.get(name), 8)
                         + _fmt(ap[name], 8) + _fmt(auc.get(name), 8))
    return "\n".join(lines)


def choose_thresholds(scores, targets, method: str = "f1", default: float = 0.5) -> np.ndarray:
    """Per-class decision thresholds chosen on validation data (float64 [C]): ``"f1"`` maximises
    the class's F1, ``"youden"`` its sensitivity + specificity − 1; classes without positives (or
    negatives) keep ``default``. Unknown (NaN) targets are ignored."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    if method not in ("f1", "youden"):
        raise ValueError(f"method must be 'f1' or 'youden', got {method!r}")
    s = _to_numpy(scores, "scores")
    t = _to_numpy(targets, "targets")
    out = np.full(s.shape[1], float(default))
    for c in range(s.shape[1]):
        known = ~np.isnan(t[:, c])
        y, x = t[known, c].astype(np.int64), s[known, c]
        if y.size == 0 or y.min() == y.max():
            continue
        if method == "f1":
            p, r, th = precision_recall_curve(y, x)
            f1 = np.where(p[:-1] + r[:-1] > 0, 2 * p[:-1] * r[:-1] / np.maximum(p[:-1] + r[:-1], 1e-12), 0.0)
            out[c] = th[int(np.argmax(f1))]
        else:
            fpr, tpr, th = roc_curve(y, x)
            k = int(np.argmax(tpr - fpr))
            out[c] = min(th[k], 1.0)
    return out


def mean_std_over_seeds(runs: list) -> dict:
    """Mean and std (ddof 0) of every scalar metric shared by ``runs``: ``{key: {"mean", "std", "n"}}``."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {}
    for k in keys:
        vals = [r.get(k) for r in runs]
        vals = [float(v) for v in vals if isinstance(v, (int, float)) and v is not None]
        if vals:
            out[k] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}
    return out
