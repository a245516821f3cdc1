"""Tests of fact_fast.data: the synthetic motif dataset ("synthetic_motifs"), real-data readers,
label graph, embeddings. The default synthetic benchmark is tested in test_synthetic_benchmark.py."""
import json
import os
import warnings

import numpy as np
import pytest
import torch

from fact_fast.data import (DATASETS, EMBEDDING_DIM, SYNTHETIC_CLASS_NAMES, MultiLabelDataset,
                            SyntheticComorbidity, build_dataset, cooccurrence_probabilities,
                            csr_to_dense, frequency_groups, hashed_embeddings, label_embeddings,
                            label_graph)
import importlib

le_mod = importlib.import_module("fact_fast.data.label_embeddings")
from fact_fast.data.label_sets import LABEL_SETS, NIH_CLASS_NAMES


# ----------------------------------------------------------------------------- synthetic
@pytest.fixture(scope="module")
def big_train():
    # labels only (cheap): a few thousand samples for distribution checks
    return SyntheticComorbidity("train", num_samples=6000, seed=0)


def test_synthetic_defaults_and_interface():
    ds = build_dataset("synthetic_motifs", "val", num_samples=16)
    assert isinstance(ds, MultiLabelDataset)
    assert ds.name == "synthetic_motifs" and len(ds) == 16
    assert ds.class_names == list(SYNTHETIC_CLASS_NAMES) and len(ds.class_names) == 12
    assert SyntheticComorbidity.class_names == SYNTHETIC_CLASS_NAMES
    assert ds.labels.dtype == np.float32 and ds.labels.shape == (16, 12)
    x, y = ds[3]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert y.shape == (12,) and y.dtype == torch.float32
    assert torch.equal(y, torch.from_numpy(ds.labels[3].astype(np.float32)))
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # grayscale replicated
    assert torch.equal(ds[-1][0], ds[15][0])
    with pytest.raises(IndexError):
        ds[16]
    assert [len(SyntheticComorbidity(s)) for s in ("train", "val", "test")] == [2400, 400, 800]


def test_synthetic_image_statistics():
    ds = SyntheticComorbidity("train", num_samples=200)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    assert torch.isfinite(x).all()
    assert abs(x.mean().item()) < 0.25
    assert 0.7 < x.std().item() < 1.3
    # images differ from each other
    assert not torch.equal(x[0], x[1])


@pytest.mark.parametrize("size", [32, 224])
def test_synthetic_other_sizes(size):
    ds = SyntheticComorbidity("test", image_size=size, num_samples=4)
    x, _ = ds[0]
    assert x.shape == (3, size, size) and torch.isfinite(x).all()


def test_synthetic_determinism_and_seed():
    a = SyntheticComorbidity("train", num_samples=64, seed=3)
    b = SyntheticComorbidity("train", num_samples=64, seed=3)
    c = SyntheticComorbidity("train", num_samples=64, seed=4)
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.images, b.images)  # bitwise
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.labels, c.labels)
    # per-sample seeding: independent of num_samples and of render order (workers)
    d = SyntheticComorbidity("train", num_samples=10, seed=3)
    assert np.array_equal(d.labels, a.labels[:10])
    assert np.array_equal(d.render_one(7), a.images[7])


def test_synthetic_dataloader_workers_match():
    ds = SyntheticComorbidity("val", num_samples=12, seed=1)
    serial = torch.cat([x for x, _ in torch.utils.data.DataLoader(ds, batch_size=4)])
    fresh = SyntheticComorbidity("val", num_samples=12, seed=1)
    par = torch.cat([x for x, _ in torch.utils.data.DataLoader(fresh, batch_size=4, num_workers=2)])
    assert torch.equal(serial, par)


