"""Readers of the published formats: csv, chestmnist, nih, chexpert (the last two also on the
real 112,120-row NIH and 223,414-row CheXpert tables), and their bad-data errors."""
import os
import warnings

import numpy as np
import pytest
import torch

from tests.helpers.data_files import real_table, write_image
from fact_fast.data import (CHEXPERT_CLASS_NAMES, DATASETS, NIH_CLASS_NAMES, CheXpert, build_dataset,
                            label_embeddings)

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
NAN = float("nan")


def _normalized(value, size):
    return (torch.full((3, size, size), value / 255.0) - MEAN) / STD


def _write_csv(path, header, rows):
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for r in rows:
            f.write(",".join(str(c) for c in r) + "\n")


def _same_labels(a, b):
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))  # NaN == NaN here


def test_registry_has_the_readers():
    assert set(DATASETS) >= {"synthetic", "csv", "chestmnist", "nih", "chexpert"}


# ----------------------------------------------------------------------------- csv
def test_csv_dataset_with_split_column(tmp_path):
    rows = [("a.png", 1, 0, "train"), ("b.png", 0, 1, "train"), ("c.png", 1, 1, "val"),
            ("sub/d.png", 0, 0, "test")]
    for i, (p, *_r) in enumerate(rows):
        write_image(tmp_path / p, 40 * i, mode="RGB" if i == 1 else "L")
    _write_csv(tmp_path / "labels.csv", ["path", "Effusion", "Mass", "split"], rows)
    tr = build_dataset("csv", "train", root=str(tmp_path), image_size=16)
    assert tr.class_names == ["Effusion", "Mass"]
    assert tr.labels.tolist() == [[1, 0], [0, 1]] and tr.labels.dtype == np.float32
    x, y = tr[1]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    torch.testing.assert_close(x, _normalized(40, 16), atol=1e-5, rtol=0)
    assert y.tolist() == [0.0, 1.0]
    te = build_dataset("csv", "test", root=str(tmp_path), image_size=8)
    assert len(te) == 1 and te.labels.tolist() == [[0, 0]]
    only = build_dataset("csv", "val", root=str(tmp_path), label_cols=["Mass"])
    assert only.class_names == ["Mass"] and only.labels.tolist() == [[1]]
    with pytest.raises(ValueError, match=r"label_cols.*Nope.*labels\.csv"):
        build_dataset("csv", "val", root=str(tmp_path), label_cols=["Nope"])
    with pytest.raises(ValueError, match=r"image_col.*'img'.*labels\.csv"):
        build_dataset("csv", "val", root=str(tmp_path), image_col="img")
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        build_dataset("csv", "val", root=str(tmp_path), csv="nothere.csv")
    os.remove(tmp_path / "a.png")
    with pytest.warns(RuntimeWarning, match="a.png"):  # a missing file is a skip, not a crash
        assert tr[0] is None


