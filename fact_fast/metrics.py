"""Multi-label evaluation metrics as the literature computes them (scikit-learn where it has them).

Inputs are ``scores`` ``[N, C]`` (higher = more likely; numpy or torch) and float ``targets``
``[N, C]`` with 1 = positive, 0 = negative and **NaN = unknown**. Every metric skips unknown
entries: a per-class metric uses the rows where that class is known, a flattened metric the
known entries of the N × C matrix. A prediction is positive when ``score > threshold``
(strictly, as in the official ODIR-5K evaluation), compared in float64 (float32 scores convert
exactly, so thresholds from :func:`choose_thresholds` split them as intended; compare in float64
too when applying those thresholds elsewhere).

Classes are excluded the same way everywhere: a class without a known positive has no AP (and
no per-class F1), a class without a known positive or without a known negative has no AUC; the
means (``mAP``, ``f1_macro``, ``macro_auc``, the group means) run over the remaining classes,
and ``excluded_classes`` lists what was left out.

:func:`compute_metrics` returns a JSON-serialisable dict of plain floats/ints/strings where an
undefined value is ``None``, never NaN.
"""
from __future__ import annotations

import difflib
import json
import math
import os
import warnings

import numpy as np
from sklearn.metrics import average_precision_score, cohen_kappa_score, f1_score, roc_auc_score

__all__ = ["compute_metrics", "format_metrics_table", "choose_thresholds", "class_prevalence",
           "frequency_groups", "load_groups", "class_score_correlation", "mean_std", "mean_std_over_seeds",
           "format_seed_summary", "GROUPS", "CXR_LT_HEAD", "CXR_LT_TAIL", "THRESHOLD_METHODS"]

GROUPS = ("head", "medium", "tail")
# CXR-LT / FACT paper (Tab. 14) grouping by TRAIN prevalence: head > 10 %, tail < 1 %.
CXR_LT_HEAD = 0.10
CXR_LT_TAIL = 0.01
THRESHOLD_METHODS = ("f1", "youden")


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
            x = x.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover
        pass
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{argname} must be a numeric [N, C] array") from None


def _check_labels(t: np.ndarray, argname: str) -> None:
    bad = ~(np.isnan(t) | (t == 0) | (t == 1))
    if bad.any():
        r, c = np.argwhere(bad)[0][:2] if t.ndim == 2 else (np.argwhere(bad)[0][0], 0)
        raise ValueError(f"{argname} must contain only 0, 1 or NaN (unknown); found {float(t[bad][0])!r} "
                         f"(row {r}, column {c})")


