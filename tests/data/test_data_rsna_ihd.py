"""RSNA-IHD reader: the long stage_2_train.csv, DICOM -> HU (with the 12-bit intercept fix) -> three
CT windows, splits grouped by patient/study/series from the headers, the header cache, skipped
files and bad data."""
import csv
import importlib
import os
import sys
import warnings

import numpy as np
import pytest
import torch

from fact_fast.data import RSNA_IHD_CLASS_NAMES, build_dataset, label_embeddings
from fact_fast.data.base import collate

rsna = importlib.import_module("fact_fast.data.readers.rsna_ihd")

SUBTYPES = ["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"]
KAGGLE_ORDER = SUBTYPES + ["any"]  # the order of the rows of one image in stage_2_train.csv


def write_long_csv(path, labels, extra_rows=()):
    """labels: {image_id: set of positive subtypes}; 'any' is derived as in the real file."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Label"])
        for image, pos in labels.items():
            for sub in KAGGLE_ORDER:
                w.writerow([f"{image}_{sub}", int(sub in pos or (sub == "any" and bool(pos)))])
        w.writerows(extra_rows)


def want_row(pos):
    return [float(bool(pos))] + [float(s in pos) for s in SUBTYPES]


# ----------------------------------------------------------------------------- labels (no pydicom)
def test_read_labels_reshapes_long_format(tmp_path):
    p = tmp_path / "stage_2_train.csv"
    labels = {"ID_12cadc6af": {"subdural"}, "ID_38fd7baa0": set(), "ID_6c5d82413": {"epidural", "subarachnoid"}}
    write_long_csv(p, labels, extra_rows=[
        ["ID_12cadc6af_subdural", 1],  # identical duplicates (the real file has some)
        ["ID_38fd7baa0_any", 0],
        ["ID_6c5d82413_intraventricular", 1],  # a duplicate that disagrees
    ])
    with pytest.warns(RuntimeWarning, match="disagreeing duplicate rows"):
        ids, lab, duplicates, conflicts = rsna.read_rsna_labels(str(p))
    assert ids == list(labels) and lab.dtype == np.float32 and lab.shape == (3, 6)
    assert duplicates == 2 and conflicts == [("ID_6c5d82413", "intraventricular")]
    np.testing.assert_array_equal(lab[0], want_row({"subdural"}))
    np.testing.assert_array_equal(lab[1], [0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(lab[2], [1, 1, 0, np.nan, 1, 0])
    # an image with only some of its rows: the others are unknown
    with open(p, "w") as f:
        f.write("ID,Label\nID_aaa111_any,1\nID_aaa111_subdural,1\n")
    ids, lab, _, _ = rsna.read_rsna_labels(str(p))
    np.testing.assert_array_equal(lab, [[1, np.nan, np.nan, np.nan, np.nan, 1]])


@pytest.mark.parametrize("body,message", [
    ("Image,Label\nID_a_any,0\n", r"must start with the columns \['ID', 'Label'\]"),
    ("ID,Label\nID_a_any,0\nID_a_hemorrhage,1\n", r"row 3 of .*stage_2_train\.csv: ID 'ID_a_hemorrhage'"),
    ("ID,Label\nID_a_any,0\nID_a_subdural,0.5\n", r"row 3 of .*: Label of ID_a_subdural is '0\.5'"),
    ("ID,Label\nID_a_any\n", r"row 2 of .* has 1 field"),
    ("ID,Label\nabc_any,1\n", r"ID 'abc_any' is not ID_<image>_<subtype>"),
])
def test_bad_label_csv(tmp_path, body, message):
    p = tmp_path / "stage_2_train.csv"
    p.write_text(body)
    with pytest.raises(ValueError, match=message):
        rsna.read_rsna_labels(str(p))


def test_missing_pydicom_is_a_clear_error(tmp_path, monkeypatch):
    write_long_csv(tmp_path / "stage_2_train.csv", {"ID_a": set()})
    (tmp_path / "stage_2_train").mkdir()
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ImportError, match="needs pydicom"):
        build_dataset("rsna_ihd", "train", root=str(tmp_path))


# ----------------------------------------------------------------------------- DICOM fixtures
def write_dicom(path, stored, *, patient="ID_p", study="ID_s", series="ID_r", bits_stored=16, signed=True,
                slope=1.0, intercept=-1024.0, pixel_bytes=None):
    """A CT slice as RSNA ships them ("ID_..." UIDs, 16-bit allocated); ``stored`` = raw values."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    stored = np.asarray(stored)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    with pydicom.config.disable_value_validation(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Invalid value for VR UI")  # save_as checks the "ID_..." UIDs
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = os.path.basename(path)[:-4]
        ds.Modality = "CT"
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = patient, study, series
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
        ds.PixelRepresentation = int(signed)
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.WindowCenter, ds.WindowWidth = 30, 80
        data = stored.astype(np.int16 if signed else np.uint16).tobytes()
        ds.PixelData = data if pixel_bytes is None else data[:pixel_bytes]
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(path, enforce_file_format=True)
        else:
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(path, write_like_original=False)


