"""Tests of fact_fast.data: the synthetic motif dataset ("synthetic_motifs"), the registry, embeddings
(the default synthetic benchmark: test_synthetic_benchmark.py; readers: test_data_readers.py and
test_data_<dataset>.py; cache: test_data_cache.py; transforms: test_transforms.py; label graph:
test_label_graph.py)."""
import json
import os
import warnings

import numpy as np
import pytest
import torch

from fact_fast.data import (DATASETS, EMBEDDING_DIM, SYNTHETIC_CLASS_NAMES, MultiLabelDataset,
                            SyntheticComorbidity, build_dataset, hashed_embeddings, label_embeddings)
from fact_fast.data.labels import embeddings as le_mod
from fact_fast.data.labels.sets import LABEL_SETS, NIH_CLASS_NAMES


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


# ----------------------------------------------------------------------------- embeddings
def test_shipped_embeddings_are_real_and_normalized():
    d = le_mod.EMBEDDINGS_DIR
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
