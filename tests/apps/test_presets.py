"""The shipped per-dataset presets (configs/*.yaml) run end to end on small fixtures in each
dataset's published layout: ``python -m fact_fast.train --config <preset> --data-root <fixture>``
(real model, augmentation, EMA, AMP and the on-disk cache as the preset sets them; only the size of
the run is cut down)."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from fact_fast import train
from fact_fast.config import parse_config, preset_names
from fact_fast.data import CXR_LT_CLASS_NAMES, NIH_CLASS_NAMES, ODIR_CLASS_NAMES, RSNA_IHD_CLASS_NAMES

N = 40  # samples (patients for ODIR) per fixture; every split gets positives of several classes


def _labels(C, seed, p=0.3):
    rng = np.random.default_rng(seed)
    y = (rng.random((N, C)) < p).astype(int)
    y[np.arange(N), np.arange(N) % C] = 1  # each class occurs, spread over all splits
    return y


def _image(k, shape):
    rng = np.random.default_rng(k)
    return rng.integers(0, 255, shape, dtype=np.uint8)


def nih_fixture(root):
    y = _labels(len(NIH_CLASS_NAMES), 1)
    names = [f"{k:08d}_000.png" for k in range(N)]
    with open(root / "Data_Entry_2017_v2020.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                    "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
                    "OriginalImagePixelSpacing[x", "y]"])
        for k, n in enumerate(names):
            found = "|".join(c for c, v in zip(NIH_CLASS_NAMES, y[k]) if v) or "No Finding"
            w.writerow([n, found, 0, k + 1, 50, "M", "PA", 80, 80, 0.14, 0.14])
    (root / "train_val_list.txt").write_text("\n".join(names[:30]) + "\n")
    (root / "test_list.txt").write_text("\n".join(names[30:]) + "\n")
    (root / "images").mkdir()
    for k, n in enumerate(names):
        Image.fromarray(_image(k, (80, 80))).save(root / "images" / n)


def odir_fixture(root):
    openpyxl = pytest.importorskip("openpyxl")
    y = _labels(len(ODIR_CLASS_NAMES), 2)
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["ID", "Patient Age", "Patient Sex", "Left-Fundus", "Right-Fundus", "Left-Diagnostic Keywords",
               "Right-Diagnostic Keywords", "N", "D", "G", "C", "A", "H", "M", "O"])
    (root / "Training Images").mkdir()
    for k in range(N):
        ws.append([k, 60, "Male", f"{k}_left.jpg", f"{k}_right.jpg", "kw", "kw"] + y[k].tolist())
        for eye in ("left", "right"):
            img = np.zeros((60, 80, 3), np.uint8)  # a fundus: a bright disc on a black border
            yy, xx = np.mgrid[:60, :80]
            img[(yy - 30) ** 2 + (xx - 40) ** 2 < 26 ** 2] = _image(k, (3,))
            Image.fromarray(img).save(root / "Training Images" / f"{k}_{eye}.jpg", quality=95)
    wb.save(root / "data.xlsx")


def rsna_fixture(root):
    pytest.importorskip("pydicom")
    from tests.data.test_data_rsna_ihd import write_dicom

    y = _labels(len(RSNA_IHD_CLASS_NAMES) - 1, 3)
    (root / "stage_2_train").mkdir()
    rows = []
    for k in range(N):
        image = f"ID_{k:09x}"
        write_dicom(str(root / "stage_2_train" / f"{image}.dcm"), _image(k, (16, 16)).astype(np.int16) * 4,
                    patient=f"ID_p{k}", study=f"ID_s{k}", series=f"ID_r{k}")
        sub = y[k]
        rows += [[f"{image}_any", int(sub.any())]] + [[f"{image}_{c}", int(v)]
                                                      for c, v in zip(RSNA_IHD_CLASS_NAMES[1:], sub)]
    with open(root / "stage_2_train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ID", "Label"])
        w.writerows(rows)


def cxr_lt_fixture(root):
    from tests.data.test_data_cxr_lt import rel_path, write_split

    y = _labels(len(CXR_LT_CLASS_NAMES), 4, p=0.1)
    image_root = root / "physionet.org" / "files" / "mimic-cxr-jpg" / "2.0.0"
    labels = root / "physionet.org" / "files" / "cxr-lt-iccv-workshop-cvamd" / "2.0.0" / "cxr-lt-2024"
    labels.mkdir(parents=True)
    records = []
    for k in range(N):
        subject, study, dicom = f"1{k:07d}", f"5{k:07d}", f"{k:08x}-0000-0000-0000-000000000000"
        pos = {c for c, v in zip(CXR_LT_CLASS_NAMES, y[k]) if v}
        records.append((subject, study, dicom, "PA", pos))
        p = image_root / rel_path(subject, study, dicom)
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(k, (72, 72))).save(p, quality=95)
    for name, part in (("train_labeled.csv", records[:26]), ("development_labeled_task1.csv", records[26:33]),
                       ("test_labeled_task1.csv", records[33:])):
        write_split(labels / name, part, "2024")


FIXTURES = {"nih": nih_fixture, "odir": odir_fixture, "rsna_ihd": rsna_fixture, "cxr_lt": cxr_lt_fixture}


def test_every_dataset_preset_has_a_fixture_and_parses():
    dataset_presets = {n for n in preset_names() if parse_config(["--config", n])[0].dataset == n}
    assert dataset_presets == set(FIXTURES)
    for name in sorted(FIXTURES):
        cfg, _ = parse_config(["--config", name])
        assert cfg.dataset == name and cfg.model == "fact_resnet50" and cfg.pretrained is True


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(FIXTURES))
def test_preset_trains_on_a_published_layout_fixture(preset, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    FIXTURES[preset](root)
    out = tmp_path / "run"
    rc = train.main(["--config", preset, "--data-root", str(root), "--out", str(out), "--cache-dir",
                     str(tmp_path / "cache"), "--no-pretrained", "--epochs", "1", "--max-steps", "2",
                     "--batch-size", "4", "--image-size", "64", "--resize", "72", "--workers", "0",
                     "--threads", "1", "--no-progress"])
    assert rc == 0
    with open(out / "metrics.jsonl") as fh:
        log = [json.loads(line) for line in fh]
    assert log[-1]["step"] == 2 and log[-1]["val_mAP"] is not None
    with open(out / "metrics_test.json") as fh:
        test = json.load(fh)
    assert test["dataset"] == preset and test["model"] == "fact_resnet50" and test["mAP"] is not None
    with open(out / "config.json") as fh:
        cfg = json.load(fh)
    assert cfg["ema_decay"] and cfg["amp"] and cfg["label_graph"]["num_classes"] == test["num_classes"]
    assert any(f.endswith(".npy") for f in os.listdir(tmp_path / "cache")), "the preset's image cache was not built"