def test_synthetic_splits_disjoint():
    tr = SyntheticComorbidity("train", num_samples=200)
    va = SyntheticComorbidity("val", num_samples=200)
    te = SyntheticComorbidity("test", num_samples=200)
    ids = [set(d.sample_ids.tolist()) for d in (tr, va, te)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    h = [{im.tobytes() for im in d.images} for d in (tr, va, te)]
    assert not (h[0] & h[1]) and not (h[0] & h[2]) and not (h[1] & h[2])
    # same distribution: prevalence of the splits close
    assert np.abs(tr.labels.mean(0) - va.labels.mean(0)).max() < 0.12


def test_synthetic_prevalence_long_tailed(big_train):
    prior = big_train.prevalence
    obs = big_train.labels.mean(axis=0)
    assert np.all(np.diff(prior) < 0)
    assert prior[0] > 5 * prior[-1]
    np.testing.assert_allclose(obs, prior, atol=0.025)
    # monotone-ish: Spearman-like check, first third clearly above last third
    assert obs[:4].min() > obs[-4:].max()


def test_synthetic_empty_fraction(big_train):
    empty = (big_train.labels.sum(axis=1) == 0).mean()
    assert 0.14 <= empty <= 0.22
    assert abs(big_train.expected_empty_fraction - 0.18) < 1e-6


def test_synthetic_cooccurrence_follows_graph(big_train):
    y = big_train.labels.astype(bool)
    g = big_train.ground_truth_graph
    assert g.dtype == bool and g.shape == (12, 12) and not g.diagonal().any()
    assert g.sum() >= 6
    for i, j in np.argwhere(g):
        cond = y[y[:, i], j].mean()
        marg = y[:, j].mean()
        assert cond > marg + 0.15 and cond > 1.4 * marg, (i, j, cond, marg)


def test_synthetic_bad_args():
    with pytest.raises(ValueError, match="split"):
        SyntheticComorbidity("training")
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticComorbidity("train", num_classes=13)
    small = SyntheticComorbidity("train", num_classes=5, num_samples=50)
    assert small.labels.shape == (50, 5) and small.class_names == SYNTHETIC_CLASS_NAMES[:5]


def test_synthetic_motifs_are_visible():
    """Each class changes its own image region: mean image with class c minus without it."""
    ds = SyntheticComorbidity("train", num_samples=800, seed=0)
    imgs = ds.images.astype(np.float32)
    for c in range(12):
        on = ds.labels[:, c] == 1
        if on.sum() < 5:
            continue
        diff = imgs[on].mean(0) - imgs[~on].mean(0)
        assert diff.max() > 25, c  # a bright motif in some region (uint8 scale)


# ----------------------------------------------------------------------------- registry
def test_build_dataset_errors():
    assert set(DATASETS) >= {"synthetic", "synthetic_motifs", "csv", "chestmnist", "nih"}
    with pytest.raises(ValueError, match=r"name.*synthetic"):
        build_dataset("imagenet", "train")
    with pytest.raises(ValueError, match=r"split.*train"):
        build_dataset("synthetic", "dev")


# ----------------------------------------------------------------------------- real readers
def _write_png(path, value, size=(10, 12), mode="L"):
    from PIL import Image

    arr = np.full((size[1], size[0]), value, dtype=np.uint8)
    im = Image.fromarray(arr, mode="L")
    if mode != "L":
        im = im.convert(mode)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im.save(path)


def test_csv_dataset_with_split_column(tmp_path):
    rows = [("a.png", 1, 0, "train"), ("b.png", 0, 1, "train"), ("c.png", 1, 1, "val"),
            ("sub/d.png", 0, 0, "test")]
    for i, (p, *_r) in enumerate(rows):
        _write_png(str(tmp_path / p), 40 * i, mode="RGB" if i == 1 else "L")
    with open(tmp_path / "labels.csv", "w") as f:
        f.write("path,Effusion,Mass,split\n")
        for p, a, b, s in rows:
            f.write(f"{p},{a},{b},{s}\n")
    tr = build_dataset("csv", "train", root=str(tmp_path), image_size=16)
    assert tr.class_names == ["Effusion", "Mass"]
    assert tr.labels.tolist() == [[1, 0], [0, 1]]
    x, y = tr[1]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(x, ((torch.full((3, 16, 16), 40 / 255.0)) - mean) / std, atol=1e-5, rtol=0)
    assert y.tolist() == [0.0, 1.0]
    te = build_dataset("csv", "test", root=str(tmp_path), image_size=8)
    assert len(te) == 1 and te.labels.tolist() == [[0, 0]]
    only = build_dataset("csv", "val", root=str(tmp_path), label_cols=["Mass"])
    assert only.class_names == ["Mass"] and only.labels.tolist() == [[1]]
    with pytest.raises(ValueError, match="label_cols"):
        build_dataset("csv", "val", root=str(tmp_path), label_cols=["Nope"])
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        build_dataset("csv", "val", root=str(tmp_path), csv="nothere.csv")
    os.remove(tmp_path / "a.png")
    with pytest.warns(RuntimeWarning, match="a.png"):  # a missing file is a listed skip, not a crash
        assert tr[0] is None


def test_csv_dataset_random_split(tmp_path):
    with open(tmp_path / "t.csv", "w") as f:
        f.write("img,A,B,C\n")
        for i in range(50):
            f.write(f"x{i}.png,{i % 2},{(i // 2) % 2},0\n")
    parts = {s: build_dataset("csv", s, root=str(tmp_path), csv="t.csv", seed=5) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [35, 5, 10]
    allp = sum((parts[s].paths for s in parts), [])
    assert len(set(allp)) == 50
    again = build_dataset("csv", "val", root=str(tmp_path), csv="t.csv", seed=5)
    assert again.paths == parts["val"].paths
    other = build_dataset("csv", "val", root=str(tmp_path), csv="t.csv", seed=6)
    assert other.paths != parts["val"].paths
    with open(tmp_path / "bad.csv", "w") as f:
        f.write("img,A\nx.png,2\n")
    with pytest.raises(ValueError, match="0/1"):
        build_dataset("csv", "train", root=str(tmp_path), csv="bad.csv")


def test_chestmnist(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n in (("train", 6), ("val", 2), ("test", 3)):
        arrays[f"{s}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{s}_labels"] = rng.integers(0, 2, (n, 14), dtype=np.uint8)
    np.savez(tmp_path / "chestmnist.npz", **arrays)
    ds = build_dataset("chestmnist", "test", root=str(tmp_path), image_size=32)
    assert ds.class_names == NIH_CLASS_NAMES and len(ds) == 3
    np.testing.assert_array_equal(ds.labels, arrays["test_labels"])
    x, y = ds[2]
    assert x.shape == (3, 32, 32)
    ds28 = build_dataset("chestmnist", "val", root=str(tmp_path / "chestmnist.npz"), image_size=28)
    x28, _ = ds28[1]
    expect = (torch.from_numpy(arrays["val_images"][1].astype(np.float32) / 255.0) - 0.485) / 0.229
    torch.testing.assert_close(x28[0], expect, atol=1e-5, rtol=0)
    with pytest.raises(FileNotFoundError, match="chestmnist"):
        build_dataset("chestmnist", "train", root=str(tmp_path / "empty_dir_missing"))


def test_nih(tmp_path):
    entries = [
        ("00000001_000.png", "Cardiomegaly|Effusion", "1"),
        ("00000001_001.png", "No Finding", "1"),
        ("00000002_000.png", "Hernia", "2"),
        ("00000003_000.png", "Mass|Nodule|Pleural_Thickening", "3"),
        ("00000004_000.png", "No Finding", "4"),
        ("00000005_000.png", "Atelectasis", "5"),
    ]
    with open(tmp_path / "Data_Entry_2017.csv", "w") as f:
        f.write("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age\n")
        for name, lab, pid in entries:
            f.write(f"{name},{lab},0,{pid},50\n")
    (tmp_path / "train_val_list.txt").write_text("\n".join(e[0] for e in entries[:5]) + "\n")
    (tmp_path / "test_list.txt").write_text(entries[5][0] + "\n")
    for k, (name, _, _) in enumerate(entries):
        sub = "images_001/images" if k < 3 else "images_002/images"
        _write_png(str(tmp_path / sub / name), 20 * k)
    te = build_dataset("nih", "test", root=str(tmp_path), image_size=16)
    assert len(te) == 1 and te.labels[0].tolist() == [1] + [0] * 13
    x, y = te[0]
    assert x.shape == (3, 16, 16)
    tr = build_dataset("nih", "train", root=str(tmp_path), val_fraction=0.25, seed=0)
    va = build_dataset("nih", "val", root=str(tmp_path), val_fraction=0.25, seed=0)
    assert len(tr) + len(va) == 5 and len(va) >= 1
    assert not set(tr.patient_ids) & set(va.patient_ids)  # split by patient
    assert sorted(tr.image_names + va.image_names) == sorted(e[0] for e in entries[:5])
    lab = dict(zip(tr.image_names + va.image_names, np.concatenate([tr.labels, va.labels])))
    ci = {n: k for k, n in enumerate(NIH_CLASS_NAMES)}
    assert lab["00000001_001.png"].sum() == 0
    assert set(np.flatnonzero(lab["00000001_000.png"])) == {ci["Cardiomegaly"], ci["Effusion"]}
    assert set(np.flatnonzero(lab["00000003_000.png"])) == {ci["Mass"], ci["Nodule"], ci["Pleural_Thickening"]}
    for i in range(len(tr)):
        tr[i]  # all images found in images_*/images
    with pytest.raises(FileNotFoundError, match="Data_Entry_2017"):
        build_dataset("nih", "train", root=str(tmp_path / "images_001"))


# ----------------------------------------------------------------------------- label graph
# N = 5 samples, C = 4 classes; class 3 never occurs.
HAND_LABELS = np.array([
    [1, 1, 0, 0],
    [1, 1, 0, 0],
    [1, 0, 1, 0],
    [1, 0, 0, 0],
    [0, 1, 0, 0],
], dtype=np.uint8)
# N0 = 4, N1 = 3, N2 = 1, N3 = 0; N01 = 2, N02 = 1, N12 = 0
HAND_P = np.array([
    [0, 2 / 4, 1 / 4, 0],
    [2 / 3, 0, 0, 0],
    [1 / 1, 0, 0, 0],
    [0, 0, 0, 0],
])


def _csr(rp, col):
    return rp.tolist(), col.tolist()


def test_cooccurrence_hand_example():
    np.testing.assert_allclose(cooccurrence_probabilities(HAND_LABELS), HAND_P)
    np.testing.assert_allclose(cooccurrence_probabilities(torch.from_numpy(HAND_LABELS)), HAND_P)


def test_label_graph_hand_example():
    rp, col = label_graph(HAND_LABELS, threshold=0.4, symmetric=False)
    assert rp.dtype == torch.int64 and col.dtype == torch.int64
    # edges 0->1 (0.5), 1->0 (0.67), 2->0 (1.0)
    assert _csr(rp, col) == ([0, 1, 2, 3, 3], [1, 0, 0])
    rp, col = label_graph(HAND_LABELS, threshold=0.4, symmetric=True)
    # plus 0->2 from 2->0
    assert _csr(rp, col) == ([0, 2, 3, 4, 4], [1, 2, 0, 0])
    # threshold edge: 0.5 is kept at 0.5 (>=), dropped just above
    assert _csr(*label_graph(HAND_LABELS, threshold=0.5, symmetric=False)) == ([0, 1, 2, 3, 3], [1, 0, 0])
    assert _csr(*label_graph(HAND_LABELS, threshold=0.51, symmetric=False)) == ([0, 0, 1, 2, 2], [0, 0])
    assert _csr(*label_graph(HAND_LABELS, threshold=0.25, symmetric=False)) == ([0, 2, 3, 4, 4], [1, 2, 0, 0])
    assert _csr(*label_graph(HAND_LABELS, threshold=1.0, symmetric=True)) == ([0, 1, 1, 2, 2], [2, 0])


def test_label_graph_zero_count_and_no_self_loops():
    # threshold 0: every occurring class links to every other class, the absent class 3 to none
    rp, col = label_graph(HAND_LABELS, threshold=0.0, symmetric=False)
    dense = csr_to_dense(rp, col)
    assert not dense.diagonal().any()
    assert not dense[3].any()
    assert dense[:3].sum() == 9
    rp, col = label_graph(np.zeros((4, 3), np.uint8))
    assert rp.tolist() == [0, 0, 0, 0] and col.numel() == 0
    # columns sorted within each row on a bigger random case
    y = (np.random.default_rng(0).random((300, 9)) < 0.4).astype(np.uint8)
    rp, col = label_graph(y, threshold=0.3)
    for r in range(9):
        seg = col[rp[r]:rp[r + 1]].tolist()
        assert seg == sorted(seg) and r not in seg
    d = csr_to_dense(rp, col)
    assert np.array_equal(d, d.T)


def test_label_graph_bad_input():
    with pytest.raises(ValueError, match="labels"):
        label_graph(np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="0/1"):
        label_graph(np.array([[0, 2]]))
    with pytest.raises(ValueError, match="threshold"):
        label_graph(HAND_LABELS, threshold=1.5)


def test_frequency_groups():
    # prevalences 0.5, 0.05, 0.005 -> CXR-LT thresholds (10 %, 1 %)
    prev = np.array([0.5, 0.2, 0.05, 0.02, 0.005])
    assert frequency_groups(prev) == ["head", "head", "medium", "medium", "tail"]
    assert frequency_groups(prev, method="threshold", head=0.3, tail=0.03) == \
        ["head", "medium", "medium", "tail", "tail"]
    # terciles when thresholds leave a group empty
    prev6 = np.array([0.4, 0.3, 0.2, 0.15, 0.12, 0.11])
    assert frequency_groups(prev6) == ["head", "head", "medium", "medium", "tail", "tail"]
    assert frequency_groups(prev6, method="threshold") == ["head"] * 6
    y = SyntheticComorbidity("train", num_samples=500).labels
    g = frequency_groups(y)
    assert len(g) == 12 and set(g) == {"head", "medium", "tail"}
    assert g[0] == "head" and g[-1] == "tail"
    with pytest.raises(ValueError, match="method"):
        frequency_groups(prev, method="quartile")


# ----------------------------------------------------------------------------- embeddings
def test_shipped_embeddings_are_real_and_normalized():
    d = os.path.join(os.path.dirname(le_mod.__file__), "embeddings")
    for set_name, (names, _tmpl) in LABEL_SETS.items():
        emb = np.load(os.path.join(d, f"{set_name}.npy"))
        meta = json.load(open(os.path.join(d, f"{set_name}.json")))
        assert emb.shape == (len(names), EMBEDDING_DIM) and emb.dtype == np.float32
        assert meta["class_names"] == names and meta["dim"] == 384
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        # distinct rows
        sim = emb @ emb.T
        assert (sim[~np.eye(len(names), dtype=bool)] < 0.999).all()


def test_label_embeddings_lookup():
    e = label_embeddings(SYNTHETIC_CLASS_NAMES, dataset="synthetic_motifs")
    assert e.shape == (12, 384) and e.dtype == torch.float32
    nih = label_embeddings(NIH_CLASS_NAMES, dataset="nih")
    assert nih.shape == (14, 384)
    assert torch.equal(label_embeddings(NIH_CLASS_NAMES, dataset="chestmnist"), nih)
    # matched by exact class names without a dataset, any order / subset
    sub = label_embeddings(["Hernia", "Atelectasis"])
    assert torch.equal(sub, nih[[13, 0]]) or torch.equal(sub, label_embeddings(["Hernia", "Atelectasis"], dataset="nih"))
    assert label_embeddings(LABEL_SETS["cxr_lt"][0], dataset="cxr-lt").shape == (40, 384)
    assert label_embeddings(LABEL_SETS["odir"][0]).shape == (8, 384)
    assert label_embeddings(LABEL_SETS["rsna_ihd"][0], dataset="rsna").shape == (6, 384)
    # a real sentence model puts related findings closer than unrelated ones
    cx = dict(zip(LABEL_SETS["cxr_lt"][0], label_embeddings(LABEL_SETS["cxr_lt"][0], dataset="cxr_lt")))
    assert (cx["Rib Fracture"] @ cx["Clavicle Fracture"]) > (cx["Rib Fracture"] @ cx["Support Devices"])


def test_label_embeddings_user_path(tmp_path):
    p = tmp_path / "e.npy"
    arr = np.arange(6, dtype=np.float64).reshape(2, 3)
    np.save(p, arr)
    e = label_embeddings(["a", "b"], path=str(p))
    assert e.dtype == torch.float32 and torch.equal(e, torch.from_numpy(arr.astype(np.float32)))
    with pytest.raises(ValueError, match="path"):
        label_embeddings(["a", "b", "c"], path=str(p))
    with pytest.raises(FileNotFoundError):
        label_embeddings(["a"], path=str(tmp_path / "missing.npy"))


def test_label_embeddings_fallback(monkeypatch):
    monkeypatch.setattr(le_mod, "_warned_fallback", False)
    names = ["Left wrist fracture", "Right wrist fracture", "Brain tumour"]
    with pytest.warns(UserWarning, match="hashed"):
        e = label_embeddings(names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e2 = label_embeddings(names)  # warned only once
    assert torch.equal(e, e2) and e.shape == (3, 384)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    assert (e[0] @ e[1]) > (e[0] @ e[2])
    np.testing.assert_array_equal(hashed_embeddings(names), e.numpy())
