"""The label graph (fact_fast.data.labels.graph): hand examples for every method (with unknown
labels), the statistics and the re-weighting against independent loop implementations, the
re-weighted graph through ops.gcn_propagate against the dense Â x, and the stats script."""
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fact_fast import ops
from fact_fast.data import (DEFAULT_GRAPH, GRAPH_METHODS, LabelGraph, cooccurrence_counts, cooccurrence_probabilities,
                            graph_report, label_graph)
from tests.helpers import REPO_ROOT as REPO

nan = np.nan

# N = 6, C = 4, four unknown entries. Positives: 0: rows 0-3; 1: rows 0, 1, 4, 5; 2: rows 2, 5; 3: rows 3, 4.
HAND = np.array([[1, 1, 0, nan],
                 [1, 1, nan, 0],
                 [1, 0, 1, 0],
                 [1, nan, 0, 1],
                 [0, 1, 0, 1],
                 [nan, 1, 1, 0]])
# P(j | i) over the rows where i is positive and j is known (e.g. P(1 | 0) = 2 / 3: row 3 has 1 unknown)
HAND_P = np.array([[0, 2 / 3, 1 / 3, 1 / 3],
                   [2 / 3, 0, 1 / 3, 1 / 3],
                   [1, 1 / 2, 0, 0],
                   [1 / 2, 1, 0, 0]])
# lift = both * known / (pos_known[i, j] * pos_known[j, i]); every pair is known on 4 rows
HAND_LIFT = np.array([[0, 8 / 9, 4 / 3, 2 / 3],
                      [8 / 9, 0, 2 / 3, 4 / 3],
                      [4 / 3, 2 / 3, 0, 0],
                      [2 / 3, 4 / 3, 0, 0]])


def _csr(graph):
    return graph.rowptr.tolist(), graph.col.tolist()


def test_counts_probabilities_and_lift_hand_example():
    counts = cooccurrence_counts(HAND)
    assert counts.both.tolist() == [[4, 2, 1, 1], [2, 4, 1, 1], [1, 1, 2, 0], [1, 1, 0, 2]]
    assert counts.positive_known.tolist() == [[4, 3, 3, 3], [3, 4, 3, 3], [1, 2, 2, 2], [2, 1, 2, 2]]
    assert np.all(counts.known[~np.eye(4, dtype=bool)] == 4)
    np.testing.assert_allclose(counts.conditional(), HAND_P)
    np.testing.assert_allclose(cooccurrence_probabilities(torch.from_numpy(HAND)), HAND_P)
    np.testing.assert_allclose(counts.lift(), HAND_LIFT)
    # reading the unknowns as negatives would give P(1 | 0) = 2 / 4
    assert cooccurrence_probabilities(np.nan_to_num(HAND))[0, 1] == pytest.approx(0.5)


def test_threshold_method_hand_example():
    g = label_graph(HAND, "threshold", threshold=0.4, symmetric=False)
    assert isinstance(g, LabelGraph) and g.rowptr.dtype == torch.int64 and g.col.dtype == torch.int64
    assert _csr(g) == ([0, 1, 2, 4, 6], [1, 0, 0, 1, 0, 1])
    assert g.value is None and g.add_self_loops and g.method == "threshold"
    assert g.params == {"threshold": 0.4, "symmetric": False}
    assert _csr(label_graph(HAND, "threshold", threshold=0.4)) == ([0, 3, 6, 8, 10], [1, 2, 3, 0, 2, 3, 0, 1, 0, 1])
    # P(1 | 2) = 0.5 is kept at 0.5 (>=), dropped above
    assert _csr(label_graph(HAND, "threshold", threshold=0.5, symmetric=False)) == ([0, 1, 2, 4, 6], [1, 0, 0, 1, 0, 1])
    assert _csr(label_graph(HAND, "threshold", threshold=0.7, symmetric=False)) == ([0, 0, 0, 1, 2], [0, 1])


