"""ODIR-5K reader: the annotation workbook (openpyxl) and its CSV export, patient-level labels and
splits, eyes / multi-view items, colour input, the fundus border crop, shipped embeddings."""
import csv
import importlib
import os
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fact_fast.data import ODIR_CLASS_NAMES, build_dataset, hashed_embeddings, label_embeddings
from fact_fast.data.base import MultiViewDataset, collate
from fact_fast.data.readers.odir import ODIR5K, crop_fundus_border

HEADER = ["ID", "Patient Age", "Patient Sex", "Left-Fundus", "Right-Fundus",
          "Left-Diagnostic Keywords", "Right-Diagnostic Keywords", "N", "D", "G", "C", "A", "H", "M", "O"]
# ID, left keywords, right keywords, N D G C A H M O (hand-written; the reader must reproduce them)
PATIENTS = [
    (0, "cataract", "normal fundus", [0, 0, 0, 1, 0, 0, 0, 0]),
    (1, "normal fundus", "normal fundus", [1, 0, 0, 0, 0, 0, 0, 0]),
    (2, "laser spot，moderate non proliferative retinopathy", "moderate non proliferative retinopathy",
     [0, 1, 0, 0, 0, 0, 0, 1]),
    (3, "pathological myopia", "normal fundus", [0, 0, 0, 0, 0, 0, 1, 0]),
    (4, "dry age-related macular degeneration", "glaucoma", [0, 0, 1, 0, 1, 0, 0, 0]),
    (5, "hypertensive retinopathy", "hypertensive retinopathy", [0, 0, 0, 0, 0, 1, 0, 0]),
    (6, "normal fundus", "drusen", [0, 0, 0, 0, 0, 0, 0, 1]),
    (8, "mild nonproliferative retinopathy", "glaucoma", [0, 1, 1, 0, 0, 0, 0, 0]),
    (9, "normal fundus", "normal fundus", [1, 0, 0, 0, 0, 0, 0, 0]),
    (10, "cataract", "cataract", [0, 0, 0, 1, 0, 0, 0, 0]),
]
LABELS = {str(pid): np.array(lab, dtype=np.float32) for pid, _, _, lab in PATIENTS}
# a distinct colour per image so a test can tell which file was read
COLOURS = {(pid, eye): (200 - 10 * k, 40 + 5 * k, 20 + 3 * (eye == "right"))
           for k, (pid, _, _, _) in enumerate(PATIENTS) for eye in ("left", "right")}


def _rows(patients=PATIENTS):
    return [[pid, 50 + pid, "Female" if pid % 2 else "Male", f"{pid}_left.jpg", f"{pid}_right.jpg", lk, rk] + list(lab)
            for pid, lk, rk, lab in patients]


def write_workbook(path, header=HEADER, rows=None):
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Sheet1"
    ws.append(header)
    for r in _rows() if rows is None else rows:
        ws.append(r)
    wb.save(path)


def write_csv(path, header=HEADER, rows=None):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(_rows() if rows is None else rows)


def fundus(colour, h=24, w=32):
    """A fundus-like photo: a coloured disc on a black background."""
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (0.45 * h) ** 2
    img = np.zeros((h, w, 3), np.uint8)
    img[disc] = colour
    return img


def write_images(folder, skip=()):
    os.makedirs(folder, exist_ok=True)
    for (pid, eye), colour in COLOURS.items():
        if (pid, eye) not in skip:
            Image.fromarray(fundus(colour)).save(os.path.join(folder, f"{pid}_{eye}.jpg"), quality=95)


@pytest.fixture
def challenge_root(tmp_path):
    """The challenge release: the V2 workbook beside ODIR-5K_Training_Dataset/."""
    write_workbook(tmp_path / "ODIR-5K_Training_Annotations(Updated)_V2.xlsx")
    write_images(tmp_path / "ODIR-5K_Training_Dataset")
    return str(tmp_path)


@pytest.fixture
def csv_root(tmp_path):
    """The common re-distribution, CSV-exported: ODIR-5K/ODIR-5K/data.csv beside Training Images/."""
    root = tmp_path / "csv_layout"  # apart from challenge_root's files when a test uses both
    base = root / "ODIR-5K" / "ODIR-5K"
    base.mkdir(parents=True)
    write_csv(base / "data.csv")
    write_images(base / "Training Images")
    return str(root)


def _all_splits(root, **kw):
    return {s: ODIR5K(root, s, **kw) for s in ("train", "val", "test")}


