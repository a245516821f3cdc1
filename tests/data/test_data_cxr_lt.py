"""CXR-LT 2023 / 2024 reader: the challenge's label files over a MIMIC-CXR-JPG tree, labels,
study ids and study-level fusion, shipped embeddings of both label sets, skips and bad data."""
import csv
import importlib
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fact_fast.data import CXR_LT_2023_CLASS_NAMES, CXR_LT_CLASS_NAMES, build_dataset, label_embeddings
from fact_fast.data.base import MultiViewDataset, collate
from fact_fast.data.readers.cxr_lt import CXRLT

le = importlib.import_module("fact_fast.data.labels.embeddings")

META_2024 = ["dicom_id", "subject_id", "study_id", "ViewPosition", "ViewCodeSequence_CodeMeaning", "fpath"]
META_2023 = ["dicom_id", "subject_id", "study_id", "ViewPosition", "ViewCodeSequence_CodeMeaning", "path"]
# (subject, study, dicom_id, view, positive classes); classes named in both label sets where possible
TRAIN = [
    ("10000032", "50414267", "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA", {"Cardiomegaly", "Edema"}),
    ("10000032", "50414267", "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL", {"Cardiomegaly", "Edema"}),
    ("10000032", "53189527", "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "AP", {"Support Devices"}),
    ("10000764", "57375967", "096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "AP", {"Pneumonia", "Lung Opacity"}),
    ("10000898", "50771383", "0c4eb1e1-b801903c-bcebe8a4-3da9cd3c-3b94a27c", "PA", set()),
    ("10000898", "50771383", "0fd2db1b-1c1a1b2d-9e34a6a8-1a1f8c8f-5a4a4b4c", "LATERAL", set()),
    ("10000898", "50771383", "1a2b3c4d-1a1b1c1d-1e1f2a2b-2c2d2e2f-3a3b3c3d", "LL", set()),
    ("10000898", "50771383", "2b3c4d5e-2a2b2c2d-2e2f3a3b-3c3d3e3f-4a4b4c4d", "PA", set()),
    ("10000898", "50771383", "3c4d5e6f-3a3b3c3d-3e3f4a4b-4c4d4e4f-5a5b5c5d", "AP", set()),
]
DEV = [
    ("10001176", "54684191", "4d5e6f7a-4a4b4c4d-4e4f5a5b-5c5d5e5f-6a6b6c6d", "PA", {"Pleural Effusion", "Atelectasis"}),
    ("10001176", "54684191", "5e6f7a8b-5a5b5c5d-5e5f6a6b-6c6d6e6f-7a7b7c7d", "LATERAL", {"Pleural Effusion", "Atelectasis"}),
]
TEST = [
    ("10001217", "52067803", "6f7a8b9c-6a6b6c6d-6e6f7a7b-7c7d7e7f-8a8b8c8d", "AP", {"Pneumothorax", "Fracture"}),
]
NORMAL = {"2024": "Normal", "2023": "No Finding"}


def rel_path(subject, study, dicom):
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


def write_split(path, records, version, labelled=True, drop=(), edit=None):
    classes = CXR_LT_CLASS_NAMES if version == "2024" else CXR_LT_2023_CLASS_NAMES
    meta = META_2024 if version == "2024" else META_2023
    header = [c for c in meta + (list(classes) if labelled else []) if c not in drop]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for subject, study, dicom, view, pos in records:
            pos = pos or {NORMAL[version]}
            row = {"dicom_id": dicom, "subject_id": subject,
                   "study_id": f"s{study}" if version == "2024" else study,  # 2024 prefixes an "s"
                   "ViewPosition": view, "ViewCodeSequence_CodeMeaning": "postero-anterior",
                   "fpath": rel_path(subject, study, dicom), "path": rel_path(subject, study, dicom)}
            row.update({c: int(c in pos) for c in classes})
            if edit:
                edit(row)
            w.writerow([row[c] for c in header])


def write_images(image_root, records):
    for k, (subject, study, dicom, _, _) in enumerate(records):
        p = os.path.join(image_root, rel_path(subject, study, dicom))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        Image.fromarray(np.full((12, 10), 20 + 20 * k, np.uint8)).save(p, quality=95)


def make_tree(tmp_path, version="2024"):
    """PhysioNet download layout: the MIMIC-CXR-JPG tree and the CXR-LT label folder side by side."""
    image_root = tmp_path / "physionet.org" / "files" / "mimic-cxr-jpg" / "2.0.0"
    labels = tmp_path / "physionet.org" / "files" / "cxr-lt-iccv-workshop-cvamd" / "2.0.0" / f"cxr-lt-{version}"
    labels.mkdir(parents=True)
    write_images(str(image_root), TRAIN + DEV + TEST)
    names = {"2024": ("train_labeled.csv", "development_labeled_task1.csv", "test_labeled_task1.csv"),
             "2023": ("train.csv", "development_labeled.csv", "test.csv")}[version]
    for name, records in zip(names, (TRAIN, DEV, TEST)):
        write_split(labels / name, records, version)
    if version == "2023":  # the unlabelled challenge file sits beside the labelled one
        write_split(labels / "development.csv", DEV, version, labelled=False)
    return str(tmp_path), str(image_root), str(labels)


def expected(records, version):
    classes = CXR_LT_CLASS_NAMES if version == "2024" else CXR_LT_2023_CLASS_NAMES
    return np.array([[float(c in (pos or {NORMAL[version]})) for c in classes] for *_, pos in records], np.float32)


@pytest.mark.parametrize("version", ["2024", "2023"])
def test_labels_ids_and_paths(tmp_path, version):
    root, image_root, labels_dir = make_tree(tmp_path, version)
    classes = CXR_LT_CLASS_NAMES if version == "2024" else CXR_LT_2023_CLASS_NAMES
    for split, records, name in (("train", TRAIN, None), ("val", DEV, "development_labeled"), ("test", TEST, None)):
        ds = CXRLT(root, split, version=version)
        assert ds.class_names == list(classes) and len(classes) == (40 if version == "2024" else 26)
        assert NORMAL[version] in ds.class_names and ds.channels == "gray"
        np.testing.assert_array_equal(ds.labels, expected(records, version))
        assert ds.labels.dtype == np.float32
        assert ds.study_ids == [f"s{r[1]}" if version == "2024" else r[1] for r in records]
        assert ds.patient_ids == [r[0] for r in records] and ds.dicom_ids == [r[2] for r in records]
        assert ds.paths == [os.path.join(image_root, rel_path(*r[:3])) for r in records]
        assert ds.image_root == image_root and os.path.dirname(ds.labels_file) == labels_dir
        if name:
            assert os.path.basename(ds.labels_file).startswith(name)  # the labelled file, not development.csv
        assert ds.skipped == []
    raw = ds.load_raw(0)
    assert raw.dtype == np.uint8 and raw.shape == (12, 10) and abs(int(raw[5, 5]) - (20 + 20 * 11)) <= 2
    ds = build_dataset("cxr_lt", "test", root=root, image_size=16, version=version)
    x, y = ds[0]
    assert x.shape == (3, 16, 16) and torch.equal(y, torch.from_numpy(ds.labels[0]))
    mean, std = torch.tensor(ds.mean).view(3, 1, 1), torch.tensor(ds.std).view(3, 1, 1)
    pixels = x * std + mean  # gray replicated to the three channels before normalisation
    torch.testing.assert_close(pixels[0], pixels[1]) and torch.testing.assert_close(pixels[0], pixels[2])


def test_explicit_folders_and_split_files(tmp_path):
    root, image_root, labels_dir = make_tree(tmp_path)
    ds = CXRLT(image_root, "val", labels_dir=labels_dir)
    assert len(ds) == 2
    ds = CXRLT(None, "train", labels_dir=labels_dir, image_root=image_root)
    assert len(ds) == len(TRAIN)
    # MIMIC's files/ folder itself as root
    ds = CXRLT(os.path.join(image_root, "files"), "test", labels_dir=labels_dir)
    assert ds.image_root == image_root
    # a split file of one's own (e.g. the gold-standard subset)
    write_split(os.path.join(labels_dir, "gold.csv"), TEST, "2024")
    ds = CXRLT(root, "test", split_files={"test": "gold.csv"})
    assert ds.labels_file == os.path.join(labels_dir, "gold.csv")
    with pytest.raises(ValueError, match="unknown splits"):
        CXRLT(root, "test", split_files={"dev": "gold.csv"})
    with pytest.raises(FileNotFoundError, match="split_files"):
        CXRLT(root, "test", split_files={"test": "nope.csv"})


def test_study_fusion(tmp_path):
    root, _, _ = make_tree(tmp_path)
    ds = build_dataset("cxr_lt", "train", root=root, image_size=16, fusion="study")
    assert isinstance(ds, MultiViewDataset) and ds.channels == "gray"
    assert ds.group_ids == ["s50414267", "s53189527", "s57375967", "s50771383"]
    assert [len(m) for m in ds.members] == [2, 1, 1, 4]  # the 5-image study is cut to max_views=4
    np.testing.assert_array_equal(ds.labels, expected([TRAIN[0], TRAIN[2], TRAIN[3], TRAIN[4]], "2024"))
    assert ds.study_ids == ds.group_ids and ds.patient_ids == ["10000032", "10000032", "10000764", "10000898"]
    images, targets, mask = collate([ds[g] for g in range(len(ds))])
    assert images.shape == (4, 4, 3, 16, 16)
    assert mask.sum(1).tolist() == [2, 1, 1, 4]
    assert torch.equal(targets, torch.from_numpy(ds.labels))
    two = build_dataset("cxr_lt", "train", root=root, fusion="study", max_views=2)
    assert [len(m) for m in two.members] == [2, 1, 1, 2]
    with pytest.raises(ValueError, match="fusion must be"):
        build_dataset("cxr_lt", "train", root=root, fusion="patient")


@pytest.mark.parametrize("version,shipped", [("2024", "cxr_lt"), ("2023", "cxr_lt_2023")])
def test_every_class_has_a_shipped_embedding(tmp_path, version, shipped):
    root, _, _ = make_tree(tmp_path, version)
    ds = CXRLT(root, "test", version=version)
    rows = np.load(le.EMBEDDINGS_DIR / f"{shipped}.npy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the hashed-vector fallback warns
        emb = label_embeddings(ds.class_names, dataset="cxr_lt").numpy()
    np.testing.assert_array_equal(emb, rows)
    # the "no finding" class is embedded as the normal prompt, like "Normal"
    normal = ds.class_names.index(NORMAL[version])
    normal_2024 = np.load(le.EMBEDDINGS_DIR / "cxr_lt.npy")[CXR_LT_CLASS_NAMES.index("Normal")]
    np.testing.assert_allclose(emb[normal], normal_2024, atol=1e-6)


def test_missing_and_unreadable_images(tmp_path):
    root, image_root, _ = make_tree(tmp_path)
    gone = os.path.join(image_root, rel_path(*TRAIN[3][:3]))
    os.remove(gone)
    ds = CXRLT(root, "train")
    assert ds.skipped == [(gone, "file not found")] and len(ds) == len(TRAIN) - 1
    np.testing.assert_array_equal(ds.labels, expected(TRAIN[:3] + TRAIN[4:], "2024"))
    assert len(CXRLT(root, "train", check_files=False)) == len(TRAIN)
    with open(ds.paths[0], "wb") as f:
        f.write(b"\xff\xd8 not a jpeg")
    with pytest.warns(RuntimeWarning, match=os.path.basename(ds.paths[0])):
        assert ds[0] is None
    for r in TEST:
        os.remove(os.path.join(image_root, rel_path(*r[:3])))
    with pytest.raises(FileNotFoundError, match="pass image_root"):
        CXRLT(root, "test")


def test_leaking_splits_are_refused(tmp_path):
    root, image_root, labels_dir = make_tree(tmp_path)
    leak = [(TRAIN[0][0],) + DEV[0][1:]]  # a dev image of a training patient
    write_images(image_root, leak)
    write_split(os.path.join(labels_dir, "development_labeled_task1.csv"), DEV + leak, "2024")
    for split in ("train", "val"):
        with pytest.raises(ValueError, match=r"cxr_lt: 1 patients \(subject_id\) appear in both "
                                             r".*(train_labeled|development_labeled_task1)\.csv and "
                                             r".*(development_labeled_task1|train_labeled)\.csv.*10000032"):
            CXRLT(root, split)
    assert len(CXRLT(root, "val", check_leaks=False)) == 3
    assert len(CXRLT(root, "test")) == 1  # the test file shares no patient


def test_bad_label_files(tmp_path):
    root, _, labels_dir = make_tree(tmp_path)
    train = os.path.join(labels_dir, "train_labeled.csv")
    write_split(train, TRAIN, "2024", drop=("Hernia",))
    with pytest.raises(ValueError, match=r"\['Hernia'\] missing from .*train_labeled\.csv"):
        CXRLT(root, "train", check_leaks=False)
    write_split(train, TRAIN, "2024", drop=("fpath",))
    with pytest.raises(ValueError, match=r"fpath \(or path\)"):
        CXRLT(root, "train", check_leaks=False)
    write_split(train, TRAIN, "2024", drop=("study_id",))
    with pytest.raises(ValueError, match=r"\['study_id'\] missing"):
        CXRLT(root, "train", check_leaks=False)

    def uncertain(row):
        if row["dicom_id"] == TRAIN[2][2]:
            row["Edema"] = -1
    write_split(train, TRAIN, "2024", edit=uncertain)
    with pytest.raises(ValueError, match=r"train_labeled\.csv: row 4, column 'Edema' is '-1'"):
        CXRLT(root, "train")

    def blank(row):
        if row["dicom_id"] == TRAIN[2][2]:
            row["Edema"] = ""
    write_split(train, TRAIN, "2024", edit=blank)
    ds = CXRLT(root, "train")
    want = expected(TRAIN, "2024")
    want[2, CXR_LT_CLASS_NAMES.index("Edema")] = np.nan
    np.testing.assert_array_equal(ds.labels, want)
    # only the unlabelled development file: say so
    os.remove(os.path.join(labels_dir, "development_labeled_task1.csv"))
    write_split(os.path.join(labels_dir, "development.csv"), DEV, "2024", labelled=False)
    with pytest.raises(ValueError, match=r"development\.csv has no label columns"):
        CXRLT(root, "val")
    os.remove(os.path.join(labels_dir, "development.csv"))
    with pytest.raises(FileNotFoundError, match="no val label file"):
        CXRLT(root, "val")
    with pytest.raises(ValueError, match="version must be one of"):
        CXRLT(root, "train", version="2025")
    with pytest.raises(FileNotFoundError, match="no CXR-LT 2023 label folder"):
        CXRLT(root, "train", version="2023")
    with pytest.raises(ValueError, match="needs root"):
        build_dataset("cxr_lt", "train")


def test_label_cells():
    from fact_fast.data.base import parse_label_cells

    rows = [["a", "1", "0", ""], ["b", " 1 ", "1.0", "0.0"]]
    got = parse_label_cells(rows, [1, 2, 3], ["X", "Y", "Z"], "f.csv")
    np.testing.assert_array_equal(got, [[1, 0, np.nan], [1, 1, 0]])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(parse_label_cells(rows, [2], ["Y"], "f.csv"), [[0], [1]])
    assert parse_label_cells(rows, [], [], "f.csv").shape == (2, 0)
    with pytest.raises(ValueError, match=r"f\.csv: row 4, column 'Z' is 'yes'"):
        parse_label_cells(rows + [["c", "0", "0", "yes"]], [1, 2, 3], ["X", "Y", "Z"], "f.csv")
    with pytest.raises(ValueError, match=r"f\.csv: patient c, column 'X' is '2'"):
        parse_label_cells([["c", "2"]], [1], ["X"], "f.csv", row_name=lambda i: "patient c")
