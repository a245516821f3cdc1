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

from .classification import class_score_correlation, compute_metrics
from .groups import CXR_LT_HEAD, CXR_LT_TAIL, GROUPS, class_prevalence, frequency_groups, load_groups
from .summary import format_metrics_table, format_seed_summary, mean_std, mean_std_over_seeds
from .thresholds import THRESHOLD_METHODS, choose_thresholds

__all__ = ["compute_metrics", "format_metrics_table", "choose_thresholds", "class_prevalence",
           "frequency_groups", "load_groups", "class_score_correlation", "mean_std", "mean_std_over_seeds",
           "format_seed_summary", "GROUPS", "CXR_LT_HEAD", "CXR_LT_TAIL", "THRESHOLD_METHODS"]
