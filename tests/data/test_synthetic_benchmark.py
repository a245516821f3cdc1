"""Tests of the default synthetic benchmark (fact_fast.data.synthetic, "synthetic"):
determinism, the label statistics it inherits from NIH ChestX-ray14, training-label noise,
polysemous forms built from shared primitives, clutter, and that every form is drawn."""
import json
import warnings

import numpy as np
import pytest
import torch

from fact_fast.data import (DATASETS, NIH_CLASS_NAMES, MultiLabelDataset, SyntheticBenchmark,
                            build_dataset, label_embeddings)
from fact_fast.data import synthetic as sb
from fact_fast.data.synthetic.anatomy import Anatomy, render_clutter
from fact_fast.data.synthetic.primitives import Canvas

C = len(NIH_CLASS_NAMES)
IDX = {n: i for i, n in enumerate(NIH_CLASS_NAMES)}


@pytest.fixture(scope="module")
def big_train():
    """Labels and metadata only (images are rendered lazily): 40k samples for the statistics."""
    return SyntheticBenchmark("train", num_samples=40000, seed=0)


@pytest.fixture(scope="module")
def nih_table():
    """The shipped table read straight from its JSON (not through the module under test)."""
    with open(sb.LABEL_TABLE) as f:
        table = json.load(f)
    masks = np.array([m for m, _ in table["vectors"]])
    counts = np.array([n for _, n in table["vectors"]], dtype=np.float64)
    y = np.array([[(m >> c) & 1 for c in range(C)] for m in masks], dtype=np.float64)
    return table, y, counts / counts.sum()