def test_reweighted_method_hand_example():
    g = label_graph(HAND, "reweighted", threshold=0.4, p=0.2)
    assert g.add_self_loops is False and g.value.dtype == torch.float32
    # rows 0, 1 have 3 neighbours (0.2 / 3 each), rows 2, 3 two (0.1 each); 0.8 on the diagonal
    assert _csr(g) == ([0, 4, 8, 11, 14], [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 0, 1, 3])
    t = 0.2 / 3
    np.testing.assert_allclose(g.value.numpy(), [0.8, t, t, t, t, 0.8, t, t, 0.1, 0.1, 0.8, 0.1, 0.1, 0.8],
                               rtol=1e-6)
    # an isolated class keeps 1 - p on its self loop
    g = label_graph(HAND, "reweighted", threshold=0.9, p=0.3, symmetric=False)
    np.testing.assert_allclose(g.to_dense(), [[0.7, 0, 0, 0], [0, 0.7, 0, 0], [0.3, 0, 0.7, 0], [0, 0.3, 0, 0.7]],
                               rtol=1e-6)


def test_topk_method_hand_example():
    def topk(**kw):
        return _csr(label_graph(HAND, "topk", **{"min_lift": 0.0, "min_count": 1, "symmetric": False, **kw}))

    assert topk(k=1, rank_by="conditional") == ([0, 1, 2, 3, 4], [1, 0, 0, 1])
    # P(2 | 0) = P(3 | 0) = 1/3: the tie goes to the lower index
    assert topk(k=2, rank_by="conditional") == ([0, 2, 4, 6, 8], [1, 2, 0, 2, 0, 1, 0, 1])
    assert topk(k=2, rank_by="lift") == ([0, 2, 4, 6, 8], [1, 2, 0, 3, 0, 1, 0, 1])
    # classes 2 and 3 never co-occur, so they have only two partners each
    assert topk(k=3, rank_by="lift") == ([0, 3, 6, 8, 10], [1, 2, 3, 0, 2, 3, 0, 1, 0, 1])
    # only pairs above chance: 0-2 and 1-3 (lift 4/3)
    assert topk(k=2, rank_by="lift", min_lift=1.0) == ([0, 1, 2, 3, 4], [2, 3, 0, 1])
    # only the pair seen twice: 2 and 3 become isolated
    assert topk(k=2, rank_by="lift", min_count=2) == ([0, 1, 2, 2, 2], [1, 0])
    assert _csr(label_graph(HAND, "topk", k=1, rank_by="conditional", min_lift=0.0, min_count=1)) == \
        ([0, 2, 4, 5, 6], [1, 2, 0, 3, 0, 1])


def test_topk_reweighted_hand_example():
    """The top-k partners (k = 2 by lift: 0-1, 0-2, 1-3 and their mirrors), then ML-GCN's Eq. 8:
    each neighbour gets p / (number of neighbours), the self loop 1 - p."""
    g = label_graph(HAND, "topk_reweighted", k=2, rank_by="lift", min_lift=0.0, min_count=1, p=0.2)
    assert g.add_self_loops is False and g.method == "topk_reweighted"
    np.testing.assert_allclose(g.to_dense(), [[0.8, 0.2 / 3, 0.2 / 3, 0.2 / 3],
                                              [0.2 / 3, 0.8, 0.2 / 3, 0.2 / 3],
                                              [0.1, 0.1, 0.8, 0],
                                              [0.1, 0.1, 0, 0.8]], rtol=1e-6)
    # the same edges as the unweighted top-k graph
    top = label_graph(HAND, "topk", k=2, rank_by="lift", min_lift=0.0, min_count=1)
    off = g.to_dense() * (1 - np.eye(4))
    np.testing.assert_array_equal(off > 0, top.to_dense() > 0)