# patients, their studies/series and slices; P9 and P10 share a study (a data error): kept together
SLICES = [  # image id, patient, study, series, positive subtypes
    ("ID_000a1", "ID_p1", "ID_s1", "ID_r1", {"subdural"}),
    ("ID_000a2", "ID_p1", "ID_s1", "ID_r1", {"subdural", "subarachnoid"}),
    ("ID_000a3", "ID_p1", "ID_s1b", "ID_r1b", set()),
    ("ID_000b1", "ID_p2", "ID_s2", "ID_r2", set()),
    ("ID_000b2", "ID_p2", "ID_s2", "ID_r2", {"epidural"}),
    ("ID_000c1", "ID_p3", "ID_s3", "ID_r3", set()),
    ("ID_000d1", "ID_p4", "ID_s4", "ID_r4", {"intraventricular"}),
    ("ID_000e1", "ID_p5", "ID_s5", "ID_r5", set()),
    ("ID_000f1", "ID_p6", "ID_s6", "ID_r6", {"intraparenchymal"}),
    ("ID_000f2", "ID_p6", "ID_s6", "ID_r6", set()),
    ("ID_000g1", "ID_p7", "ID_s7", "ID_r7", set()),
    ("ID_000h1", "ID_p8", "ID_s8", "ID_r8", set()),
    ("ID_000i1", "ID_p9", "ID_s9", "ID_r9", {"subdural"}),
    ("ID_000i2", "ID_p10", "ID_s9", "ID_r9", set()),
    ("ID_000j1", "ID_p11", "ID_s11", "ID_r11", set()),
]
GROUP = {"ID_p9": "p9/10", "ID_p10": "p9/10"}
BAD = {  # image id -> expected skip reason
    "ID_6431af929": "PixelData holds 100 bytes, expected 128",  # short pixel payload, like the real one
    "ID_trunc0001": "PixelData holds 118 bytes, expected 128",  # file cut off
    "ID_garbage01": "unreadable DICOM (InvalidDicomError",
    "ID_missing01": "file not found",
}


def stored_for(k):
    return (np.arange(64, dtype=np.int16).reshape(8, 8) * 3 + 1000 + 10 * k)


@pytest.fixture
def rsna_root(tmp_path):
    pytest.importorskip("pydicom")
    folder = tmp_path / "stage_2_train"
    folder.mkdir()
    for k, (image, patient, study, series, _) in enumerate(SLICES):
        write_dicom(str(folder / f"{image}.dcm"), stored_for(k), patient=patient, study=study, series=series)
    write_dicom(str(folder / "ID_6431af929.dcm"), stored_for(0), patient="ID_px", pixel_bytes=100)
    write_dicom(str(folder / "ID_trunc0001.dcm"), stored_for(0), patient="ID_py")
    data = (folder / "ID_trunc0001.dcm").read_bytes()
    (folder / "ID_trunc0001.dcm").write_bytes(data[:-10])
    (folder / "ID_garbage01.dcm").write_bytes(b"\x00" * 50 + b"not a dicom file")
    labels = {image: pos for image, *_, pos in SLICES}
    labels.update({image: set() for image in BAD})
    write_long_csv(tmp_path / "stage_2_train.csv", labels, extra_rows=[["ID_000a1_subdural", 1]] * 3)
    return str(tmp_path)


def _build(root, split, **kw):
    kw.setdefault("header_cache", os.path.join(root, "headers.csv"))
    return rsna.RSNAIHD(root, split, workers=1, **kw)


