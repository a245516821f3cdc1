"""Tests of fact_fast.metrics against hand-computed values and scikit-learn."""
import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (average_precision_score, cohen_kappa_score, f1_score,
                             roc_auc_score)

from fact_fast.metrics import compute_metrics, format_metrics_table


def _no_nan(obj):
    if isinstance(obj, dict):
        return all(_no_nan(v) for v in obj.values())
    if isinstance(obj, float):
        return math.isfinite(obj)
    return obj is None or isinstance(obj, (int, str))


def test_hand_computed_single_classes():
    # class 0: perfect ranking; class 1: pos, neg, pos, neg; class 2: reversed
    targets = np.array([[1, 1, 0],
                        [1, 0, 0],
                        [0, 1, 1],
                        [0, 0, 1]])
    scores = np.array([[0.9, 0.9, 0.9],
                       [0.8, 0.8, 0.8],
                       [0.3, 0.7, 0.2],
                       [0.1, 0.1, 0.1]])
    m = compute_metrics(scores, targets, class_names=["a", "b", "c"])
    ap = m["per_class_ap"]
    assert ap["a"] == pytest.approx(1.0)
    assert ap["b"] == pytest.approx((1 / 1 + 2 / 3) / 2)       # hits at ranks 1 and 3
    assert ap["c"] == pytest.approx((1 / 3 + 2 / 4) / 2)       # hits at ranks 3 and 4
    assert m["mAP"] == pytest.approx((1 + 5 / 6 + 5 / 12) / 3)
    auc = m["per_class_auc"]
    assert auc["a"] == pytest.approx(1.0)
    assert auc["b"] == pytest.approx(3 / 4)
    assert auc["c"] == pytest.approx(0.0)
    assert m["macro_auc"] == pytest.approx((1 + 0.75 + 0) / 3)
    assert m["prevalence_baseline_map"] == pytest.approx(0.5)
    # predictions at > 0.5: a: [1,1,0,0] (TP 2), b: [1,1,1,0] (TP 2, FP 1), c: [1,1,0,0] (FP 2, FN 2)
    tp, fp, fn = 4, 3, 2
    assert m["f1_micro"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["f1_macro"] == pytest.approx((1.0 + 0.8 + 0.0) / 3)
    assert m["num_samples"] == 4 and m["num_classes"] == 3


def test_class_without_positives_and_all_positive():
    targets = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1]])
    scores = np.array([[0.9, 0.1, 0.2], [0.2, 0.3, 0.4], [0.7, 0.2, 0.9]])
    m = compute_metrics(scores, targets)
    assert m["per_class_ap"] == {"0": pytest.approx(1.0), "1": None, "2": pytest.approx(1.0)}
    assert m["per_class_auc"]["1"] is None and m["per_class_auc"]["2"] is None
    assert m["mAP"] == pytest.approx(1.0)           # class 1 excluded from the mean
    assert m["macro_auc"] == pytest.approx(1.0)     # only class 0 has both
    assert m["prevalence_baseline_map"] == pytest.approx((2 / 3 + 1) / 2)
    assert _no_nan(m)
    json.dumps(m)


def test_no_positives_anywhere_gives_none():
    m = compute_metrics(np.full((3, 2), 0.2), np.zeros((3, 2)))
    assert m["mAP"] is None and m["macro_auc"] is None and m["prevalence_baseline_map"] is None
    assert m["odir_score"] is None
    assert m["f1_micro"] == 0.0
    assert _no_nan(m)
    json.dumps(m)