def _check_patient_labels(ds):
    for i, pid in enumerate(ds.patient_ids):
        np.testing.assert_array_equal(ds.labels[i], LABELS[pid])


@pytest.mark.parametrize("layout", ["challenge_root", "csv_root"])
def test_labels_splits_and_paths(layout, request):
    root = request.getfixturevalue(layout)
    parts = _all_splits(root, eyes="each")
    assert {s: len(set(d.patient_ids)) for s, d in parts.items()} == {"train": 7, "val": 1, "test": 2}
    patients = [set(d.patient_ids) for d in parts.values()]
    assert set.union(*patients) == set(LABELS)
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    for d in parts.values():
        assert d.class_names == list(ODIR_CLASS_NAMES) and d.channels == "rgb"
        assert d.labels.dtype == np.float32 and d.labels.shape == (len(d), 8)
        _check_patient_labels(d)
        for path, pid, eye in zip(d.paths, d.patient_ids, d.eye):
            assert os.path.basename(path) == f"{pid}_{eye}.jpg" and os.path.isfile(path)
        assert len(d) == 2 * len(set(d.patient_ids)) and d.skipped == []
    tr = parts["train"]
    keywords = {str(p): (lk, rk) for p, lk, rk, _ in PATIENTS}
    assert tr.eye[:2] == ["left", "right"] and tr.patient_ids[0] == tr.patient_ids[1]
    assert tuple(tr.keywords[:2]) == keywords[tr.patient_ids[0]]
    # the split depends on the seed, is reproducible, and is the same for every eyes mode
    assert ODIR5K(root, "test").patient_ids == parts["test"].patient_ids
    assert set(ODIR5K(root, "test", eyes="left").patient_ids) == set(parts["test"].patient_ids)
    seeds = {tuple(sorted(set(ODIR5K(root, "test", seed=s).patient_ids))) for s in range(6)}
    assert len(seeds) > 1


def test_workbook_and_csv_export_agree(challenge_root, csv_root):
    for split in ("train", "test"):
        a, b = ODIR5K(challenge_root, split), ODIR5K(csv_root, split)
        assert a.annotations.endswith("V2.xlsx") and b.annotations.endswith(os.path.join("ODIR-5K", "data.csv"))
        assert a.patient_ids == b.patient_ids and a.eye == b.eye
        np.testing.assert_array_equal(a.labels, b.labels)


def test_explicit_paths(tmp_path):
    write_csv(tmp_path / "annotations.csv")
    write_images(tmp_path / "imgs")
    ds = ODIR5K(str(tmp_path), "train", annotations="annotations.csv", image_dir="imgs")
    assert len(ds) == 14 and ds.annotations == str(tmp_path / "annotations.csv")
    ds2 = ODIR5K(None, "train", annotations=str(tmp_path / "annotations.csv"), image_dir=str(tmp_path / "imgs"))
    assert ds2.paths == ds.paths


def test_eyes_left_right(csv_root):
    for eye in ("left", "right"):
        d = ODIR5K(csv_root, "train", eyes=eye)
        assert len(d) == 7 and set(d.eye) == {eye}
        assert all(p.endswith(f"_{eye}.jpg") for p in d.paths)
        _check_patient_labels(d)