def _scores_and_targets(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    s = _to_numpy(scores, "scores")
    t = _to_numpy(targets, "targets")
    if s.ndim != 2:
        raise ValueError(f"scores must be a 2-D [N, C] array, got shape {list(s.shape)}")
    if t.ndim != 2:
        raise ValueError(f"targets must be a 2-D [N, C] array, got shape {list(t.shape)}")
    if s.shape != t.shape:
        raise ValueError(f"targets shape {list(t.shape)} does not match scores shape {list(s.shape)}")
    if s.shape[0] == 0:
        raise ValueError("scores: need at least one sample (N = 0)")
    if s.shape[1] == 0:
        raise ValueError("scores: need at least one class (C = 0)")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    _check_labels(t, "targets")
    return s, t


def _class_names(class_names, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    names = [str(c) for c in class_names]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names for {num_classes} classes")
    if len(set(names)) != num_classes:
        raise ValueError("class_names must be unique")
    return names


def _thresholds(threshold, num_classes: int) -> np.ndarray:
    """float64 [C] from a scalar or a per-class sequence."""
    thr = np.asarray(threshold, dtype=np.float64)
    if thr.ndim == 0:
        thr = np.full(num_classes, float(thr))
    if thr.shape != (num_classes,):
        raise ValueError(f"threshold must be a number or one value per class ({num_classes}), "
                         f"got shape {list(thr.shape)}")
    if not np.all(np.isfinite(thr)):
        raise ValueError("threshold contains NaN or inf")
    return thr


# -- class prevalence and frequency groups --------------------------------------------------------
def class_prevalence(labels) -> np.ndarray:
    """Per-class prevalence of ``labels`` float ``[N, C]`` (1 / 0 / NaN): positives / known rows,
    float64 ``[C]``; NaN for a class with no known row."""
    y = _to_numpy(labels, "labels")
    if y.ndim != 2:
        raise ValueError(f"labels must be a 2-D [N, C] array, got shape {list(y.shape)}")
    _check_labels(y, "labels")
    known = (~np.isnan(y)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(known > 0, np.nansum(y, axis=0) / np.maximum(known, 1), np.nan)


def frequency_groups(labels_or_prevalence, head: float = CXR_LT_HEAD, tail: float = CXR_LT_TAIL, *,
                     method: str = "threshold") -> list[str]:
    """Assign each class to "head", "medium" or "tail" from its TRAIN prevalence.

    ``labels_or_prevalence``: the train labels float ``[N, C]`` (1 / 0 / NaN; prevalence over the
    known rows) or their ``[C]`` prevalences.

    * ``"threshold"`` (default): CXR-LT, as in the FACT paper: prevalence > ``head`` -> head,
      < ``tail`` -> tail, otherwise medium. A group may come out empty; it is then reported as
      empty (its means are None), never replaced by another rule.
    * ``"tercile"``: only when asked: classes sorted by prevalence (ties by class index) and cut
      into three near-equal groups, the most frequent third head, the least frequent tail.
    """
    if method not in ("threshold", "tercile"):
        raise ValueError(f"method must be one of ['threshold', 'tercile'], got {method!r}")
    if not 0.0 <= tail <= head <= 1.0:
        raise ValueError(f"need 0 <= tail <= head <= 1, got head={head}, tail={tail}")
    arr = _to_numpy(labels_or_prevalence, "labels_or_prevalence")
    if arr.ndim == 2:
        if arr.shape[0] == 0:
            raise ValueError("labels_or_prevalence: the label matrix has no rows")
        prev = class_prevalence(arr)
    elif arr.ndim == 1:
        prev = arr
    else:
        raise ValueError(f"labels_or_prevalence must be [N, C] labels or [C] prevalences, "
                         f"got shape {list(arr.shape)}")
    if np.isnan(prev).any():
        raise ValueError(f"classes {np.flatnonzero(np.isnan(prev)).tolist()} have no known label "
                         "(undefined prevalence); give their group explicitly with load_groups")
    if method == "threshold":
        return ["head" if p > head else ("tail" if p < tail else "medium") for p in prev]
    out = [""] * len(prev)
    for rank, c in enumerate(np.argsort(-prev, kind="stable")):
        out[c] = GROUPS[(rank * 3) // len(prev)]  # first ceil(C/3) head, last floor(C/3) tail
    return out


def load_groups(path: str, class_names) -> list[str]:
    """Read a user's head/medium/tail assignment (``--groups file.json``) in ``class_names`` order.

    The JSON file is either ``{"head": [names], "medium": [names], "tail": [names]}`` (a group
    may be missing or empty) or ``{"class name": "head" | "medium" | "tail", ...}``. Every class
    must be assigned exactly once. Raises ``FileNotFoundError`` or ``ValueError`` naming the file.
    """
    names = _class_names(class_names, len(list(class_names)))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"groups file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as fh:
            spec = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"groups file {path!r} is not valid JSON: {e}") from None
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"groups file {path!r} must hold a non-empty JSON object")
    if all(isinstance(v, list) for v in spec.values()):
        bad = sorted(set(spec) - set(GROUPS))
        if bad:
            raise ValueError(f"groups file {path!r}: unknown groups {bad}; valid groups: {list(GROUPS)}")
        pairs = [(str(n), g) for g, members in spec.items() for n in members]
    elif all(isinstance(v, str) for v in spec.values()):
        pairs = list(spec.items())
        bad = sorted({g for _, g in pairs if g not in GROUPS})
        if bad:
            raise ValueError(f"groups file {path!r}: unknown groups {bad}; valid groups: {list(GROUPS)}")
    else:
        raise ValueError(f"groups file {path!r} must map each group to a list of class names, or each "
                         f"class name to one of {list(GROUPS)}")
    assigned: dict[str, str] = {}
    for n, g in pairs:
        if n in assigned:
            raise ValueError(f"groups file {path!r}: class {n!r} is assigned twice ({assigned[n]!r} and {g!r})")
        assigned[n] = g
    unknown = [n for n in assigned if n not in names]
    if unknown:
        hints = {n: difflib.get_close_matches(n, names, n=1) for n in unknown}
        hint = "; ".join(f"{n!r} (did you mean {h[0]!r}?)" if h else repr(n) for n, h in hints.items())
        raise ValueError(f"groups file {path!r} names classes the dataset does not have: {hint}")
    missing = [n for n in names if n not in assigned]
    if missing:
        raise ValueError(f"groups file {path!r} leaves classes without a group: {missing}")
    return [assigned[n] for n in names]


# -- per-class decision thresholds ------------------------------------------------------------------
def choose_thresholds(scores, targets, method: str = "f1", default: float = 0.5) -> np.ndarray:
    """Per-class decision thresholds chosen on validation data, float64 ``[C]``.

    For each class (on its known rows) every cut between two consecutive distinct scores is
    tried — the threshold is their midpoint, so ``score > threshold`` predicts exactly the rows
    above the cut; below the lowest score it is the largest float under it — and the one with
    the best criterion is kept:

    * ``"f1"``: the class's F1 = 2 TP / (2 TP + FP + FN);
    * ``"youden"``: Youden's J = sensitivity + specificity − 1.

    Ties (within 1e-12) go to the highest threshold (fewest predicted positives), so the choice
    is deterministic. A class without a known positive (for ``"youden"`` also one without a known
    negative) gets ``default``.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"method must be one of {list(THRESHOLD_METHODS)}, got {method!r}")
    if not math.isfinite(float(default)):
        raise ValueError(f"default must be a finite number, got {default!r}")
    s, t = _scores_and_targets(scores, targets)
    out = np.full(s.shape[1], float(default))
    for c in range(s.shape[1]):
        known = ~np.isnan(t[:, c])
        y, sc = t[known, c], s[known, c]
        pos = y.sum()
        neg = len(y) - pos
        if pos == 0 or (method == "youden" and neg == 0):
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


# -- metrics -------------------------------------------------------------------------------------
def _flat_known(t: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    known = ~np.isnan(t)
    return [t[known]] + [a[known] for a in arrays]


def _quiet(fn, *args, **kwargs):
    """sklearn call with its undefined-metric warnings silenced (undefined becomes None by _f)."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def compute_metrics(scores, targets, *, threshold=0.5, class_names=None, groups=None) -> dict:
    """Multi-label metrics of ``scores`` [N, C] against ``targets`` [N, C] (1 / 0 / NaN).

    ``threshold``: a number or one value per class (e.g. from :func:`choose_thresholds`) for the
    thresholded metrics (``score > threshold``). ``groups``: one of :data:`GROUPS` per class (from
    :func:`frequency_groups` on the TRAIN labels, or :func:`load_groups`).

    Keys (values in [0, 1]; None when undefined):
      * ``mAP``: mean over classes with a known positive of sklearn's average precision (the
        step-wise area under the precision-recall curve); ``per_class_ap``.
      * ``macro_auc``: mean ROC-AUC over classes with known positives and negatives; ``per_class_auc``.
      * ``accuracy``: fraction of the known N × C entries predicted right. This is the FACT
        paper's "F1": the micro F1 of the flattened label vector over both outcomes, which
        equals accuracy; ``paper_f1`` holds the same value under the paper's name.
      * ``f1_micro``: F1 of the positive class over all known entries (2 TP / (2 TP + FP + FN);
        0 when there is no positive and no predicted positive); ``f1_macro``: mean of the
        per-class F1 (``per_class_f1``) over classes with a known positive.
      * ``paper_avg``: the paper's "Avg." = mean(mAP, paper_f1, macro_auc).
      * ``odir_score``: the official ODIR-5K final score = (kappa + F1 + AUC) / 3 on the
        flattened known entries: Cohen's kappa and sklearn's ``f1_score(average="micro")`` of
        the predictions, ROC-AUC of the scores; parts in ``odir_kappa``, ``odir_f1``, ``odir_auc``.
      * ``prevalence_baseline_map``: mean prevalence of the classes in ``mAP`` (the mAP of a
        random ranking); ``per_class_prevalence`` (positives / known rows of this split).
      * ``excluded_classes``: ``{"ap": [...], "auc": [...]}`` — classes without a known positive
        (left out of mAP, f1_macro, group_ap) and classes without a known positive or negative
        (left out of macro_auc, group_auc).
      * with ``groups``: ``groups`` (class -> group), ``group_sizes``, ``group_ap`` and
        ``group_auc`` (group -> mean; None for an empty group or one without an evaluable class).
      * ``class_score_correlation``: mean Pearson correlation between two different classes'
        score columns over the samples (None with fewer than two classes that vary). Near 1, every
        class ranks the images the same way: a head that cannot tell the classes apart.
      * ``num_samples``, ``num_classes``, ``threshold`` (a number, or a list per class).
    """
    s, t = _scores_and_targets(scores, targets)
    num_samples, num_classes = s.shape
    names = _class_names(class_names, num_classes)
    if groups is not None:
        groups = list(groups)
        if len(groups) != num_classes:
            raise ValueError(f"groups has {len(groups)} entries for {num_classes} classes")
        bad = sorted({str(g) for g in groups if g not in GROUPS})
        if bad:
            raise ValueError(f"groups: unknown group names {bad}; valid values: {list(GROUPS)}")
    thr = _thresholds(threshold, num_classes)
    pred = (s > thr).astype(np.float64)

    ap, auc, f1, prevalence = [], [], [], []
    for c in range(num_classes):
        known = ~np.isnan(t[:, c])
        y, sc, pr = t[known, c], s[known, c], pred[known, c]
        pos = int(y.sum())
        prevalence.append(pos / len(y) if len(y) else None)
        if pos == 0:
            ap.append(None)
            auc.append(None)
            f1.append(None)
            continue
        ap.append(_f(average_precision_score(y, sc)))
        auc.append(_f(roc_auc_score(y, sc)) if pos < len(y) else None)
        f1.append(_f(f1_score(y, pr, zero_division=0)))

    flat_t, flat_p, flat_s = _flat_known(t, pred, s)
    accuracy = _f(np.mean(flat_t == flat_p)) if flat_t.size else None
    f1_micro = _f(f1_score(flat_t, flat_p, zero_division=0)) if flat_t.size else None
    both_outcomes = flat_t.size > 0 and flat_t.min() != flat_t.max()
    odir_kappa = _f(_quiet(cohen_kappa_score, flat_t, flat_p)) if flat_t.size else None
    odir_f1 = _f(f1_score(flat_t, flat_p, average="micro")) if flat_t.size else None
    odir_auc = _f(roc_auc_score(flat_t, flat_s)) if both_outcomes else None
    odir_parts = [odir_kappa, odir_f1, odir_auc]

    m_ap, m_auc = _mean(ap), _mean(auc)
    in_map = [p for p, a in zip(prevalence, ap) if a is not None]
    out = {
        "num_samples": int(num_samples),
        "num_classes": int(num_classes),
        "threshold": float(thr[0]) if np.ndim(threshold) == 0 else [float(x) for x in thr],
        "mAP": m_ap,
        "macro_auc": m_auc,
        "accuracy": accuracy,
        "paper_f1": accuracy,
        "f1_micro": f1_micro,
        "f1_macro": _mean(f1),
        "paper_avg": float(np.mean([m_ap, accuracy, m_auc])) if None not in (m_ap, accuracy, m_auc) else None,
        "prevalence_baseline_map": _mean(in_map),
        "odir_score": float(np.mean(odir_parts)) if None not in odir_parts else None,
        "odir_kappa": odir_kappa,
        "odir_f1": odir_f1,
        "odir_auc": odir_auc,
        "excluded_classes": {"ap": [n for n, a in zip(names, ap) if a is None],
                             "auc": [n for n, a in zip(names, auc) if a is None]},
        "per_class_ap": dict(zip(names, ap)),
        "per_class_auc": dict(zip(names, auc)),
        "per_class_f1": dict(zip(names, f1)),
        "per_class_prevalence": dict(zip(names, prevalence)),
        "class_score_correlation": class_score_correlation(s),
    }
    if groups is not None:
        out["groups"] = dict(zip(names, groups))
        out["group_sizes"] = {g: sum(1 for x in groups if x == g) for g in GROUPS}
        out["group_ap"] = {g: _mean([a for a, x in zip(ap, groups) if x == g]) for g in GROUPS}
        out["group_auc"] = {g: _mean([a for a, x in zip(auc, groups) if x == g]) for g in GROUPS}
    return out


def class_score_correlation(scores) -> float | None:
    """Mean off-diagonal Pearson correlation of the columns of ``scores`` [N, C] (classes whose
    scores are constant are left out); None when fewer than two columns vary."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 2:
        return None
    s = s - s.mean(0)
    norm = np.sqrt((s * s).sum(0))
    varies = norm > 1e-12 * max(float(np.abs(s).max(initial=0.0)), 1e-300) * np.sqrt(s.shape[0])
    z = s[:, varies] / norm[varies]
    k = z.shape[1]
    if k < 2:
        return None
    r = z.T @ z
    return _f((r.sum() - np.trace(r)) / (k * (k - 1)))


# -- summaries over seeds ------------------------------------------------------------------------
def mean_std(values) -> tuple[float | None, float | None]:
    """``(mean, sample std)`` of the numbers in ``values`` (None skipped): std with ddof = 1, None
    for fewer than two values (one seed has no spread to report); mean None for none."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return (_f(x.mean()) if len(x) else None), (_f(x.std(ddof=1)) if len(x) > 1 else None)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def mean_std_over_seeds(runs) -> dict:
    """Mean ± std of metric dicts from runs that differ only in their seed (``--seeds``).

    Every numeric leaf of the dicts (nested dicts followed) becomes ``{"mean", "std", "n"}``
    over the runs where it is defined (None skipped; ``std`` is the sample standard deviation,
    ddof = 1, None for n < 2; ``mean`` None for n = 0). Any other leaf (class lists, group
    names) is kept when all runs agree and becomes the list of per-run values otherwise.
    """
    runs = list(runs)
    if not runs or not all(isinstance(r, dict) for r in runs):
        raise ValueError("mean_std_over_seeds needs a non-empty list of metric dicts")

    def merge(values):
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, dict) for v in present):
            keys = list(dict.fromkeys(k for v in present for k in v))
            return {k: merge([v.get(k) for v in present]) for k in keys}
        if all(_is_number(v) for v in present):
            mean, std = mean_std(present)
            return {"mean": mean, "std": std, "n": len(present)}
        return values[0] if all(v == values[0] for v in values) else list(values)

    return merge(runs)