def test_lift_method_hand_example():
    assert _csr(label_graph(HAND, "lift", min_lift=1.0, min_count=1)) == ([0, 1, 2, 3, 4], [2, 3, 0, 1])
    assert _csr(label_graph(HAND, "lift", min_lift=0.8, min_count=1)) == ([0, 2, 4, 5, 6], [1, 2, 0, 3, 0, 1])
    assert _csr(label_graph(HAND, "lift", min_lift=0.8, min_count=2)) == ([0, 1, 2, 2, 2], [1, 0])
    g = label_graph(HAND, "lift", min_lift=1.0, min_count=1)
    assert g.value is None and g.add_self_loops


# -- independent implementations ----------------------------------------------------------------
def loop_statistics(y):
    """P(j | i) and lift by explicit loops over the rows where both labels are known."""
    c = y.shape[1]
    cond, lift = np.zeros((c, c)), np.zeros((c, c))
    for i in range(c):
        for j in range(c):
            if i == j:
                continue
            rows = [r for r in range(len(y)) if not np.isnan(y[r, i]) and not np.isnan(y[r, j])]
            ni = sum(y[r, i] == 1 for r in rows)
            nj = sum(y[r, j] == 1 for r in rows)
            nij = sum(y[r, i] == 1 and y[r, j] == 1 for r in rows)
            cond[i, j] = nij / ni if ni else 0.0
            lift[i, j] = nij * len(rows) / (ni * nj) if ni and nj else 0.0
    return cond, lift


def _random_labels(seed, n=150, c=7):
    rng = np.random.default_rng(seed)
    base = rng.random((n, 1))
    y = (rng.random((n, c)) < 0.15 + 0.5 * base * np.linspace(0.2, 1.0, c)).astype(float)
    y[rng.random((n, c)) < 0.15] = nan
    y[:, -1] = 0.0                       # a class that never occurs
    return y


@pytest.mark.parametrize("seed", [0, 1])
def test_statistics_and_methods_match_loop_implementation(seed):
    y = _random_labels(seed)
    cond, lift = loop_statistics(y)
    np.testing.assert_allclose(cooccurrence_probabilities(y), cond, atol=1e-12)
    np.testing.assert_allclose(cooccurrence_counts(y).lift(), lift, atol=1e-12)
    c = y.shape[1]
    for t in (0.0, 0.3, 0.5):
        adj = (cond >= t) & ~np.eye(c, dtype=bool)
        adj[np.nansum(y, 0) == 0] = False
        for sym in (False, True):
            expected = adj | adj.T if sym else adj
            got = label_graph(y, "threshold", threshold=t, symmetric=sym).to_dense()
            np.testing.assert_array_equal(got, expected.astype(float))
    for tau, mc in ((1.0, 1), (1.3, 5)):
        both = cooccurrence_counts(y).both
        expected = (lift > tau) & (both >= mc)
        np.testing.assert_array_equal(label_graph(y, "lift", min_lift=tau, min_count=mc).to_dense(), expected)


@pytest.mark.parametrize("symmetric", [False, True])
def test_reweighting_matches_dense_formula(symmetric):
    y = _random_labels(2)
    cond, _ = loop_statistics(y)
    c, t, p = y.shape[1], 0.3, 0.2
    a = ((cond >= t) & ~np.eye(c, dtype=bool)).astype(float)
    a[np.nansum(y, 0) == 0] = 0
    if symmetric:
        a = np.maximum(a, a.T)
    expected = np.zeros((c, c))
    for i in range(c):                     # ML-GCN Eq. 8, entry by entry
        for j in range(c):
            if i == j:
                expected[i, j] = 1 - p
            elif a[i].sum() > 0:
                expected[i, j] = p * a[i, j] / a[i].sum()
    g = label_graph(y, "reweighted", threshold=t, p=p, symmetric=symmetric)
    np.testing.assert_allclose(g.to_dense(), expected, rtol=1e-6, atol=1e-7)
    rows_with_neighbours = a.sum(1) > 0
    np.testing.assert_allclose(g.to_dense().sum(1)[rows_with_neighbours], 1.0, rtol=1e-6)