def test_eyes_both_is_one_item_per_patient(tmp_path):
    write_csv(tmp_path / "ODIR-5K_Training_Annotations(Updated)_V2.csv")
    write_images(tmp_path / "ODIR-5K_Training_Dataset")
    one_eyed = ODIR5K(str(tmp_path), "train").patient_ids[0]  # its right image goes missing
    missing = tmp_path / "ODIR-5K_Training_Dataset" / f"{one_eyed}_right.jpg"
    os.remove(missing)
    ds = build_dataset("odir", "train", root=str(tmp_path), image_size=16, seed=0)
    assert isinstance(ds, MultiViewDataset) and ds.channels == "rgb" and ds.class_names == list(ODIR_CLASS_NAMES)
    base = ds.base
    assert ds.group_ids == list(dict.fromkeys(base.patient_ids)) and ds.patient_ids == ds.group_ids
    assert len(ds) == 7 and one_eyed in ds.group_ids
    assert base.skipped == [(str(missing), "file not found")] and ds.skipped == base.skipped
    for g, pid in enumerate(ds.group_ids):
        np.testing.assert_array_equal(ds.labels[g], LABELS[pid])
        assert [base.eye[i] for i in ds.members[g]] == (["left"] if pid == one_eyed else ["left", "right"])
    images, targets, mask = collate([ds[g] for g in range(len(ds))])
    assert images.shape == (7, 2, 3, 16, 16) and images.dtype == torch.float32
    assert torch.equal(targets, torch.from_numpy(ds.labels))
    assert mask.tolist() == [[True, pid != one_eyed] for pid in ds.group_ids]
    # the eval transform reached the per-image dataset through the wrapper
    assert base.transform is not None and ds.transform is base.transform
    # the two eyes are different images, in [left, right] order
    g = next(g for g, pid in enumerate(ds.group_ids) if pid != one_eyed)
    x, _ = ds[g]
    assert not torch.equal(x[0], x[1])
    np.testing.assert_array_equal(base.load_raw(ds.members[g][0])[12, 16] // 16,
                                  np.array(COLOURS[(int(ds.group_ids[g]), "left")]) // 16)


def test_colour_input(csv_root):
    ds = ODIR5K(csv_root, "train")
    for i in range(len(ds)):
        raw = ds.load_raw(i)
        assert raw.dtype == np.uint8 and raw.shape == (24, 32, 3)
        centre = raw[12, 16].astype(int)
        want = np.array(COLOURS[(int(ds.patient_ids[i]), ds.eye[i])])
        assert np.abs(centre - want).max() <= 12  # JPEG, but the channels are kept apart
        assert (raw[0, 0] < 10).all()  # black corner
    ds = build_dataset("odir", "val", root=csv_root, image_size=16, eyes="each")
    x, y = ds[0]
    assert x.shape == (3, 16, 16) and not torch.equal(x[0], x[1])  # not a replicated gray image


def test_crop_fundus_border_synthetic():
    rng = np.random.default_rng(0)
    h, w = 120, 180
    img = rng.integers(0, 9, size=(h, w, 3), dtype=np.uint8)  # dark JPEG-like noise below threshold
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - 60) ** 2 + (xx - 100) ** 2 <= 40 ** 2
    img[disc] = (200, 100, 50)
    img[2, 2] = 255  # an isolated bright pixel (text, dust) must not widen the box
    out = crop_fundus_border(img, threshold=10)
    # the disc spans rows/cols 20..100, but its extreme rows/cols hold one pixel, under 1 % of
    # the 180 (120) pixels of a row (column): the box is rows 21..99, cols 61..139, square
    assert out.shape == (79, 79, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, img[21:100, 61:140])
    # a fundus cut at the top and bottom (wider than high) is centred on a black square
    img2 = np.zeros((60, 100, 3), np.uint8)
    yy, xx = np.mgrid[:60, :100]
    img2[(yy - 30) ** 2 + (xx - 50) ** 2 <= 40 ** 2] = (150, 80, 40)
    out2 = crop_fundus_border(img2)
    assert out2.shape == (81, 81, 3)
    np.testing.assert_array_equal(out2[10:70], img2[:, 10:91])
    assert out2[:10].max() == 0 and out2[70:].max() == 0
    # nothing above the threshold: unchanged; gray input works too
    black = np.zeros((5, 7, 3), np.uint8)
    assert crop_fundus_border(black) is black
    assert crop_fundus_border(img2[..., 0]).shape == (81, 81)
    with pytest.raises(TypeError, match="uint8"):
        crop_fundus_border(img2.astype(np.float32))


def test_crop_border_in_reader(csv_root):
    ds = ODIR5K(csv_root, "val", crop_border=True)
    for i in range(len(ds)):
        raw = ds.load_raw(i)
        # square, and narrower than the 32 px photo (JPEG ringing around the 22 px disc may add a few)
        assert raw.shape[0] == raw.shape[1] and 22 <= raw.shape[0] < 32
    assert ODIR5K(csv_root, "val").load_raw(0).shape == (24, 32, 3)