def test_csv_dataset_random_split(tmp_path):
    _write_csv(tmp_path / "t.csv", ["img", "A", "B", "C"],
               [(f"x{i}.png", i % 2, (i // 2) % 2, 0) for i in range(50)])
    parts = {s: build_dataset("csv", s, root=str(tmp_path), csv="t.csv", seed=5) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [35, 5, 10]
    allp = sum((parts[s].paths for s in parts), [])
    assert len(set(allp)) == 50
    again = build_dataset("csv", "val", root=str(tmp_path), csv="t.csv", seed=5)
    assert again.paths == parts["val"].paths
    other = build_dataset("csv", "val", root=str(tmp_path), csv="t.csv", seed=6)
    assert other.paths != parts["val"].paths
    fixed = build_dataset("csv", "val", root=str(tmp_path), csv="t.csv", seed=6, split_seed=5)
    assert fixed.paths == parts["val"].paths  # split_seed pins the split across run seeds
    for part in parts.values():  # labels follow their rows
        for p, lab in zip(part.paths, part.labels):
            i = int(os.path.basename(p)[1:-4])
            assert lab.tolist() == [i % 2, (i // 2) % 2, 0]


def test_csv_label_values(tmp_path):
    rows = [("a.png", "1", "0.0", ""), ("b.png", "1.0", "nan", "0"), ("c.png", "0", "NaN", "1")]
    _write_csv(tmp_path / "l.csv", ["path", "A", "B", "C"], rows)
    ds = build_dataset("csv", "train", root=str(tmp_path), csv="l.csv", val_fraction=0, test_fraction=0)
    _same_labels(ds.labels, [[1, 0, NAN], [1, NAN, 0], [0, NAN, 1]])  # blank / nan = unknown

    _write_csv(tmp_path / "u.csv", ["path", "A", "B"], [("a.png", "-1", "1"), ("b.png", "-1.0", "0")])
    with pytest.raises(ValueError, match=r"u\.csv: line 2, column 'A': label value '-1'.*uncertain="):
        build_dataset("csv", "train", root=str(tmp_path), csv="u.csv")
    expect = {"u_ones": [[1, 1], [1, 0]], "u_zeros": [[0, 1], [0, 0]], "ignore": [[NAN, 1], [NAN, 0]]}
    for policy, want in expect.items():
        ds = build_dataset("csv", "train", root=str(tmp_path), csv="u.csv", uncertain=policy,
                           val_fraction=0, test_fraction=0)
        _same_labels(ds.labels, want)
    with pytest.raises(ValueError, match="uncertain must be one of"):
        build_dataset("csv", "train", root=str(tmp_path), csv="u.csv", uncertain="u_half")

    for bad in ("2", "0.5", "yes", "inf"):
        _write_csv(tmp_path / "bad.csv", ["img", "A", "B"], [("x.png", 0, 1), ("y.png", 1, bad)])
        with pytest.raises(ValueError, match=rf"bad\.csv: line 3, column 'B': label value '{bad}'"):
            build_dataset("csv", "train", root=str(tmp_path), csv="bad.csv")
    with pytest.raises(ValueError, match=r"bad\.csv: line 3, column 'B'"):  # -1 is still bad elsewhere
        _write_csv(tmp_path / "bad.csv", ["img", "A", "B"], [("x.png", 0, 1), ("y.png", 1, 3)])
        build_dataset("csv", "train", root=str(tmp_path), csv="bad.csv", uncertain="ignore")


def test_csv_structural_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv is empty"):
        build_dataset("csv", "train", root=str(tmp_path), csv="empty.csv")
    (tmp_path / "header.csv").write_text("img,A\n")
    with pytest.raises(ValueError, match=r"header\.csv has a header but no rows"):
        build_dataset("csv", "train", root=str(tmp_path), csv="header.csv")
    (tmp_path / "ragged.csv").write_text("img,A,B\nx.png,1,0\ny.png,1\n")
    with pytest.raises(ValueError, match=r"ragged\.csv: line 3 has 2 cells, the header has 3"):
        build_dataset("csv", "train", root=str(tmp_path), csv="ragged.csv")
    (tmp_path / "nolabels.csv").write_text("img\nx.png\n")
    with pytest.raises(ValueError, match=r"no label columns in .*nolabels\.csv"):
        build_dataset("csv", "train", root=str(tmp_path), csv="nolabels.csv")
    _write_csv(tmp_path / "s.csv", ["img", "A", "split"], [("x.png", 1, "train"), ("y.png", 0, "holdout")])
    with pytest.raises(ValueError, match=r"s\.csv: line 3, column 'split': unknown split 'holdout'"):
        build_dataset("csv", "train", root=str(tmp_path), csv="s.csv")
    with pytest.raises(ValueError, match="channels"):
        build_dataset("csv", "train", root=str(tmp_path), csv="s.csv", channels="bgr")


def test_csv_empty_split_names_split_and_file(tmp_path):
    _write_csv(tmp_path / "s.csv", ["img", "A", "split"], [("x.png", 1, "train"), ("y.png", 0, "test")])
    assert len(build_dataset("csv", "train", root=str(tmp_path), csv="s.csv")) == 1
    with pytest.raises(ValueError, match=r"split 'val' read from .*s\.csv is empty \(column 'split'\)"):
        build_dataset("csv", "val", root=str(tmp_path), csv="s.csv")
    _write_csv(tmp_path / "two.csv", ["img", "A"], [("x.png", 1), ("y.png", 0)])
    with pytest.raises(ValueError, match=r"split 'val' read from .*two\.csv is empty \(random split"):
        build_dataset("csv", "val", root=str(tmp_path), csv="two.csv", val_fraction=0.1)


def test_csv_patient_column(tmp_path):
    rows = [(f"p{p}_{k}.png", (p + k) % 2, p) for p in range(20) for k in range(3)]
    _write_csv(tmp_path / "p.csv", ["img", "A", "patient"], rows)
    parts = {s: build_dataset("csv", s, root=str(tmp_path), csv="p.csv", patient_col="patient", seed=1)
             for s in ("train", "val", "test")}
    assert all(p.class_names == ["A"] for p in parts.values())  # the patient column is no label
    ids = {s: set(p.patient_ids) for s, p in parts.items()}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert [len(ids[s]) for s in ("train", "val", "test")] == [14, 2, 4]  # 7:1:2 of 20 patients
    assert sum(len(p) for p in parts.values()) == 60
    leak = [("a.png", 1, "7", "train"), ("b.png", 0, "7", "test"), ("c.png", 0, "8", "val")]
    _write_csv(tmp_path / "leak.csv", ["img", "A", "patient", "split"], leak)
    with pytest.raises(ValueError, match=r"1 patients appear in both train rows of .*leak\.csv and test rows"):
        build_dataset("csv", "val", root=str(tmp_path), csv="leak.csv", patient_col="patient")


def test_csv_rgb_channels(tmp_path):
    write_image(tmp_path / "c.png", (200, 100, 50), mode="RGB")
    _write_csv(tmp_path / "l.csv", ["img", "A"], [("c.png", 1)])
    ds = build_dataset("csv", "train", root=str(tmp_path), csv="l.csv", channels="rgb", image_size=8,
                       val_fraction=0, test_fraction=0)
    assert ds.channels == "rgb" and ds.pipeline.channels == "rgb"
    assert ds.load_raw(0).shape == (12, 10, 3)
    x, _ = ds[0]
    want = (torch.tensor([200.0, 100.0, 50.0]).view(3, 1, 1).expand(3, 8, 8) / 255 - MEAN) / STD
    torch.testing.assert_close(x, want, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- chestmnist
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
    assert ds.cache_key() is None  # held in memory: nothing for the image cache to do
    with pytest.raises(FileNotFoundError, match="chestmnist"):
        build_dataset("chestmnist", "train", root=str(tmp_path / "empty_dir_missing"))


# ----------------------------------------------------------------------------- nih (small fixture)
NIH_HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
              "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]


def _nih_fixture(root, entries, train_val, test):
    _write_csv(root / "Data_Entry_2017.csv", NIH_HEADER,
               [(n, lab, 0, pid, 50, "M", view, 2500, 2048, 0.14, 0.14) for n, lab, pid, view in entries])
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")


def test_nih_official_split(tmp_path):
    entries = [
        ("00000001_000.png", "Cardiomegaly|Effusion", "1", "PA"),
        ("00000001_001.png", "No Finding", "1", "AP"),
        ("00000002_000.png", "Hernia", "2", "PA"),
        ("00000003_000.png", "Mass|Nodule|Pleural_Thickening", "3", "PA"),
        ("00000004_000.png", "No Finding", "4", "AP"),
        ("00000005_000.png", "Atelectasis", "5", "PA"),
    ]
    _nih_fixture(tmp_path, entries, [e[0] for e in entries[:5]], [entries[5][0]])
    for k, (name, *_r) in enumerate(entries):
        sub = "images_001/images" if k < 3 else "images_002/images"
        write_image(tmp_path / sub / name, 20 * k)
    te = build_dataset("nih", "test", root=str(tmp_path), image_size=16)
    assert len(te) == 1 and te.labels[0].tolist() == [1] + [0] * 13
    x, y = te[0]
    torch.testing.assert_close(x, _normalized(100, 16), atol=1e-5, rtol=0)
    tr = build_dataset("nih", "train", root=str(tmp_path), val_fraction=0.25, seed=0)
    va = build_dataset("nih", "val", root=str(tmp_path), val_fraction=0.25, seed=0)
    assert len(tr) + len(va) == 5 and len(va) >= 1
    assert not set(tr.patient_ids) & set(va.patient_ids)  # split by patient
    assert sorted(tr.image_names + va.image_names) == sorted(e[0] for e in entries[:5])
    lab = dict(zip(tr.image_names + va.image_names, np.concatenate([tr.labels, va.labels])))
    ci = {n: k for k, n in enumerate(NIH_CLASS_NAMES)}
    assert lab["00000001_001.png"].sum() == 0 and not np.isnan(lab["00000001_001.png"]).any()
    assert set(np.flatnonzero(lab["00000001_000.png"])) == {ci["Cardiomegaly"], ci["Effusion"]}
    assert set(np.flatnonzero(lab["00000003_000.png"])) == {ci["Mass"], ci["Nodule"], ci["Pleural_Thickening"]}
    for i in range(len(tr)):
        assert tr[i] is not None  # all images found in images_*/images
    pa = build_dataset("nih", "train", root=str(tmp_path), val_fraction=0, views="PA")
    assert sorted(pa.image_names) == ["00000001_000.png", "00000002_000.png", "00000003_000.png"]
    assert set(pa.view_positions) == {"PA"}
    with pytest.raises(FileNotFoundError, match="Data_Entry_2017"):
        build_dataset("nih", "train", root=str(tmp_path / "images_001"))
    with pytest.raises(ValueError, match=r"split 'test' read from .*test_list\.txt is empty.*views='AP'"):
        build_dataset("nih", "test", root=str(tmp_path), views="AP")
    with pytest.raises(ValueError, match="views"):
        build_dataset("nih", "test", root=str(tmp_path), views="lateral")
    with pytest.raises(ValueError, match="split_mode"):
        build_dataset("nih", "test", root=str(tmp_path), split_mode="ldr")


def test_nih_bad_tables(tmp_path):
    entries = [("a.png", "Mass", "1", "PA"), ("b.png", "Cardiomegaly", "2", "PA"), ("c.png", "Mass", "3", "AP")]
    _nih_fixture(tmp_path, entries, ["a.png", "b.png"], ["c.png", "a.png"])
    with pytest.raises(ValueError, match=r"1 patients appear in both .*train_val_list\.txt and .*test_list\.txt"):
        build_dataset("nih", "train", root=str(tmp_path))
    _nih_fixture(tmp_path, entries, ["a.png", "b.png"], ["c.png", "zzz.png"])
    with pytest.raises(ValueError, match=r"1 images of .*test_list\.txt are missing from .*Data_Entry_2017\.csv"):
        build_dataset("nih", "test", root=str(tmp_path))
    _nih_fixture(tmp_path, [("a.png", "Mass|Tumour", "1", "PA")], ["a.png"], [])
    with pytest.raises(ValueError, match=r"Data_Entry_2017\.csv: line 2, column 'Finding Labels'.*'Tumour'"):
        build_dataset("nih", "train", root=str(tmp_path))
    _write_csv(tmp_path / "Data_Entry_2017.csv", ["Image Index", "Finding Labels"], [("a.png", "Mass")])
    with pytest.raises(ValueError, match=r"column 'Patient ID' missing from .*Data_Entry_2017\.csv"):
        build_dataset("nih", "train", root=str(tmp_path))
    os.remove(tmp_path / "test_list.txt")
    _nih_fixture(tmp_path, entries, ["a.png"], [])
    os.remove(tmp_path / "test_list.txt")
    with pytest.raises(FileNotFoundError, match=r"test_list\.txt not found.*split_mode='random'"):
        build_dataset("nih", "train", root=str(tmp_path))
    assert len(build_dataset("nih", "train", root=str(tmp_path), split_mode="random", val_fraction=0,
                             test_fraction=0)) == 3  # the random split needs no lists


# ----------------------------------------------------------------------------- nih (real table)
# Published with the dataset (NIH ChestX-ray14 README): 112,120 images of 30,805 patients.
NIH_PUBLISHED_COUNTS = {
    "Atelectasis": 11559, "Cardiomegaly": 2776, "Effusion": 13317, "Infiltration": 19894, "Mass": 5782,
    "Nodule": 6331, "Pneumonia": 1431, "Pneumothorax": 5302, "Consolidation": 4667, "Edema": 2303,
    "Emphysema": 2516, "Fibrosis": 1686, "Pleural_Thickening": 3385, "Hernia": 227,
}


@pytest.fixture(scope="module")
def nih_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nih")
    real_table("Data_Entry_2017_v2020.csv", root / "Data_Entry_2017_v2020.csv")
    return root


@pytest.fixture(scope="module")
def nih_random(nih_root):
    return {s: build_dataset("nih", s, root=str(nih_root), split_mode="random", seed=0)
            for s in ("train", "val", "test")}


def test_nih_real_table_ldr_random_split(nih_random):
    parts = nih_random
    assert sum(len(p) for p in parts.values()) == 112120
    patients = {s: set(p.patient_ids) for s, p in parts.items()}
    assert sum(len(v) for v in patients.values()) == 30805
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"]
                or patients["val"] & patients["test"])
    # 7:1:2 of the 30,805 patients
    assert [len(patients[s]) for s in ("train", "val", "test")] == [30805 - 3080 - 6161, 3080, 6161]
    positives = sum(p.labels.sum(axis=0) for p in parts.values())
    assert dict(zip(NIH_CLASS_NAMES, positives.astype(int).tolist())) == NIH_PUBLISHED_COUNTS
    assert sum(int((p.labels.sum(axis=1) == 0).sum()) for p in parts.values()) == 60361  # "No Finding"
    assert all(not np.isnan(p.labels).any() for p in parts.values())
    names = [n for p in parts.values() for n in p.image_names]
    assert len(set(names)) == 112120
    # one hand-read row: 00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,...
    for p in parts.values():
        if "00000001_001.png" in p.image_names:
            i = p.image_names.index("00000001_001.png")
            assert set(np.flatnonzero(p.labels[i])) == {NIH_CLASS_NAMES.index("Cardiomegaly"),
                                                        NIH_CLASS_NAMES.index("Emphysema")}
            assert p.patient_ids[i] == "1" and p.view_positions[i] == "PA"
    again = build_dataset("nih", "val", root=str(parts["val"].root), split_mode="random", seed=0)
    assert again.image_names == parts["val"].image_names
    other = build_dataset("nih", "val", root=str(parts["val"].root), split_mode="random", seed=1)
    assert set(other.patient_ids) != patients["val"]


def test_nih_real_table_views(nih_root, nih_random):
    pa = build_dataset("nih", "test", root=str(nih_root), split_mode="random", views="PA")
    ap = build_dataset("nih", "test", root=str(nih_root), split_mode="random", views=["AP"])
    frontal = build_dataset("nih", "test", root=str(nih_root), split_mode="random", views="frontal")
    full = nih_random["test"]
    assert len(frontal) == len(full)  # every NIH image is PA or AP
    assert len(pa) + len(ap) == len(full) and set(pa.view_positions) == {"PA"}
    assert set(pa.patient_ids) <= set(full.patient_ids)  # the split does not move with the filter
    total_pa = sum(v == "PA" for p in nih_random.values() for v in p.view_positions)
    assert total_pa == 67310 and sum(len(p) for p in nih_random.values()) - total_pa == 44810


def test_nih_real_table_official_lists(nih_root):
    root = nih_root
    import csv

    with open(root / "Data_Entry_2017_v2020.csv") as f:
        rows = [(r["Image Index"], int(r["Patient ID"])) for r in csv.DictReader(f)]
    test = [n for n, p in rows if p % 5 == 0]
    train_val = [n for n, p in rows if p % 5 != 0]
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    te = build_dataset("nih", "test", root=str(root))
    assert te.image_names == test and all(int(p) % 5 == 0 for p in te.patient_ids)
    tr = build_dataset("nih", "train", root=str(root), val_fraction=0.1)
    va = build_dataset("nih", "val", root=str(root), val_fraction=0.1)
    assert len(tr) + len(va) == len(train_val) and not set(tr.patient_ids) & set(va.patient_ids)
    n_patients = len({p for _n, p in rows if p % 5 != 0})
    assert len(set(va.patient_ids)) == round(n_patients * 0.1)
    leaky = train_val + [test[0]]
    (root / "train_val_list.txt").write_text("\n".join(leaky) + "\n")
    with pytest.raises(ValueError, match=r"appear in both .*train_val_list\.txt and .*test_list\.txt.*leak"):
        build_dataset("nih", "test", root=str(root))
    os.remove(root / "train_val_list.txt")
    os.remove(root / "test_list.txt")


def test_nih_real_table_stand_in_images(nih_root):
    val = build_dataset("nih", "val", root=str(nih_root), split_mode="random", image_size=16)
    picks = [0, 7, len(val) - 1]
    for k, i in enumerate(picks):
        write_image(nih_root / "images_003" / "images" / val.image_names[i], 60 + 50 * k, size=(30, 20))
    val = build_dataset("nih", "val", root=str(nih_root), split_mode="random", image_size=16)
    for k, i in enumerate(picks):
        x, y = val[i]
        torch.testing.assert_close(x, _normalized(60 + 50 * k, 16), atol=1e-5, rtol=0)
        assert torch.equal(y, torch.from_numpy(val.labels[i]))
    with pytest.warns(RuntimeWarning, match="image file not found"):
        assert val[1] is None


# ----------------------------------------------------------------------------- chexpert
CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + CHEXPERT_CLASS_NAMES
# valid.csv rows in the published format (its labels are 0/1 only)
VALID_ROWS = [
    ("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "Male", 73, "Frontal", "AP",
     *[0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
    ("CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg", "Male", 70, "Frontal", "PA",
     *[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
    ("CheXpert-v1.0-small/valid/patient64542/study1/view2_lateral.jpg", "Male", 70, "Lateral", "",
     *[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
]


@pytest.fixture(scope="module")
def chexpert_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("chexpert")
    data = root / "CheXpert-v1.0-small"
    real_table("chexpert_train.csv", data / "train.csv")
    _write_csv(data / "valid.csv", CHEXPERT_HEADER, VALID_ROWS)
    return root


@pytest.fixture(scope="module")
def chexpert_table(chexpert_root):
    pd = pytest.importorskip("pandas")  # installed with torchxrayvision (requirements/dev.txt)
    return pd.read_csv(chexpert_root / "CheXpert-v1.0-small" / "train.csv")


def test_chexpert_real_table_labels(chexpert_root, chexpert_table):
    ds = build_dataset("chexpert", "train", root=str(chexpert_root), val_fraction=0)
    t = chexpert_table
    assert len(ds) == len(t) == 223414 and ds.class_names == CHEXPERT_CLASS_NAMES
    # the independent reading (pandas): -1 (uncertain) and blank -> NaN under the default policy
    want = t[CHEXPERT_CLASS_NAMES].to_numpy(np.float32, copy=True)
    want[want == -1] = np.nan
    _same_labels(ds.labels, want)
    assert len(set(ds.patient_ids)) == 64540
    assert ds.paths[0] == os.path.join(str(chexpert_root), "CheXpert-v1.0-small", "train", "patient00001",
                                       "study1", "view1_frontal.jpg")
    assert ds.patient_ids[:3] == ["patient00001", "patient00002", "patient00002"]
    assert ds.study_ids[:3] == ["patient00001/study1", "patient00002/study2", "patient00002/study1"]
    # hand-read rows: patient00001/study1 = No Finding 1, Pneumothorax 0, Support Devices 1, rest blank
    row0 = np.full(14, np.nan, np.float32)
    row0[[0, 9, 13]] = [1, 0, 1]
    _same_labels(ds.labels[0], row0)
    # patient00002/study2: Cardiomegaly -1, Lung Opacity 1, Edema -1, Consolidation -1, Atelectasis -1,
    # Pleural Effusion -1, Fracture 1
    row1 = np.full(14, np.nan, np.float32)
    row1[[3, 12]] = 1
    _same_labels(ds.labels[1], row1)
    assert sorted(ds.views[0]) == ["AP", "frontal"]


def test_chexpert_uncertainty_policies(chexpert_root, chexpert_table, tmp_path):
    # the first 3000 rows of the real table, as their own dataset folder
    data = tmp_path / "CheXpert-v1.0-small"
    data.mkdir()
    with open(chexpert_root / "CheXpert-v1.0-small" / "train.csv") as f, open(data / "train.csv", "w") as out:
        for k, line in enumerate(f):
            if k > 3000:
                break
            out.write(line)
    _write_csv(data / "valid.csv", CHEXPERT_HEADER, VALID_ROWS)
    raw = chexpert_table[CHEXPERT_CLASS_NAMES].to_numpy(np.float32, copy=True)[:3000]
    for uncertain, u in (("u_ones", 1.0), ("u_zeros", 0.0), ("ignore", np.nan)):
        for blank, b in (("unknown", np.nan), ("negative", 0.0)):
            ds = build_dataset("chexpert", "train", root=str(data), val_fraction=0, uncertain=uncertain,
                               blank=blank)
            want = raw.copy()
            want[raw == -1] = u
            want[np.isnan(raw)] = b
            _same_labels(ds.labels, want)
    row1 = build_dataset("chexpert", "train", root=str(data), val_fraction=0, uncertain="u_ones").labels[1]
    _same_labels(row1, [np.nan, np.nan, 1, 1, np.nan, 1, 1, np.nan, 1, np.nan, 1, np.nan, 1, np.nan])
    with pytest.raises(ValueError, match="uncertain"):
        build_dataset("chexpert", "train", root=str(data), uncertain=None)  # -1 cells need a policy
    with pytest.raises(ValueError, match="blank"):
        build_dataset("chexpert", "train", root=str(data), blank="zero")
    sub = build_dataset("chexpert", "test", root=str(data), classes=["Edema", "Pleural Effusion"])
    assert sub.class_names == ["Edema", "Pleural Effusion"] and sub.labels.shape == (3, 2)
    with pytest.raises(ValueError, match=r"classes: column 'Effusion' missing from .*valid\.csv"):
        build_dataset("chexpert", "test", root=str(data), classes=["Effusion"])


def test_chexpert_real_table_splits_and_views(chexpert_root, chexpert_table):
    tr = build_dataset("chexpert", "train", root=str(chexpert_root), seed=3)
    va = build_dataset("chexpert", "val", root=str(chexpert_root), seed=3)
    te = build_dataset("chexpert", "test", root=str(chexpert_root))
    assert len(tr) + len(va) == 223414 and not set(tr.patient_ids) & set(va.patient_ids)
    assert len(set(va.patient_ids)) == round(64540 * 0.1)
    assert len(te) == 3 and te.csv_path.endswith("valid.csv")  # valid.csv is the test split
    _same_labels(te.labels[0], VALID_ROWS[0][5:])
    t = chexpert_table
    n_frontal = int((t["Frontal/Lateral"] == "Frontal").sum())
    assert n_frontal == 191027
    assert sum("frontal" in v for v in tr.views + va.views) == n_frontal
    assert sum(v == {"lateral"} for v in tr.views + va.views) == 223414 - n_frontal
    lateral = build_dataset("chexpert", "train", root=str(chexpert_root), val_fraction=0, views="lateral")
    assert len(lateral) == 223414 - n_frontal and all("lateral" in v for v in lateral.views)
    pa = build_dataset("chexpert", "train", root=str(chexpert_root), val_fraction=0, views="PA")
    assert len(pa) == int((t["AP/PA"] == "PA").sum()) == 29420
    assert all(p.endswith("frontal.jpg") for p in pa.paths[:100])
    assert len(build_dataset("chexpert", "test", root=str(chexpert_root), views="frontal")) == 2
    assert len(build_dataset("chexpert", "test", root=str(chexpert_root), views=["lateral", "PA"])) == 2


def test_chexpert_layouts_and_stand_in_images(tmp_path):
    renamed = tmp_path / "my_chexpert"  # the folder itself, renamed
    renamed.mkdir()
    _write_csv(renamed / "valid.csv", CHEXPERT_HEADER, VALID_ROWS)
    _write_csv(renamed / "train.csv", CHEXPERT_HEADER, [
        ("CheXpert-v1.0-small/train/patient00009/study3/view1_frontal.jpg", "Female", 50, "Frontal", "PA",
         *["", "", "1.0", "-1.0", "", "", "", "", "", "0.0", "", "", "", ""]),
    ])
    for k, row in enumerate(VALID_ROWS):
        rel = row[0].split("/", 1)[1]
        write_image(renamed / rel, 30 + 70 * k, size=(24, 20), fmt="JPEG")
    te = build_dataset("chexpert", "test", root=str(renamed), image_size=16)
    assert te.paths[0] == os.path.join(str(renamed), "valid", "patient64541", "study1", "view1_frontal.jpg")
    for k in range(3):
        x, y = te[k]
        torch.testing.assert_close(x, _normalized(30 + 70 * k, 16), atol=1.5 / 255 / 0.224, rtol=0)
        assert torch.equal(y, torch.tensor(VALID_ROWS[k][5:], dtype=torch.float32))
    assert te.study_ids == ["patient64541/study1", "patient64542/study1", "patient64542/study1"]
    tr = build_dataset("chexpert", "train", root=str(renamed), val_fraction=0)
    assert tr.paths[0].startswith(str(renamed)) and tr.patient_ids == ["patient00009"]
    parent = tmp_path / "holder"
    os.makedirs(parent / "CheXpert-v1.0")  # the full-resolution folder name, found under root
    os.rename(renamed, parent / "CheXpert-v1.0")
    te2 = build_dataset("chexpert", "test", root=str(parent), image_size=16)
    assert te2.paths[0] == os.path.join(str(parent), "CheXpert-v1.0", "valid", "patient64541", "study1",
                                        "view1_frontal.jpg")
    torch.testing.assert_close(te2[0][0], _normalized(30, 16), atol=1.5 / 255 / 0.224, rtol=0)
    with pytest.raises(FileNotFoundError, match=r"train\.csv not found in any of"):
        build_dataset("chexpert", "test", root=str(tmp_path))


def test_chexpert_bad_tables(tmp_path):
    def make(train_rows, valid_rows=VALID_ROWS, header=CHEXPERT_HEADER):
        _write_csv(tmp_path / "train.csv", header, train_rows)
        _write_csv(tmp_path / "valid.csv", CHEXPERT_HEADER, valid_rows)

    good = ("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "F", 1, "Frontal", "AP", *[""] * 14)
    make([good, good[:9] + ("2.0",) + good[10:]])
    with pytest.raises(ValueError, match=r"train\.csv: line 3, column 'Lung Lesion': label value '2\.0'"):
        build_dataset("chexpert", "train", root=str(tmp_path))
    make([good], [VALID_ROWS[0], (good[0].replace("train", "valid"),) + VALID_ROWS[0][1:]])
    with pytest.raises(ValueError, match=r"1 patients appear in both .*train\.csv and .*valid\.csv.*\['patient00001'\]"):
        build_dataset("chexpert", "train", root=str(tmp_path))
    make([("images/img1.jpg",) + good[1:]])
    with pytest.raises(ValueError, match=r"train\.csv: line 2: no patient id in path 'images/img1\.jpg'"):
        build_dataset("chexpert", "train", root=str(tmp_path))
    # a MIMIC-style table: patient from subject_id, study from study_id
    mimic = ["subject_id", "study_id", "Path", "Frontal/Lateral"] + CHEXPERT_CLASS_NAMES
    _write_csv(tmp_path / "mimic_train.csv", mimic,
               [(10000032, 50414267, "files/p10/p10000032/s50414267/a.jpg", "Frontal", *["1"] + [""] * 13)])
    _write_csv(tmp_path / "mimic_test.csv", mimic,
               [(10000033, 50414268, "files/p10/p10000033/s50414268/b.jpg", "Lateral", *["0"] * 14)])
    m = CheXpert(str(tmp_path), "train", train_csv="mimic_train.csv", test_csv="mimic_test.csv", val_fraction=0,
                 name="mimic_cxr")
    assert m.patient_ids == ["10000032"] and m.study_ids == ["50414267"]
    assert m.paths == [os.path.join(str(tmp_path), "files/p10/p10000032/s50414267/a.jpg")]
    assert m.name == "mimic_cxr"
    make([good], [VALID_ROWS[0]])  # valid.csv has no PA image
    with pytest.raises(ValueError, match=r"split 'test' read from .*valid\.csv is empty \(views='PA'\)"):
        build_dataset("chexpert", "test", root=str(tmp_path), views="PA")
    _write_csv(tmp_path / "train.csv", CHEXPERT_HEADER[:3] + CHEXPERT_HEADER[4:], [good[:3] + good[4:]])
    with pytest.raises(ValueError, match=r"column 'Frontal/Lateral' missing from .*train\.csv"):
        build_dataset("chexpert", "train", root=str(tmp_path), views="frontal")
    make([good[:3] + ("Oblique",) + good[4:]])
    with pytest.raises(ValueError, match=r"line 2, column 'Frontal/Lateral'.*'Oblique'"):
        build_dataset("chexpert", "train", root=str(tmp_path), views="frontal")


def test_real_label_sets_have_shipped_embeddings():
    # every class of these readers has a real text embedding: no silent hashed fallback
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb = label_embeddings(CHEXPERT_CLASS_NAMES, dataset="chexpert")
        assert emb.shape == (14, 384)
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(14))
        assert torch.equal(label_embeddings(CHEXPERT_CLASS_NAMES), emb)  # matched by name alone
        assert torch.equal(label_embeddings(["Pleural Effusion", "Edema"], dataset="chexpert"), emb[[10, 5]])
        assert label_embeddings(CHEXPERT_CLASS_NAMES, dataset="mimic_cxr").shape == (14, 384)
    e = dict(zip(CHEXPERT_CLASS_NAMES, emb))
    assert e["Pleural Effusion"] @ e["Pleural Other"] > e["Pleural Effusion"] @ e["Support Devices"]
    assert e["Cardiomegaly"] @ e["Enlarged Cardiomediastinum"] > e["Cardiomegaly"] @ e["Fracture"]