def test_reweighted_graph_through_gcn_propagate_equals_dense():
    y = _random_labels(3)
    g = label_graph(y, "reweighted", threshold=0.3, p=0.2)
    a = torch.from_numpy(g.to_dense())               # A' with its explicit self loops
    deg = a.sum(1)
    a_hat = deg.rsqrt()[:, None] * a * deg.rsqrt()[None, :]
    x = torch.randn(y.shape[1], 5, dtype=torch.float64)
    out = ops.gcn_propagate(x, g.rowptr, g.col, g.value.double(), add_self_loops=g.add_self_loops)
    torch.testing.assert_close(out, a_hat @ x)
    # float32 features with the stored float32 weights
    out32 = ops.gcn_propagate(x.float(), g.rowptr, g.col, g.value, add_self_loops=g.add_self_loops)
    torch.testing.assert_close(out32, (a_hat @ x).float(), rtol=1e-5, atol=1e-5)
    # a binary graph goes through the op with the self loops it adds: Â = D̃^-1/2 (A + I) D̃^-1/2
    b = label_graph(y, "threshold", threshold=0.3)
    a = torch.from_numpy(b.to_dense()) + torch.eye(y.shape[1], dtype=torch.float64)
    a_hat = a.sum(1).rsqrt()[:, None] * a * a.sum(1).rsqrt()[None, :]
    torch.testing.assert_close(ops.gcn_propagate(x, b.rowptr, b.col, None, add_self_loops=b.add_self_loops),
                               a_hat @ x)


# -- report, serialisation, defaults, errors -----------------------------------------------------
def test_graph_report_hand_example():
    rep = graph_report(label_graph(HAND, "threshold", threshold=0.4), ["a", "b", "c", "d"])
    assert rep["edges"] == 10 and rep["possible_edges"] == 12 and rep["density"] == pytest.approx(10 / 12)
    assert rep["degree"] == {"a": 3, "b": 3, "c": 2, "d": 2}
    assert (rep["degree_min"], rep["degree_median"], rep["degree_max"]) == (2, 2.5, 3)
    assert rep["isolated"] == [] and rep["symmetric"] and not rep["weighted"]
    assert rep["self_loops"] == "added by the op"
    assert ["c", "a", None] in rep["edge_list"] and len(rep["edge_list"]) == 10
    rep = graph_report(label_graph(HAND, "reweighted", threshold=0.7, symmetric=False), ["a", "b", "c", "d"])
    # explicit self loops are not counted as edges
    assert rep["edges"] == 2 and rep["isolated"] == [] and not rep["symmetric"]
    assert rep["self_loops"] == "explicit" and rep["weighted"]
    assert rep["edge_list"] == [["c", "a", pytest.approx(0.2)], ["d", "b", pytest.approx(0.2)]]
    rep = graph_report(label_graph(HAND, "topk", k=2, min_lift=0.0, min_count=2))   # only 0 - 1
    assert rep["isolated"] == ["2", "3"] and rep["degree"] == {"0": 1, "1": 1, "2": 0, "3": 0}
    json.dumps(rep)
    with pytest.raises(ValueError, match="class_names"):
        graph_report(label_graph(HAND, "threshold"), ["a"])


def test_to_dict_roundtrip_and_default():
    for method in GRAPH_METHODS:
        g = label_graph(HAND, method, **({"min_count": 1} if "min_count" in GRAPH_METHODS[method] else {}))
        back = LabelGraph.from_dict(json.loads(json.dumps(g.to_dict())))
        assert _csr(back) == _csr(g) and back.add_self_loops == g.add_self_loops
        assert back.method == g.method and back.params == g.params
        assert (back.value is None) == (g.value is None)
        if g.value is not None:
            assert torch.equal(back.value, g.value)
    d = label_graph(_random_labels(4, n=600), **DEFAULT_GRAPH)
    assert d.method == DEFAULT_GRAPH["method"] and d.params == {k: v for k, v in DEFAULT_GRAPH.items() if k != "method"}
    assert label_graph(_random_labels(4, n=600)).params == d.params    # the default method's defaults


