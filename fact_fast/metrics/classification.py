"""The multi-label metrics of one split's scores: AP, AUC, F1, the paper's accuracy and average,
the ODIR score, group means; how alike the classes' scores are."""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import average_precision_score, cohen_kappa_score, f1_score, roc_auc_score

from .arrays import class_names_for, mean_or_none, per_class_thresholds, scores_and_targets, to_float
from .groups import GROUPS


def _flat_known(t: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    known = ~np.isnan(t)
    return [t[known]] + [a[known] for a in arrays]


def _quiet(fn, *args, **kwargs):
    """sklearn call with its undefined-metric warnings silenced (undefined becomes None by to_float)."""
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
    s, t = scores_and_targets(scores, targets)
    num_samples, num_classes = s.shape
    names = class_names_for(class_names, num_classes)
    if groups is not None:
        groups = list(groups)
        if len(groups) != num_classes:
            raise ValueError(f"groups has {len(groups)} entries for {num_classes} classes")
        bad = sorted({str(g) for g in groups if g not in GROUPS})
        if bad:
            raise ValueError(f"groups: unknown group names {bad}; valid values: {list(GROUPS)}")
    thr = per_class_thresholds(threshold, num_classes)
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
        ap.append(to_float(average_precision_score(y, sc)))
        auc.append(to_float(roc_auc_score(y, sc)) if pos < len(y) else None)
        f1.append(to_float(f1_score(y, pr, zero_division=0)))

    flat_t, flat_p, flat_s = _flat_known(t, pred, s)
    accuracy = to_float(np.mean(flat_t == flat_p)) if flat_t.size else None
    f1_micro = to_float(f1_score(flat_t, flat_p, zero_division=0)) if flat_t.size else None
    both_outcomes = flat_t.size > 0 and flat_t.min() != flat_t.max()
    odir_kappa = to_float(_quiet(cohen_kappa_score, flat_t, flat_p)) if flat_t.size else None
    odir_f1 = to_float(f1_score(flat_t, flat_p, average="micro")) if flat_t.size else None
    odir_auc = to_float(roc_auc_score(flat_t, flat_s)) if both_outcomes else None
    odir_parts = [odir_kappa, odir_f1, odir_auc]

    m_ap, m_auc = mean_or_none(ap), mean_or_none(auc)
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
        "f1_macro": mean_or_none(f1),
        "paper_avg": float(np.mean([m_ap, accuracy, m_auc])) if None not in (m_ap, accuracy, m_auc) else None,
        "prevalence_baseline_map": mean_or_none(in_map),
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
        out["group_ap"] = {g: mean_or_none([a for a, x in zip(ap, groups) if x == g]) for g in GROUPS}
        out["group_auc"] = {g: mean_or_none([a for a, x in zip(auc, groups) if x == g]) for g in GROUPS}
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
    return to_float((r.sum() - np.trace(r)) / (k * (k - 1)))