def test_class_names_use_the_shipped_embeddings(csv_root):
    le = importlib.import_module("fact_fast.data.labels.embeddings")  # the package attribute is the function

    ds = ODIR5K(csv_root, "test")
    shipped = np.load(le.EMBEDDINGS_DIR / "odir.npy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the hashed fallback warns: it must not be reached
        emb = label_embeddings(ds.class_names, dataset="odir").numpy()
    np.testing.assert_array_equal(emb, shipped)
    assert not np.allclose(emb, hashed_embeddings(ds.class_names))
    assert all(len(n) > 1 for n in ds.class_names)


def test_bad_annotations(tmp_path):
    write_images(tmp_path / "ODIR-5K_Training_Dataset")
    ann = tmp_path / "ODIR-5K_Training_Annotations(Updated)_V2.csv"
    # a missing label column
    write_csv(ann, header=[h for h in HEADER if h != "G"], rows=[r[:9] + r[10:] for r in _rows()])
    with pytest.raises(ValueError, match=r"\['G'\] missing from .*V2\.csv"):
        ODIR5K(str(tmp_path), "train")
    # an unknown label value names the file, the column and the patient
    rows = _rows()
    rows[3][HEADER.index("H")] = 2
    write_csv(ann, rows=rows)
    with pytest.raises(ValueError, match=r"V2\.csv: patient ID 3, column 'H' is '2'"):
        ODIR5K(str(tmp_path), "train")
    # a duplicated patient
    write_csv(ann, rows=_rows() + [_rows()[0]])
    with pytest.raises(ValueError, match="patient ID 0 appears twice"):
        ODIR5K(str(tmp_path), "train")
    # an empty file name
    rows = _rows()
    rows[2][HEADER.index("Right-Fundus")] = ""
    write_csv(ann, rows=rows)
    with pytest.raises(ValueError, match="Right-Fundus of patient ID 2 is empty"):
        ODIR5K(str(tmp_path), "train")
    # a blank label cell is unknown (NaN), the rest of the row is kept
    rows = _rows()
    rows[4][HEADER.index("A")] = ""
    write_csv(ann, rows=rows)
    got = {}
    for s in ("train", "val", "test"):
        d = ODIR5K(str(tmp_path), s, eyes="left")
        got.update(zip(d.patient_ids, d.labels))
    want = LABELS["4"].copy()
    want[4] = np.nan
    np.testing.assert_array_equal(got["4"], want)
    os.remove(ann)
    with pytest.raises(FileNotFoundError, match="no ODIR-5K annotation file"):
        ODIR5K(str(tmp_path), "train")
    with pytest.raises(ValueError, match="eyes must be one of"):
        ODIR5K(str(tmp_path), "train", eyes="both")
    with pytest.raises(ValueError, match="eyes must be one of"):
        build_dataset("odir", "train", root=str(tmp_path), eyes="two")


def test_corrupt_workbook_names_the_file(tmp_path):
    pytest.importorskip("openpyxl")
    (tmp_path / "data.xlsx").write_bytes(b"not a zip archive")
    (tmp_path / "Training Images").mkdir()
    with pytest.raises(ValueError, match=r"cannot read workbook .*data\.xlsx"):
        ODIR5K(str(tmp_path), "train")


def test_missing_openpyxl_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "data.xlsx").write_bytes(b"PK")  # never opened: openpyxl is missing
    (tmp_path / "Training Images").mkdir()
    monkeypatch.setitem(sys.modules, "openpyxl", None)
    with pytest.raises(ImportError, match="needs openpyxl.*CSV export"):
        ODIR5K(str(tmp_path), "train")


def test_missing_and_unreadable_images(tmp_path):
    write_csv(tmp_path / "data.csv")
    write_images(tmp_path / "Training Images", skip={(0, "left"), (1, "left"), (1, "right")})
    parts = _all_splits(str(tmp_path), eyes="each")
    skipped = sorted(os.path.basename(p) for d in parts.values() for p, why in d.skipped)
    assert skipped == ["0_left.jpg", "1_left.jpg", "1_right.jpg"]
    assert all(why == "file not found" for d in parts.values() for _, why in d.skipped)
    assert "1" not in {p for d in parts.values() for p in d.patient_ids}  # no image left
    # a corrupt JPEG: the item is None with a warning naming the file, and collate drops it
    ds = parts["train"]
    bad = ds.paths[0]
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8 truncated")
    with pytest.warns(RuntimeWarning, match=os.path.basename(bad)):
        assert ds[0] is None
    with pytest.warns(RuntimeWarning):
        images, targets = collate([ds[0], ds[1]])
    assert images.shape[0] == 1 and torch.equal(targets[0], torch.from_numpy(ds.labels[1]))
    # no image at all
    empty = tmp_path / "empty"
    empty.mkdir()
    write_csv(empty / "data.csv")
    (empty / "Training Images").mkdir()
    with pytest.raises(FileNotFoundError, match="none of the train images"):
        ODIR5K(str(empty), "train")


def test_multiview_items_through_loader_workers(csv_root):
    import pickle

    ds = build_dataset("odir", "train", root=csv_root, image_size=16)
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned worker receives
    assert clone.group_ids == ds.group_ids and clone.base.paths == ds.base.paths
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(4, 2, 3, 16, 16), (3, 2, 3, 16, 16)]
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.from_numpy(ds.labels))
    assert all(b[2].all() for b in batches)