def test_against_sklearn_random():
    rng = np.random.default_rng(0)
    N, C = 300, 7
    targets = (rng.random((N, C)) < np.linspace(0.05, 0.5, C)).astype(np.int64)
    scores = np.clip(0.3 * targets + rng.random((N, C)) * 0.8, 0, 1)
    groups = ["head", "head", "medium", "medium", "tail", "tail", "tail"]
    m = compute_metrics(scores, targets, groups=groups)
    aps = [average_precision_score(targets[:, c], scores[:, c]) for c in range(C)]
    aucs = [roc_auc_score(targets[:, c], scores[:, c]) for c in range(C)]
    assert m["mAP"] == pytest.approx(np.mean(aps))
    assert m["macro_auc"] == pytest.approx(np.mean(aucs))
    pred = (scores > 0.5).astype(int)
    assert m["f1_micro"] == pytest.approx(f1_score(targets, pred, average="micro"))
    assert m["f1_macro"] == pytest.approx(f1_score(targets, pred, average="macro"))
    assert m["group_map"]["head"] == pytest.approx(np.mean(aps[:2]))
    assert m["group_map"]["medium"] == pytest.approx(np.mean(aps[2:4]))
    assert m["group_map"]["tail"] == pytest.approx(np.mean(aps[4:]))
    kappa = cohen_kappa_score(targets.ravel(), pred.ravel())
    f1 = f1_score(targets.ravel(), pred.ravel())
    auc = roc_auc_score(targets.ravel(), scores.ravel())
    assert m["odir_score"] == pytest.approx((kappa + f1 + auc) / 3)
    assert m["odir_kappa"] == pytest.approx(kappa)
    assert m["prevalence_baseline_map"] == pytest.approx(targets.mean(0).mean())
    # random scores: mAP near the prevalence baseline
    r = compute_metrics(rng.random((N, C)), targets)
    assert abs(r["mAP"] - r["prevalence_baseline_map"]) < 0.1
    for v in list(m.values()):
        assert not isinstance(v, (np.floating, np.integer))
    assert all(type(v) is float for v in m["per_class_ap"].values())
    json.dumps(m)


def test_threshold_and_torch_inputs():
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scores = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
    assert compute_metrics(scores, targets)["f1_micro"] == pytest.approx(1.0)
    assert compute_metrics(scores, targets, threshold=0.65)["f1_micro"] == pytest.approx(2 * 1 / (2 * 1 + 1))


def test_group_map_empty_group_is_none():
    targets = np.array([[1, 0], [0, 1], [1, 1]])
    m = compute_metrics(np.random.default_rng(1).random((3, 2)), targets, groups=["head", "head"])
    assert m["group_map"]["medium"] is None and m["group_map"]["tail"] is None
    assert m["group_map"]["head"] == pytest.approx(m["mAP"])


def test_bad_inputs():
    s = np.zeros((4, 3))
    t = np.zeros((4, 3))
    with pytest.raises(ValueError, match="N = 0"):
        compute_metrics(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="targets"):
        compute_metrics(s, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="scores"):
        compute_metrics(np.zeros(4), t)
    with pytest.raises(ValueError, match="targets"):
        compute_metrics(s, np.full((4, 3), 2))
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(np.full((4, 3), np.nan), t)
    with pytest.raises(ValueError, match="class_names"):
        compute_metrics(s, t, class_names=["a", "b"])
    with pytest.raises(ValueError, match="groups"):
        compute_metrics(s, t, groups=["head", "mid", "tail"])
    with pytest.raises(ValueError, match="groups"):
        compute_metrics(s, t, groups=["head"])


def test_format_table():
    targets = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0]])
    scores = np.array([[0.9, 0.2, 0.6], [0.1, 0.8, 0.3], [0.7, 0.4, 0.2]])
    m = compute_metrics(scores, targets, class_names=["Effusion", "Mass", "Hernia"],
                        groups=["head", "medium", "tail"])
    txt = format_metrics_table(m)
    assert "mAP" in txt and "macro AUC" in txt and "ODIR" in txt
    for name in ("Effusion", "Mass", "Hernia", "tail"):
        assert name in txt
    assert "100.00" in txt
    lines = txt.splitlines()
    assert len(lines) > 12
    # degenerate metrics format with "-" placeholders
    txt2 = format_metrics_table(compute_metrics(np.full((2, 1), 0.1), np.zeros((2, 1))))
    assert "-" in txt2