# ----------------------------------------------------------------------------- interface
def test_registered_as_default_and_interface():
    assert "synthetic" in DATASETS and "synthetic_motifs" in DATASETS
    ds = build_dataset("synthetic", "val", num_samples=8, image_size=128)
    assert isinstance(ds, SyntheticBenchmark) and isinstance(ds, MultiLabelDataset)
    assert ds.name == "synthetic" and ds.split == "val" and len(ds) == 8
    assert ds.class_names == list(NIH_CLASS_NAMES) and ds.channels == "gray"
    assert ds.labels.dtype == np.float32 and ds.labels.shape == (8, C)
    assert set(np.unique(ds.labels)) <= {0.0, 1.0}
    raw = ds.load_raw(2)
    assert raw.dtype == np.uint8 and raw.shape == (128, 128)
    x, y = ds[2]
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    assert torch.equal(y, torch.from_numpy(ds.labels[2]))
    with pytest.raises(IndexError):
        ds[8]
    sizes = {s: len(SyntheticBenchmark(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 3000, "val": 600, "test": 1500}


def test_normalisation_constants_fit_the_images():
    ds = build_dataset("synthetic", "train", num_samples=64, train=False)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    assert abs(x.mean().item()) < 0.3 and 0.7 < x.std().item() < 1.3


@pytest.mark.parametrize("size", [32, 64, 224])
def test_other_sizes(size):
    ds = SyntheticBenchmark("test", image_size=size, num_samples=3)
    raw = ds.load_raw(1)
    assert raw.shape == (size, size) and raw.dtype == np.uint8
    assert raw.std() > 10  # an image, not a constant


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        SyntheticBenchmark("dev")
    with pytest.raises(ValueError, match="image_size"):
        SyntheticBenchmark("train", image_size=16)
    with pytest.raises(ValueError, match="num_samples"):
        SyntheticBenchmark("train", num_samples=-1)
    with pytest.raises(ValueError, match="missed_label_rate"):
        SyntheticBenchmark("train", missed_label_rate=1.0)
    ds = SyntheticBenchmark("train", num_samples=200)
    i = int(np.flatnonzero(ds.clean_labels.sum(1) == 0)[0])
    with pytest.raises(ValueError, match="findings"):
        ds.render_one(i, findings=[0])


def test_label_embeddings_are_the_shipped_nih_ones():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the hashed fallback would warn
        e = label_embeddings(SyntheticBenchmark("val", num_samples=1).class_names, dataset="synthetic")
    assert torch.equal(e, label_embeddings(NIH_CLASS_NAMES, dataset="nih"))


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_bits_other_seed_differs():
    a = SyntheticBenchmark("train", num_samples=24, seed=5)
    b = SyntheticBenchmark("train", num_samples=24, seed=5)
    c = SyntheticBenchmark("train", num_samples=24, seed=6)
    for attr in ("labels", "clean_labels", "forms", "presentation"):
        assert np.array_equal(getattr(a, attr), getattr(b, attr)), attr
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(SyntheticBenchmark("train", num_samples=500, seed=5).clean_labels,
                              SyntheticBenchmark("train", num_samples=500, seed=6).clean_labels)


def test_samples_independent_of_num_samples_and_render_order():
    a = SyntheticBenchmark("val", num_samples=30, seed=2)
    d = SyntheticBenchmark("val", num_samples=12, seed=2)
    assert np.array_equal(d.labels, a.labels[:12]) and np.array_equal(d.forms, a.forms[:12])
    # render d back to front, a front to back
    back = [d.load_raw(i).copy() for i in reversed(range(12))][::-1]
    assert np.array_equal(np.stack(back), a.images[:12])
    assert np.array_equal(a.render_one(7), a.images[7])


def test_dataloader_workers_give_identical_samples():
    ds = build_dataset("synthetic", "val", num_samples=10, seed=1, image_size=64)
    serial = [(x, y) for x, y in torch.utils.data.DataLoader(ds, batch_size=4)]
    fresh = build_dataset("synthetic", "val", num_samples=10, seed=1, image_size=64)
    par = [(x, y) for x, y in torch.utils.data.DataLoader(fresh, batch_size=4, num_workers=2)]
    assert torch.equal(torch.cat([x for x, _ in serial]), torch.cat([x for x, _ in par]))
    assert torch.equal(torch.cat([y for _, y in serial]), torch.cat([y for _, y in par]))


def test_splits_are_disjoint():
    sets = {s: SyntheticBenchmark(s, num_samples=40, seed=0, image_size=64) for s in ("train", "val", "test")}
    ids = [set(d.sample_ids.tolist()) for d in sets.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    hashes = [{im.tobytes() for im in d.images} for d in sets.values()]
    assert not (hashes[0] & hashes[1] or hashes[0] & hashes[2] or hashes[1] & hashes[2])


# ----------------------------------------------------------------------------- comorbidity
def test_table_is_the_nih_label_distribution(nih_table):
    table, y, p = nih_table
    assert table["class_names"] == list(NIH_CLASS_NAMES) and table["num_rows"] == 112120
    prev = p @ y
    # published NIH ChestX-ray14 facts: Infiltration most frequent (~17.7 %), Hernia rarest
    # (~0.2 %), ~53.8 % "No Finding"
    assert NIH_CLASS_NAMES[int(np.argmax(prev))] == "Infiltration" and abs(prev.max() - 0.177) < 0.002
    assert NIH_CLASS_NAMES[int(np.argmin(prev))] == "Hernia" and abs(prev.min() - 0.0020) < 0.0003
    assert abs(p[y.sum(1) == 0].sum() - 0.538) < 0.002


def test_prevalence_long_tail_and_no_finding(big_train, nih_table):
    _, y, p = nih_table
    expected = p @ y
    obs = big_train.clean_labels.mean(axis=0)
    n = len(big_train)
    tol = 4 * np.sqrt(expected * (1 - expected) / n) + 1e-3
    assert np.all(np.abs(obs - expected) < tol), (obs, expected)
    assert obs.max() > 0.15            # head
    assert obs.min() < 0.01            # long tail below 1 %
    no_finding = (big_train.clean_labels.sum(axis=1) == 0).mean()
    assert 0.52 < no_finding < 0.56
    # multi-finding images exist with the real frequency (~18.6 % with 2+ findings)
    assert 0.16 < (big_train.clean_labels.sum(axis=1) >= 2).mean() < 0.21


def _lift(y, a, b):
    return (y[:, a] * y[:, b]).mean() / (y[:, a].mean() * y[:, b].mean())


@pytest.mark.parametrize("a,b", [("Pneumonia", "Edema"), ("Pneumothorax", "Emphysema"),
                                 ("Cardiomegaly", "Effusion"), ("Fibrosis", "Pleural_Thickening"),
                                 ("Mass", "Nodule"), ("Atelectasis", "Effusion")])
def test_correlated_pairs_cooccur(big_train, a, b):
    assert _lift(big_train.clean_labels, IDX[a], IDX[b]) > 1.5


@pytest.mark.parametrize("a,b", [("Pneumothorax", "Infiltration"), ("Emphysema", "Infiltration"),
                                 ("Pneumothorax", "Consolidation")])
def test_independent_pairs_have_lift_near_one(big_train, a, b):
    assert abs(_lift(big_train.clean_labels, IDX[a], IDX[b]) - 1.0) < 0.35


# ----------------------------------------------------------------------------- label noise
def test_train_labels_miss_positives_at_the_set_rate(big_train):
    clean, noisy = big_train.clean_labels, big_train.labels
    assert np.all(noisy <= clean)  # only missed positives, never invented ones
    rate = ((clean == 1) & (noisy == 0)).sum() / (clean == 1).sum()
    assert abs(rate - big_train.missed_label_rate) < 0.01 and big_train.missed_label_rate == 0.1
    # a missed positive is still in the image's metadata
    missed = (clean == 1) & (noisy == 0)
    assert np.all(big_train.forms[missed] >= 0)


def test_val_and_test_labels_are_clean():
    for split in ("val", "test"):
        ds = SyntheticBenchmark(split, num_samples=3000, missed_label_rate=0.3)
        assert ds.missed_label_rate == 0.0
        assert np.array_equal(ds.labels, ds.clean_labels) and ds.labels.sum() > 0


def test_missed_label_rate_setting():
    none = SyntheticBenchmark("train", num_samples=3000, missed_label_rate=0.0)
    assert np.array_equal(none.labels, none.clean_labels)
    low = SyntheticBenchmark("train", num_samples=3000, missed_label_rate=0.1)
    high = SyntheticBenchmark("train", num_samples=3000, missed_label_rate=0.3)
    assert np.array_equal(low.clean_labels, high.clean_labels)
    # a larger rate misses a superset of the positives
    assert np.all(high.labels <= low.labels)
    rate = 1 - high.labels.sum() / high.clean_labels.sum()
    assert abs(rate - 0.3) < 0.04


# ----------------------------------------------------------------------------- polysemy
def test_forms_are_built_from_a_shared_vocabulary():
    assert list(sb.FORMS) == list(NIH_CLASS_NAMES)
    owners = {}
    for name, forms in sb.FORMS.items():
        assert 2 <= len(forms) <= 3, name
        assert len({f.name for f in forms}) == len(forms)
        for f in forms:
            assert f.primitives and set(f.primitives) <= set(sb.PRIMITIVES), (name, f.name)
            for p in f.primitives:
                owners.setdefault(p, set()).add(name)
    # a class's forms look different: its forms do not all use the same primitives
    differing = [n for n, fs in sb.FORMS.items() if len({f.primitives for f in fs}) > 1]
    assert len(differing) >= 11, differing
    # most classes share a primitive with another class, and primitives are reused widely
    sharing = [n for n, fs in sb.FORMS.items()
               if any(len(owners[p]) > 1 for f in fs for p in f.primitives)]
    assert len(sharing) >= 12, sharing
    assert sum(len(o) >= 3 for o in owners.values()) >= 4
    # the designed look-alikes
    for a, b, prim in [("Infiltration", "Pneumonia", "blobs"), ("Infiltration", "Fibrosis", "reticular"),
                       ("Atelectasis", "Consolidation", "wedge"), ("Mass", "Nodule", "disc"),
                       ("Nodule", "Emphysema", "ring"), ("Atelectasis", "Edema", "stripes")]:
        assert {a, b} <= owners[prim], (a, b, prim)


def test_every_form_and_presentation_occurs(big_train):
    y = big_train.clean_labels == 1
    forms, pres = big_train.forms, big_train.presentation
    assert np.all((forms >= 0) == y) and np.all((pres >= 0) == y)  # metadata exactly where positive
    for c, name in enumerate(NIH_CLASS_NAMES):
        n_forms = len(sb.FORMS[name])
        counts = np.bincount(forms[y[:, c], c], minlength=n_forms)
        assert len(counts) == n_forms and counts.min() > 0, (name, counts)
        assert counts.min() / counts.sum() > 0.5 / n_forms  # forms drawn ~uniformly
    freq = np.bincount(pres[y], minlength=len(sb.PRESENTATIONS)) / y.sum()
    np.testing.assert_allclose(freq, sb.PRESENTATION_PROBS, atol=0.01)
    assert big_train.form_name(int(np.flatnonzero(y[:, 0])[0]), 0) in {f.name for f in sb.FORMS["Atelectasis"]}
    assert big_train.form_name(int(np.flatnonzero(~y[:, 0])[0]), 0) is None


def test_every_form_is_drawn(big_train):
    """Removing a clear finding from its image changes the image where the finding is."""
    small = SyntheticBenchmark("train", num_samples=4000, seed=0, image_size=96)
    y = small.clean_labels == 1
    clear = small.presentation == sb.PRESENTATIONS.index("clear")
    for c, name in enumerate(NIH_CLASS_NAMES):
        for f, form in enumerate(sb.FORMS[name]):
            idx = np.flatnonzero(y[:, c] & clear[:, c] & (small.forms[:, c] == f))
            assert len(idx) > 0, (name, form.name)
            i = int(idx[0])
            others = [k for k in np.flatnonzero(y[i]) if k != c]
            with_it = small.render_one(i).astype(np.int16)
            without = small.render_one(i, findings=others).astype(np.int16)
            diff = np.abs(with_it - without)
            assert diff.max() >= 25, (name, form.name, diff.max())     # visible contrast
            assert (diff >= 10).mean() > 0.002, (name, form.name)      # over more than a speck
            assert (diff >= 10).mean() < 0.5, (name, form.name)        # not the whole image


def test_clutter_in_every_image():
    """Electrodes, wires and specks are drawn whatever the labels (their own stream)."""
    for i in range(12):
        rng = np.random.default_rng(i)
        anat = Anatomy.draw(rng)
        cv = Canvas(96)
        render_clutter(cv, anat, rng)
        assert (cv.img > 0.1).sum() >= 20, i  # at least a ring and a wire


def test_presentations_change_the_instance():
    """Faint instances have less contrast than clear ones, small ones fewer changed pixels."""
    ds = SyntheticBenchmark("train", num_samples=6000, seed=3, image_size=128)
    y = ds.clean_labels == 1
    stats = {p: [] for p in ("clear", "faint", "small")}
    c = IDX["Nodule"]
    for p in stats:
        idx = np.flatnonzero(y[:, c] & (ds.presentation[:, c] == sb.PRESENTATIONS.index(p)))[:12]
        for i in idx:
            others = [k for k in np.flatnonzero(y[i]) if k != c]
            d = np.abs(ds.render_one(i).astype(np.int16) - ds.render_one(i, findings=others).astype(np.int16))
            stats[p].append((d.max(), (d >= 8).sum()))
    clear, faint, small = (np.median(np.array(stats[p]), axis=0) for p in ("clear", "faint", "small"))
    assert faint[0] < 0.7 * clear[0]
    assert small[1] < 0.8 * clear[1]


# ----------------------------------------------------------------------------- multi-view studies
@pytest.fixture(scope="module")
def two_views():
    return SyntheticBenchmark("train", num_samples=800, seed=4, image_size=64, views=2)


def test_one_view_is_the_default_dataset():
    a = SyntheticBenchmark("val", num_samples=6, seed=1, image_size=64)
    b = SyntheticBenchmark("val", num_samples=6, seed=1, image_size=64, views=1, view_only_rate=0.9)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(b.visible, b.clean_labels > 0)
    assert b.study_ids is None


def test_studies_keep_the_label_vectors_and_repeat_them_per_view(two_views):
    one = SyntheticBenchmark("train", num_samples=800, seed=4, image_size=64)
    assert len(two_views) == 1600 and two_views.study_ids[:4] == ["train-0", "train-0", "train-1", "train-1"]
    for name in ("labels", "clean_labels", "forms", "presentation"):
        np.testing.assert_array_equal(getattr(two_views, name)[0::2], getattr(one, name))
        np.testing.assert_array_equal(getattr(two_views, name)[1::2], getattr(one, name))
    assert len(set(two_views.sample_ids.tolist())) == 1600


@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
def test_findings_shown_in_one_view_at_the_set_rate(rate):
    ds = SyntheticBenchmark("train", num_samples=1500, seed=2, image_size=64, views=2, view_only_rate=rate)
    pos = ds.clean_labels[0::2] > 0
    shown = ds.visible.reshape(-1, 2, C).sum(axis=1)
    assert np.all(shown[pos] >= 1) and np.all(shown[~pos] == 0)  # a finding is always in some view
    one_view = (shown[pos] == 1).mean()
    assert one_view == pytest.approx(rate, abs=0.03)
    if 0 < rate < 1:  # the view that shows it alone is either one
        in_view0 = ds.visible.reshape(-1, 2, C)[:, 0]
        assert in_view0[(shown == 1) & pos].mean() == pytest.approx(0.5, abs=0.05)


def test_a_view_draws_only_the_findings_it_shows(two_views):
    vis = two_views.visible.reshape(-1, 2, C)
    pos = two_views.clean_labels[0::2] > 0
    study, c = map(int, np.argwhere(pos & vis[:, 1] & ~vis[:, 0])[0])  # a finding shown in view 1 only
    v0, v1 = 2 * study, 2 * study + 1
    shown0 = np.flatnonzero(vis[study, 0]).tolist()
    img0, img1 = two_views.load_raw(v0), two_views.load_raw(v1)
    np.testing.assert_array_equal(img0, two_views.render_one(v0, findings=shown0))
    assert not np.array_equal(img0, two_views.render_one(v0, findings=shown0 + [c]))
    without = [k for k in np.flatnonzero(vis[study, 1]) if k != c]
    assert not np.array_equal(img1, two_views.render_one(v1, findings=without))
    # the two views are different pictures (anatomy, clutter, exposure), not copies
    assert np.abs(img0.astype(int) - img1.astype(int)).mean() > 5
    with pytest.raises(ValueError, match="findings"):
        two_views.render_one(v0, findings=[k for k in range(C) if not pos[study, k]][:1])


def test_registry_groups_the_views_into_studies():
    from fact_fast.data import MultiViewDataset

    ds = build_dataset("synthetic", "val", num_samples=5, image_size=64, views=2)
    assert isinstance(ds, MultiViewDataset) and len(ds) == 5 and len(ds.base) == 10
    images, target = ds[3]
    assert images.shape == (2, 3, 64, 64)
    np.testing.assert_array_equal(target.numpy(), ds.base.labels[6])
    for bad in ({"views": 0}, {"views": 1.5}, {"views": True}):
        with pytest.raises(ValueError, match="views"):
            SyntheticBenchmark("val", num_samples=2, **bad)
    with pytest.raises(ValueError, match="view_only_rate"):
        SyntheticBenchmark("val", num_samples=2, views=2, view_only_rate=1.5)