def test_classes_never_positive_and_all_unknown():
    y = HAND.copy()
    y[:, 3] = nan                                    # class 3 never known
    g = label_graph(y, "threshold", threshold=0.0, symmetric=False)
    dense = g.to_dense()
    assert not dense[3].any() and not dense[:, 3].any() and not dense.diagonal().any()
    g = label_graph(np.zeros((4, 3)), "threshold")
    assert g.rowptr.tolist() == [0, 0, 0, 0] and g.col.numel() == 0


def test_bad_input():
    with pytest.raises(ValueError, match="labels must be a 2-D"):
        label_graph(np.array([0, 1, 1]))
    with pytest.raises(ValueError, match=r"only 0, 1 or NaN .* -1.0 at row 0, column 1"):
        label_graph(np.array([[0, -1.0]]))
    with pytest.raises(ValueError, match="no rows"):
        label_graph(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="method must be one of"):
        label_graph(HAND, "pmi")
    with pytest.raises(TypeError, match="unexpected \\['p'\\]"):
        label_graph(HAND, "threshold", p=0.2)
    with pytest.raises(ValueError, match="threshold"):
        label_graph(HAND, "threshold", threshold=1.5)
    with pytest.raises(ValueError, match="p must be in"):
        label_graph(HAND, "reweighted", p=1.0)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        label_graph(HAND, "topk", k=0)
    with pytest.raises(ValueError, match="min_count"):
        label_graph(HAND, "lift", min_count=2.5)
    with pytest.raises(ValueError, match="rank_by"):
        label_graph(HAND, "topk", rank_by="pmi")
    with pytest.raises(ValueError, match="min_lift"):
        label_graph(HAND, "lift", min_lift=-1)


# -- the statistics script on fixtures shaped like the published tables ---------------------------
def _gz_csv(path, header, rows):
    with gzip.open(path, "wt", newline="") as fh:
        fh.write(",".join(header) + "\n")
        for r in rows:
            fh.write(",".join(r) + "\n")


def test_label_graph_stats_script(tmp_path):
    from fact_fast.data.labels.sets import NIH_CLASS_NAMES

    rng = np.random.default_rng(0)
    nih = []
    for i in range(60):
        found = [n for n in NIH_CLASS_NAMES if rng.random() < 0.2]
        nih.append([f"{i:08d}_000.png", "|".join(found) or "No Finding", "0", str(i), "50", "M", "PA", "1", "1", "0.1",
                    "0.1"])
    _gz_csv(tmp_path / "Data_Entry_2017_v2020.csv.gz",
            ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
             "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"], nih)
    chex_cols = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                 "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                 "Fracture", "Support Devices"]
    chex = [[f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.jpg", "Male", "60", "Frontal", "AP"]
            + [str(rng.choice(["1.0", "0.0", "-1.0", ""])) for _ in chex_cols] for i in range(60)]
    _gz_csv(tmp_path / "chexpert_train.csv.gz", ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + chex_cols, chex)
    names = ["cardiomegaly", "pleural effusion", "nodule", "normal"]
    pad = [[str(i), f"{i}.png", '"' + str([n for n in names if rng.random() < 0.4]).replace('"', '""') + '"']
           for i in range(60)]
    _gz_csv(tmp_path / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", ["", "ImageID", "Labels"], pad)
    env = {**os.environ, "PYTHONPATH": REPO}
    res = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "label_graph_stats.py"), "--tables",
                          str(tmp_path), "--synthetic", "300"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for needle in ("### NIH ChestX-ray14", "N = 60 images, C = 14 classes", "### CheXpert train, blank and uncertain = "
                   "unknown", "### PadChest", "C = 3 classes", "**(default)**", "precision / recall", "/ 182 |"):
        assert needle in out, needle
    res = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "label_graph_stats.py"), "--tables",
                          str(tmp_path / "missing")], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode != 0 and "label tables not found" in res.stderr