def test_labels_groups_and_skips(rsna_root):
    parts = {s: _build(rsna_root, s) for s in ("train", "val", "test")}
    by_id = {image: (patient, study, series, pos) for image, patient, study, series, pos in SLICES}
    seen = []
    for ds in parts.values():
        assert ds.class_names == list(RSNA_IHD_CLASS_NAMES) and ds.channels == "rgb"
        assert ds.labels.dtype == np.float32 and ds.labels.shape == (len(ds), 6)
        for i, image in enumerate(ds.image_ids):
            patient, study, series, pos = by_id[image]
            np.testing.assert_array_equal(ds.labels[i], want_row(pos))
            assert (ds.patient_ids[i], ds.study_ids[i], ds.series_ids[i]) == (patient, study, series)
            assert ds.paths[i] == os.path.join(rsna_root, "stage_2_train", image + ".dcm")
        seen += ds.image_ids
        assert ds.duplicate_rows == 3 and ds.label_conflicts == []
        # every split lists the same skipped files, with the reason
        reasons = {os.path.basename(p)[:-4]: why for p, why in ds.skipped}
        assert set(reasons) == set(BAD)
        for image, why in BAD.items():
            assert reasons[image].startswith(why), (image, reasons[image])
    assert sorted(seen) == sorted(by_id)  # every readable slice in exactly one split
    # no patient, study or series straddles two splits (P9/P10 share a study: kept together)
    for attr in ("patient_ids", "study_ids", "series_ids"):
        sets = [set(getattr(d, attr)) for d in parts.values()]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]), attr
    groups = {GROUP.get(p, p) for p in {by_id[i][0] for i in by_id}}
    counts = {s: len({GROUP.get(p, p) for p in d.patient_ids}) for s, d in parts.items()}
    assert counts == {"train": 7, "val": 1, "test": 2} and sum(counts.values()) == len(groups)
    # grouping by series only: the second study of P1 may land elsewhere, series never straddle
    by_series = {s: _build(rsna_root, s, group_by="series") for s in ("train", "val", "test")}
    sets = [set(d.series_ids) for d in by_series.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    with pytest.raises(ValueError, match="group_by must be"):
        _build(rsna_root, "train", group_by="slice")


def test_subtypes_only_and_embeddings(rsna_root):
    ds = _build(rsna_root, "train", subtypes_only=True)
    full = _build(rsna_root, "train")
    assert ds.class_names == SUBTYPES and ds.image_ids == full.image_ids
    np.testing.assert_array_equal(ds.labels, full.labels[:, 1:])
    shipped = np.load(importlib.import_module("fact_fast.data.labels.embeddings").EMBEDDINGS_DIR / "rsna_ihd.npy")
    np.testing.assert_array_equal(label_embeddings(ds.class_names, dataset="rsna_ihd").numpy(), shipped[1:])


# HU, and the three default windows worked out by hand: channel = rint((HU - (c - w/2)) * 255 / w)
HU = [-1000, -10, 20, 30, 60, 85, 130, 180, 650, 2000]
BRAIN = [0, 0, 64, 96, 191, 255, 255, 255, 255, 255]        # 40/80: [0, 80] HU
SUBDURAL = [0, 13, 51, 64, 102, 134, 191, 255, 255, 255]    # 80/200: [-20, 180] HU
BONE = [0, 72, 75, 76, 78, 81, 85, 89, 132, 255]            # 600/2800: [-800, 2000] HU


def test_hu_and_windows_on_constructed_dicoms(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    path = str(tmp_path / "ID_hu.dcm")
    write_dicom(path, np.array([HU]) + 1024, intercept=-1024.0)
    hu = rsna.dicom_to_hu(pydicom.dcmread(path))
    assert hu.dtype == np.float32 and hu.tolist() == [HU]
    rgb = rsna.window_channels(hu)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 10, 3)
    assert rgb[0, :, 0].tolist() == BRAIN and rgb[0, :, 1].tolist() == SUBDURAL and rgb[0, :, 2].tolist() == BONE
    # slope
    write_dicom(path, np.array([[0, 500, 530]]), slope=2.0, intercept=-1000.0)
    assert rsna.dicom_to_hu(pydicom.dcmread(path)).tolist() == [[-1000, 0, 60]]
    # 12-bit unsigned with a bad intercept (0): the community fix, (stored + 1000) mod 4096 - 1000
    write_dicom(path, np.array([[0, 40, 3096, 4000, 1000]]), bits_stored=12, signed=False, intercept=0.0)
    assert rsna.dicom_to_hu(pydicom.dcmread(path)).tolist() == [[0, 40, -1000, -96, 1000]]
    # ... but a 12-bit slice with a sane intercept is left alone
    write_dicom(path, np.array([[0, 1024, 1064]]), bits_stored=12, signed=False, intercept=-1024.0)
    assert rsna.dicom_to_hu(pydicom.dcmread(path)).tolist() == [[-1024, 0, 40]]


def test_load_raw_and_items(rsna_root):
    ds = _build(rsna_root, "train")
    k = 0
    stored = stored_for([s[0] for s in SLICES].index(ds.image_ids[k]))  # written with intercept -1024
    raw = ds.load_raw(k)
    assert raw.dtype == np.uint8 and raw.shape == (8, 8, 3)
    np.testing.assert_array_equal(raw, rsna.window_channels(stored.astype(np.float32) - 1024))
    custom = _build(rsna_root, "train", windows=[(0, 100), (50, 100), (100, 100)])
    np.testing.assert_array_equal(custom.load_raw(k)[..., 1], rsna.window_channels(
        stored.astype(np.float32) - 1024, [(50, 100)])[..., 0])
    for bad in ([(40, 80), (80, 200)], [(40, 0), (80, 200), (600, 2800)], "brain"):
        with pytest.raises(ValueError, match="windows must be"):
            _build(rsna_root, "train", windows=bad)
    built = build_dataset("rsna_ihd", "train", root=rsna_root, image_size=16, workers=1,
                          header_cache=os.path.join(rsna_root, "headers.csv"))
    images, targets = collate([built[i] for i in range(3)])
    assert images.shape == (3, 3, 16, 16) and torch.equal(targets, torch.from_numpy(built.labels[:3]))
    # a file damaged after the dataset was built: None with a warning naming it, never a crash
    with open(built.paths[1], "wb") as f:
        f.write(b"garbage")
    with pytest.warns(RuntimeWarning, match=os.path.basename(built.paths[1])):
        assert built[1] is None


def test_header_cache(rsna_root, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache" / "h.csv")
    first = _build(rsna_root, "train", header_cache=cache)
    assert os.path.isfile(cache) and first.header_cache == cache
    calls = []
    real = rsna.read_dicom_header
    monkeypatch.setattr(rsna, "read_dicom_header", lambda p: calls.append(p) or real(p))
    again = _build(rsna_root, "train", header_cache=cache)
    assert calls == [] and again.image_ids == first.image_ids  # nothing read again
    # a changed file (other size) is read again, and only it
    changed = os.path.join(rsna_root, "stage_2_train", "ID_000j1.dcm")
    write_dicom(changed, np.zeros((4, 4)), patient="ID_p11", study="ID_s11", series="ID_r11")
    _build(rsna_root, "test", header_cache=cache)
    assert calls == [changed]
    # default location: the fact_fast cache dir, keyed by the DICOM folder
    monkeypatch.setenv("FACT_FAST_CACHE_DIR", str(tmp_path / "ffcache"))
    ds = rsna.RSNAIHD(rsna_root, "val", workers=1)
    assert os.path.dirname(ds.header_cache) == str(tmp_path / "ffcache") and os.path.isfile(ds.header_cache)
    # a table shipped beside the data is used as well
    os.replace(ds.header_cache, os.path.join(rsna_root, "fact_fast_rsna_ihd_headers.csv"))
    calls.clear()
    rsna.RSNAIHD(rsna_root, "val", workers=1)
    assert calls == []


def test_parallel_header_scan_matches(rsna_root, monkeypatch):
    serial = _build(rsna_root, "train", header_cache=os.path.join(rsna_root, "serial.csv"))
    monkeypatch.setattr(rsna, "_PARALLEL_MIN_FILES", 1)
    parallel = rsna.RSNAIHD(rsna_root, "train", workers=2, header_cache=os.path.join(rsna_root, "par.csv"))
    assert parallel.image_ids == serial.image_ids and parallel.skipped == serial.skipped
    assert parallel.patient_ids == serial.patient_ids


def test_layout_errors(tmp_path, rsna_root):
    pytest.importorskip("pydicom")
    with pytest.raises(FileNotFoundError, match="no stage_2_train.csv or stage_1_train.csv"):
        rsna.RSNAIHD(str(tmp_path / "stage_2_train"), "train")
    with pytest.raises(FileNotFoundError, match="DICOM folder not found"):
        rsna.RSNAIHD(rsna_root, "train", image_dir="stage_2_test")
    # the stage-1 names and explicit paths
    os.rename(os.path.join(rsna_root, "stage_2_train.csv"), os.path.join(rsna_root, "stage_1_train.csv"))
    os.rename(os.path.join(rsna_root, "stage_2_train"), os.path.join(rsna_root, "stage_1_train_images"))
    ds = _build(rsna_root, "train")
    assert ds.image_dir == os.path.join(rsna_root, "stage_1_train_images") and len(ds) > 0
    ds2 = rsna.RSNAIHD(None, "train", csv=os.path.join(rsna_root, "stage_1_train.csv"),
                       image_dir=os.path.join(rsna_root, "stage_1_train_images"), workers=1,
                       header_cache=os.path.join(rsna_root, "headers.csv"))
    assert ds2.image_ids == ds.image_ids
    # nothing readable at all
    empty = tmp_path / "empty"
    (empty / "stage_2_train").mkdir(parents=True)
    write_long_csv(empty / "stage_2_train.csv", {"ID_x": set()})
    with pytest.raises(FileNotFoundError, match="none of the 1 images"):
        rsna.RSNAIHD(str(empty), "train", header_cache=str(empty / "h.csv"))
