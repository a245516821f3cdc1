"""fact_fast.metrics against hand-computed values and independent implementations of the
published definitions (PR-curve AP, Mann-Whitney AUC, the official ODIR-5K evaluation code)."""
import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score, f1_score, roc_auc_score

from fact_fast.metrics import (choose_thresholds, class_prevalence, compute_metrics, format_metrics_table,
                               format_seed_summary, frequency_groups, load_groups, mean_std_over_seeds)

nan = np.nan


def _no_nan(obj):
    if isinstance(obj, dict):
        return all(_no_nan(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_no_nan(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return obj is None or isinstance(obj, (int, str))


# -- independent implementations of the published definitions ------------------------------------
def ap_from_pr_curve(y, s):
    """AP = Σ_k (R_k − R_{k−1}) P_k over the distinct score thresholds, highest first."""
    ap, prev_recall = 0.0, 0.0
    for thr in sorted(set(s.tolist()), reverse=True):
        pred = s >= thr
        tp = float(np.sum(pred & (y == 1)))
        precision, recall = tp / pred.sum(), tp / np.sum(y == 1)
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def auc_mann_whitney(y, s):
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def odir_official(gt_data, pr_data):
    """The ODIR-5K challenge's evaluation (th = 0.5, flattened, sklearn), as published."""
    th = 0.5
    gt, pr = gt_data.flatten(), pr_data.flatten()
    kappa = cohen_kappa_score(gt, pr > th)
    f1 = f1_score(gt, pr > th, average="micro")
    auc = roc_auc_score(gt, pr)
    return kappa, f1, auc, (kappa + f1 + auc) / 3.0


# -- the hand example (N = 5, C = 3, three unknown entries; class c never positive) --------------
HAND_T = np.array([[1, 0, nan],
                   [0, 1, 0],
                   [1, nan, 0],
                   [nan, 1, 0],
                   [0, 0, 0]])
HAND_S = np.array([[0.9, 0.6, 0.7],
                   [0.4, 0.8, 0.2],
                   [0.6, 0.1, 0.1],
                   [0.2, 0.3, 0.3],
                   [0.7, 0.2, 0.6]])


def test_hand_example_with_unknown_labels():
    m = compute_metrics(HAND_S, HAND_T, class_names=["a", "b", "c"], groups=["head", "tail", "tail"])
    # a (known rows 0, 1, 2, 4): ranking +, -, +, -  -> AP (1 + 2/3) / 2; AUC 3 of 4 pairs
    # b (known rows 0, 1, 3, 4): ranking +, -, +, -  -> same; c has no positive
    assert m["per_class_ap"] == {"a": pytest.approx(5 / 6), "b": pytest.approx(5 / 6), "c": None}
    assert m["per_class_auc"] == {"a": pytest.approx(0.75), "b": pytest.approx(0.75), "c": None}
    assert m["mAP"] == pytest.approx(5 / 6) and m["macro_auc"] == pytest.approx(0.75)
    assert m["excluded_classes"] == {"ap": ["c"], "auc": ["c"]}
    # at > 0.5 over the 12 known entries: TP 3, FP 3, FN 1, TN 5
    assert m["accuracy"] == pytest.approx(8 / 12) and m["paper_f1"] == m["accuracy"]
    assert m["f1_micro"] == pytest.approx(6 / 10)
    assert m["per_class_f1"] == {"a": pytest.approx(0.8), "b": pytest.approx(0.5), "c": None}
    assert m["f1_macro"] == pytest.approx(0.65)
    assert m["paper_avg"] == pytest.approx((5 / 6 + 8 / 12 + 0.75) / 3)
    # kappa: p_o = 2/3, p_e = (4/12)(6/12) + (8/12)(6/12) = 1/2
    assert m["odir_kappa"] == pytest.approx(1 / 3)
    assert m["odir_f1"] == pytest.approx(2 / 3)
    assert m["odir_auc"] == pytest.approx(25.5 / 32)   # 4 positive x 8 negative known scores
    assert m["odir_score"] == pytest.approx((1 / 3 + 2 / 3 + 25.5 / 32) / 3)
    assert m["per_class_prevalence"] == {"a": 0.5, "b": 0.5, "c": 0.0}
    assert m["prevalence_baseline_map"] == pytest.approx(0.5)
    assert m["group_sizes"] == {"head": 1, "medium": 0, "tail": 2}
    assert m["group_ap"] == {"head": pytest.approx(5 / 6), "medium": None, "tail": pytest.approx(5 / 6)}
    assert m["group_auc"] == {"head": pytest.approx(0.75), "medium": None, "tail": pytest.approx(0.75)}
    assert m["groups"] == {"a": "head", "b": "tail", "c": "tail"}
    assert m["num_samples"] == 5 and m["num_classes"] == 3 and m["threshold"] == 0.5
    assert _no_nan(m)
    json.dumps(m)


def test_unknown_entries_are_skipped_not_counted_as_negative():
    rng = np.random.default_rng(3)
    n, c = 80, 4
    t = (rng.random((n, c)) < 0.35).astype(float)
    s = np.round(rng.random((n, c)), 1)                 # ties included
    t_nan = t.copy()
    t_nan[rng.random((n, c)) < 0.25] = nan
    m = compute_metrics(s, t_nan)
    known = ~np.isnan(t_nan)
    for j in range(c):
        y, sc = t_nan[known[:, j], j], s[known[:, j], j]
        assert m["per_class_ap"][str(j)] == pytest.approx(ap_from_pr_curve(y, sc))
        assert m["per_class_auc"][str(j)] == pytest.approx(auc_mann_whitney(y, sc))
    flat_t, flat_s = t_nan[known], s[known]
    kappa, f1, auc, score = odir_official(flat_t, flat_s)
    assert m["odir_kappa"] == pytest.approx(kappa) and m["odir_f1"] == pytest.approx(f1)
    assert m["odir_auc"] == pytest.approx(auc) and m["odir_score"] == pytest.approx(score)
    assert m["accuracy"] == pytest.approx(np.mean(flat_t == (flat_s > 0.5)))
    # the same data with the unknown entries read as negatives gives different numbers
    assert compute_metrics(s, np.nan_to_num(t_nan))["macro_auc"] != pytest.approx(m["macro_auc"])


def test_against_published_definitions_random():
    rng = np.random.default_rng(0)
    n, c = 300, 7
    t = (rng.random((n, c)) < np.linspace(0.05, 0.5, c)).astype(np.float64)
    s = np.clip(0.3 * t + rng.random((n, c)) * 0.8, 0, 1)
    groups = ["head", "head", "medium", "medium", "tail", "tail", "tail"]
    m = compute_metrics(s, t, groups=groups)
    aps = [ap_from_pr_curve(t[:, j], s[:, j]) for j in range(c)]
    aucs = [auc_mann_whitney(t[:, j], s[:, j]) for j in range(c)]
    assert m["mAP"] == pytest.approx(np.mean(aps))
    assert m["macro_auc"] == pytest.approx(np.mean(aucs))
    pred = s > 0.5
    tp, fp, fn = np.sum(pred & (t == 1)), np.sum(pred & (t == 0)), np.sum(~pred & (t == 1))
    assert m["f1_micro"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["f1_micro"] == pytest.approx(f1_score(t, pred, average="micro"))   # sklearn's multilabel micro
    assert m["f1_macro"] == pytest.approx(f1_score(t, pred, average="macro"))   # every class has positives
    assert m["accuracy"] == pytest.approx(np.mean(pred == t))
    assert m["paper_f1"] == pytest.approx(f1_score(t.ravel(), pred.ravel(), average="micro"))
    kappa, f1, auc, score = odir_official(t, s)
    assert (m["odir_kappa"], m["odir_f1"], m["odir_auc"], m["odir_score"]) == \
        (pytest.approx(kappa), pytest.approx(f1), pytest.approx(auc), pytest.approx(score))
    assert m["group_ap"] == {"head": pytest.approx(np.mean(aps[:2])), "medium": pytest.approx(np.mean(aps[2:4])),
                             "tail": pytest.approx(np.mean(aps[4:]))}
    assert m["group_auc"]["tail"] == pytest.approx(np.mean(aucs[4:]))
    assert m["paper_avg"] == pytest.approx((np.mean(aps) + np.mean(pred == t) + np.mean(aucs)) / 3)
    assert m["prevalence_baseline_map"] == pytest.approx(t.mean(0).mean())
    r = compute_metrics(rng.random((n, c)), t)            # random scores: mAP near the baseline
    assert abs(r["mAP"] - r["prevalence_baseline_map"]) < 0.1
    assert all(type(v) is float for v in m["per_class_ap"].values())
    assert _no_nan(m)
    json.dumps(m)


def test_paper_f1_is_accuracy_not_positive_f1():
    # one positive among many negatives, all predicted negative: accuracy high, positive F1 zero
    t = np.zeros((10, 2))
    t[0, 0] = 1
    m = compute_metrics(np.full((10, 2), 0.1), t)
    assert m["accuracy"] == pytest.approx(19 / 20) and m["f1_micro"] == 0.0
    assert m["odir_f1"] == pytest.approx(19 / 20)


def test_classes_without_positives_or_negatives_are_excluded_and_listed():
    t = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1]], dtype=float)
    s = np.array([[0.9, 0.1, 0.2], [0.2, 0.3, 0.4], [0.7, 0.2, 0.9]])
    m = compute_metrics(s, t, groups=["tail", "tail", "medium"])
    assert m["per_class_ap"] == {"0": pytest.approx(1.0), "1": None, "2": pytest.approx(1.0)}
    assert m["per_class_auc"] == {"0": pytest.approx(1.0), "1": None, "2": None}
    assert m["excluded_classes"] == {"ap": ["1"], "auc": ["1", "2"]}
    assert m["mAP"] == pytest.approx(1.0) and m["macro_auc"] == pytest.approx(1.0)
    # class 0: F1 1; class 2: predicted [0, 0, 1] -> TP 1, FN 2 -> F1 0.5; class 1 left out
    assert m["f1_macro"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["group_ap"]["medium"] == pytest.approx(1.0) and m["group_auc"]["medium"] is None
    assert m["prevalence_baseline_map"] == pytest.approx((2 / 3 + 1) / 2)
    # a class whose every label is unknown: prevalence None, excluded everywhere
    t2 = t.copy()
    t2[:, 0] = nan
    m2 = compute_metrics(s, t2)
    assert m2["per_class_prevalence"]["0"] is None and "0" in m2["excluded_classes"]["auc"]
    assert _no_nan(m2)


def test_no_positive_anywhere_gives_none():
    m = compute_metrics(np.full((3, 2), 0.2), np.zeros((3, 2)))
    assert m["mAP"] is None and m["macro_auc"] is None and m["prevalence_baseline_map"] is None
    assert m["odir_score"] is None and m["odir_auc"] is None and m["paper_avg"] is None
    assert m["f1_micro"] == 0.0 and m["accuracy"] == 1.0 and m["f1_macro"] is None
    assert _no_nan(m)
    json.dumps(m)


def test_threshold_scalar_per_class_and_torch_inputs():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    s = torch.tensor([[0.625, 0.375], [0.25, 0.75]])   # exact in float32 and float64
    assert compute_metrics(s, t)["f1_micro"] == pytest.approx(1.0)
    assert compute_metrics(s, t, threshold=0.65)["f1_micro"] == pytest.approx(2 / 3)
    # the prediction is strict (score > threshold), as in the ODIR evaluation
    assert compute_metrics(s, t, threshold=0.625)["f1_micro"] == pytest.approx(2 / 3)
    m = compute_metrics(s, t, threshold=[0.2, 0.65])
    # class 0 predicted [1, 1] (TP 1, FP 1), class 1 [0, 1] (TP 1)
    assert m["f1_micro"] == pytest.approx(4 / 5) and m["threshold"] == [0.2, 0.65]
    assert "per-class" in format_metrics_table(m)
    with pytest.raises(ValueError, match="threshold"):
        compute_metrics(s, t, threshold=[0.5, 0.5, 0.5])


def test_bad_inputs():
    s, t = np.zeros((4, 3)), np.zeros((4, 3))
    with pytest.raises(ValueError, match="N = 0"):
        compute_metrics(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="targets"):
        compute_metrics(s, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="scores"):
        compute_metrics(np.zeros(4), t)
    with pytest.raises(ValueError, match="targets must contain only 0, 1 or NaN"):
        compute_metrics(s, np.full((4, 3), -1.0))
    with pytest.raises(ValueError, match="scores contain NaN"):
        compute_metrics(np.full((4, 3), np.nan), t)
    with pytest.raises(ValueError, match="class_names"):
        compute_metrics(s, t, class_names=["a", "b"])
    with pytest.raises(ValueError, match="groups"):
        compute_metrics(s, t, groups=["head", "mid", "tail"])
    with pytest.raises(ValueError, match="groups"):
        compute_metrics(s, t, groups=["head"])


# -- frequency groups ----------------------------------------------------------------------------
def test_frequency_groups_thresholds_and_empty_groups_stay_empty():
    prev = np.array([0.5, 0.2, 0.05, 0.02, 0.005])
    assert frequency_groups(prev) == ["head", "head", "medium", "medium", "tail"]
    assert frequency_groups(prev, head=0.3, tail=0.03) == ["head", "medium", "medium", "tail", "tail"]
    # boundaries: head is > 10 %, tail is < 1 %
    assert frequency_groups(np.array([0.10, 0.01])) == ["medium", "medium"]
    # every class above 10 %: medium and tail are empty, not replaced by terciles
    prev6 = np.array([0.4, 0.3, 0.2, 0.15, 0.12, 0.11])
    assert frequency_groups(prev6) == ["head"] * 6
    rng = np.random.default_rng(0)
    m = compute_metrics(rng.random((20, 6)), rng.random((20, 6)) < 0.5, groups=frequency_groups(prev6))
    assert m["group_sizes"] == {"head": 6, "medium": 0, "tail": 0}
    assert m["group_ap"]["medium"] is None and m["group_auc"]["tail"] is None
    # terciles only when asked
    assert frequency_groups(prev6, method="tercile") == ["head", "head", "medium", "medium", "tail", "tail"]
    assert frequency_groups(np.array([0.1, 0.3, 0.2, 0.3]), method="tercile") == ["tail", "head", "medium", "head"]
    with pytest.raises(ValueError, match="method"):
        frequency_groups(prev, method="auto")


def test_frequency_groups_from_labels_with_unknowns():
    y = np.array([[1, 0, nan], [0, 0, 1], [nan, 0, 0], [0, nan, 0]] * 30, dtype=float)
    y[0, 1] = 1   # class 1: 1 positive of 90 known (1.1 %)
    assert class_prevalence(y) == pytest.approx([1 / 3, 1 / 90, 1 / 3])
    assert frequency_groups(y) == ["head", "medium", "head"]
    assert frequency_groups(torch.from_numpy(y)) == ["head", "medium", "head"]
    y[:, 2] = nan
    with pytest.raises(ValueError, match=r"classes \[2\] have no known label"):
        frequency_groups(y)
    with pytest.raises(ValueError, match="labels"):
        class_prevalence(np.array([[2.0]]))


# -- user groups file ----------------------------------------------------------------------------
def _write(tmp_path, obj, name="groups.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


def test_load_groups_both_formats(tmp_path):
    names = ["Effusion", "Mass", "Hernia"]
    assert load_groups(_write(tmp_path, {"head": ["Effusion"], "tail": ["Hernia", "Mass"]}), names) == \
        ["head", "tail", "tail"]
    assert load_groups(_write(tmp_path, {"Mass": "medium", "Hernia": "tail", "Effusion": "head"}), names) == \
        ["head", "medium", "tail"]


def test_load_groups_errors(tmp_path):
    names = ["Effusion", "Mass", "Hernia"]
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_groups(str(tmp_path / "nope.json"), names)
    with pytest.raises(ValueError, match="not valid JSON"):
        load_groups(_write(tmp_path, "{head: "), names)
    with pytest.raises(ValueError, match="non-empty JSON object"):
        load_groups(_write(tmp_path, ["head"]), names)
    with pytest.raises(ValueError, match=r"unknown groups \['rare'\]"):
        load_groups(_write(tmp_path, {"head": ["Effusion", "Mass"], "rare": ["Hernia"]}), names)
    with pytest.raises(ValueError, match=r"unknown groups \['rare'\]"):
        load_groups(_write(tmp_path, {"Effusion": "head", "Mass": "head", "Hernia": "rare"}), names)
    with pytest.raises(ValueError, match="did you mean 'Effusion'"):
        load_groups(_write(tmp_path, {"head": ["Efusion", "Mass", "Hernia"]}), names)
    with pytest.raises(ValueError, match="assigned twice"):
        load_groups(_write(tmp_path, {"head": ["Effusion", "Mass"], "tail": ["Mass", "Hernia"]}), names)
    with pytest.raises(ValueError, match=r"without a group: \['Hernia'\]"):
        load_groups(_write(tmp_path, {"head": ["Effusion", "Mass"]}), names)
    with pytest.raises(ValueError, match="must map each group"):
        load_groups(_write(tmp_path, {"head": ["Effusion"], "Mass": "tail"}), names)


# -- per-class thresholds ------------------------------------------------------------------------
def _f1(y, pred):
    tp = np.sum(pred & (y == 1))
    return 2 * tp / (2 * tp + np.sum(pred & (y == 0)) + np.sum(~pred & (y == 1)))


def test_choose_thresholds_hand_example_f1_vs_youden():
    # P = 3 of 15; top-2 (TP 2, FP 0): F1 0.8, J 2/3; top-5 (TP 3, FP 2): F1 0.75, J 1 - 2/12
    scores = np.arange(15, 0, -1, dtype=float)[:, None]
    y = np.zeros((15, 1))
    y[[0, 1, 4]] = 1
    assert choose_thresholds(scores, y, "f1", min_examples=1) == pytest.approx([13.5])
    assert choose_thresholds(scores, y, "youden", min_examples=1) == pytest.approx([10.5])


def test_choose_thresholds_ties_unknowns_and_defaults():
    # equal F1 (2/3) for the top-1 cut and for all-positive: the higher threshold wins
    s = np.array([[0.9], [0.7], [0.5], [0.3]])
    assert choose_thresholds(s, np.array([[1], [0], [0], [1]]), "f1", min_examples=1) == pytest.approx([0.8])
    # tied scores form one cut; predicting all is best, threshold just under the lowest score
    thr = choose_thresholds(np.array([[0.8], [0.8], [0.3]]), np.array([[1.0], [0.0], [1.0]]), min_examples=1)
    assert thr[0] < 0.3 and 0.3 > thr[0] and np.nextafter(thr[0], 1.0) == 0.3
    # unknown rows are ignored: column 0 is column 1 with its negative at 0.85 unknown.
    # column 0: J = 1/2 for top-1, 1 for top-2 -> 0.15; column 1: J = 1/2 for top-1 and for
    # top-3 (tie -> the higher threshold 0.875)
    s = np.array([[0.9, 0.9], [0.85, 0.85], [0.2, 0.2], [0.1, 0.1]])
    t = np.array([[1, 1], [nan, 0], [1, 1], [0, 0]])
    assert choose_thresholds(s, t, "youden", min_examples=1) == pytest.approx([0.15, 0.875])
    # no positive -> default; youden also needs a negative
    t = np.array([[0, 1], [0, 1], [nan, 1]])
    s = np.array([[0.2, 0.9], [0.7, 0.3], [0.1, 0.5]])
    assert choose_thresholds(s, t, "f1", default=0.4, min_examples=1).tolist() == [0.4, np.nextafter(0.3, -np.inf)]
    assert choose_thresholds(s, t, "youden", default=0.4, min_examples=1).tolist() == [0.4, 0.4]
    with pytest.raises(ValueError, match="method"):
        choose_thresholds(s, t, "accuracy")
    with pytest.raises(ValueError, match="targets"):
        choose_thresholds(s, np.full((3, 2), 3.0))


def test_choose_thresholds_keeps_the_default_for_classes_with_too_few_examples():
    rng = np.random.default_rng(0)
    n = 200
    s = rng.random((n, 3))
    t = np.zeros((n, 3))
    t[:2, 0] = 1                      # 2 positives: too few, whatever their scores
    t[:10, 1] = 1                     # exactly the minimum
    t[:, 2] = 1
    t[:9, 2] = 0                      # 9 negatives: enough for F1, too few for Youden's J
    s[:2, 0] = 0.01                   # the best F1 cut for class 0 would sit below them
    f1 = choose_thresholds(s, t, "f1", default=0.5)
    assert f1[0] == 0.5
    assert f1[1] != 0.5 and f1[2] != 0.5
    assert choose_thresholds(s, t, "f1", default=0.5, min_examples=2)[0] < 0.01
    youden = choose_thresholds(s, t, "youden", default=0.5)
    assert youden[1] != 0.5 and youden[2] == 0.5
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="min_examples"):
            choose_thresholds(s, t, min_examples=bad)


def test_choose_thresholds_is_optimal_by_brute_force():
    rng = np.random.default_rng(5)
    n, c = 60, 5
    t = (rng.random((n, c)) < 0.3).astype(float)
    t[rng.random((n, c)) < 0.1] = nan
    s = np.round(np.clip(0.25 * np.nan_to_num(t) + rng.random((n, c)), 0, 1), 2)
    for method in ("f1", "youden"):
        thr = choose_thresholds(s, t, method, min_examples=1)
        for j in range(c):
            known = ~np.isnan(t[:, j])
            y, sc = t[known, j], s[known, j]
            crit = (lambda p: _f1(y, p)) if method == "f1" else \
                (lambda p: np.mean(p[y == 1]) - np.mean(p[y == 0]))
            best = max(crit(sc >= v) for v in np.unique(sc))
            assert crit(sc > thr[j]) == pytest.approx(best)
            assert not np.any(sc == thr[j])   # a midpoint between two scores


# -- seeds ---------------------------------------------------------------------------------------
def test_mean_std_over_seeds():
    runs = [{"mAP": 0.5, "odir_score": None, "group_ap": {"head": 0.6, "tail": None}, "split": "test",
             "excluded_classes": {"ap": []}},
            {"mAP": 0.7, "odir_score": 0.3, "group_ap": {"head": 0.8, "tail": None}, "split": "test",
             "excluded_classes": {"ap": ["Hernia"]}}]
    out = mean_std_over_seeds(runs)
    assert out["mAP"] == {"mean": pytest.approx(0.6), "std": pytest.approx(math.sqrt(0.02)), "n": 2}
    assert out["odir_score"] == {"mean": pytest.approx(0.3), "std": None, "n": 1}
    assert out["group_ap"]["head"]["mean"] == pytest.approx(0.7)
    assert out["group_ap"]["tail"] == {"mean": None, "std": None, "n": 0}
    assert out["split"] == "test"
    assert out["excluded_classes"]["ap"] == [[], ["Hernia"]]
    json.dumps(out)
    # from real metric dicts, and the summary table
    rng = np.random.default_rng(1)
    t = (rng.random((40, 3)) < 0.4).astype(float)
    ms = [compute_metrics(rng.random((40, 3)), t, groups=["head", "medium", "tail"]) for _ in range(3)]
    summary = mean_std_over_seeds(ms)
    assert summary["mAP"]["mean"] == pytest.approx(np.mean([m["mAP"] for m in ms]))
    assert summary["mAP"]["std"] == pytest.approx(np.std([m["mAP"] for m in ms], ddof=1))
    txt = format_seed_summary(summary)
    assert f"{100 * summary['mAP']['mean']:.2f} ± {100 * summary['mAP']['std']:.2f} (n=3)" in txt
    assert "AUC tail" in txt
    with pytest.raises(ValueError, match="non-empty"):
        mean_std_over_seeds([])


def test_format_table():
    t = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0]])
    s = np.array([[0.9, 0.2, 0.6], [0.1, 0.8, 0.3], [0.7, 0.4, 0.2]])
    m = compute_metrics(s, t, class_names=["Effusion", "Mass", "Hernia"], groups=["head", "medium", "tail"])
    txt = format_metrics_table(m)
    for needle in ("mAP", "macro AUC", "ODIR", "accuracy (paper F1) @ 0.5", "paper Avg.", "AP tail", "AUC head",
                   "Effusion", "Mass", "Hernia"):
        assert needle in txt
    assert "100.00" in txt
    txt2 = format_metrics_table(compute_metrics(np.full((2, 2), 0.1), np.array([[0, 1], [0, 1]])))
    assert "excluded, no positive (no AP): 0" in txt2 and "excluded, no AUC: 0, 1" in txt2