# -- text tables ---------------------------------------------------------------------------------
_SUMMARY = [("mAP", "mAP"), ("prevalence_baseline_map", "prevalence baseline mAP"), ("macro_auc", "macro AUC"),
            ("accuracy", "accuracy (paper F1) {at}"), ("paper_avg", "paper Avg."), ("f1_micro", "F1 micro {at}"),
            ("f1_macro", "F1 macro {at}"), ("odir_score", "ODIR score")]


def _summary_items(d: dict, at: str) -> list[tuple[str, object]]:
    """(label, value) of the summary lines of a metrics dict or of its seed summary."""
    items = [(label.format(at=at), d.get(key)) for key, label in _SUMMARY]
    for key, label in (("group_ap", "AP"), ("group_auc", "AUC")):
        if isinstance(d.get(key), dict):
            items += [(f"{label} {g}", d[key].get(g)) for g in GROUPS]
    return items


def _fmt(v, width=8):
    return "-".rjust(width) if v is None else f"{100 * v:{width}.2f}"


def format_metrics_table(metrics: dict) -> str:
    """A fixed-width text table: summary lines (%), excluded classes, then per-class prevalence,
    AP, AUC and F1 (%) with the class's group."""
    thr = metrics.get("threshold", 0.5)
    at = "per-class thr." if isinstance(thr, list) else f"@ {thr:g}"
    w0 = 32
    lines = ["metric".ljust(w0) + "value".rjust(10), "-" * (w0 + 10),
             "samples".ljust(w0) + str(metrics.get("num_samples", "-")).rjust(10)]
    lines += [name.ljust(w0) + _fmt(v, 10) for name, v in _summary_items(metrics, at)]
    for key, label in (("ap", "no positive (no AP)"), ("auc", "no AUC")):
        excluded = (metrics.get("excluded_classes") or {}).get(key)
        if excluded:
            lines.append(f"excluded, {label}: {', '.join(excluded)}")
    ap = metrics.get("per_class_ap") or {}
    if ap:
        auc, f1 = metrics.get("per_class_auc") or {}, metrics.get("per_class_f1") or {}
        prev, grp = metrics.get("per_class_prevalence") or {}, metrics.get("groups") or {}
        w = max(12, max(len(n) for n in ap) + 1)
        lines += ["", "class".ljust(w) + "".join(h.rjust(8) for h in ("group", "prev%", "AP%", "AUC%", "F1%")),
                  "-" * (w + 40)]
        for name in ap:
            lines.append(name.ljust(w) + str(grp.get(name, "")).rjust(8) + _fmt(prev.get(name))
                         + _fmt(ap[name]) + _fmt(auc.get(name)) + _fmt(f1.get(name)))
    return "\n".join(lines)


def format_seed_summary(summary: dict) -> str:
    """The summary lines of :func:`format_metrics_table` as ``mean ± std (n)`` in %, from
    :func:`mean_std_over_seeds`."""
    def cell(v):
        if not isinstance(v, dict) or v.get("mean") is None:
            return "-"
        std = "-" if v.get("std") is None else f"{100 * v['std']:.2f}"
        return f"{100 * v['mean']:.2f} ± {std} (n={v['n']})"

    thr = summary.get("threshold")
    at = f"@ {thr['mean']:g}" if isinstance(thr, dict) and thr.get("mean") is not None else "per-class thr."
    w0 = 32
    lines = ["metric".ljust(w0) + "mean ± std over seeds", "-" * (w0 + 28)]
    lines += [name.ljust(w0) + cell(v) for name, v in _summary_items(summary, at)]
    return "\n".join(lines)

