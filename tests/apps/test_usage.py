"""Using a trained model: predict (+ explain), report and export on tiny trained runs.

Two runs are trained once per module: FACT (``fact_test``) and ``test_poolnet``, a minimal
sigmoid model defined here that stands in for the baselines (it has no ``evidence_maps``, so it is
explained with Grad-CAM, and no codebook). The heatmap checks build models whose evidence
location is known by construction (the backbone is average pooling, so a feature cell sees only
its own image patch) and plant a bright square off the diagonal: a flip or transpose anywhere
between feature positions, upsampling, the PNG and ``peak_xy`` moves the peak out of the square.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fact_fast import export, predict, report, train
from fact_fast.data import ImagePipeline
from fact_fast.engine import TEST_SCORES_FILE, load_scores
from fact_fast.inference import (checkpoint_dataset, load_trained_model, positive_calls,
                                 score_checkpoint_split)
from fact_fast.inference import export as export_lib
from fact_fast.inference.explain import (DISPLAY_SIDE, class_heatmaps, display_scale, overlay, parse_explain_classes,
                                         write_explanations)
from fact_fast.inference.inputs import ImageFiles, min_image_side
from fact_fast.inference.predictions import predict_images
from fact_fast.metrics import choose_thresholds, compute_metrics
from fact_fast.metrics.thresholds import MIN_EXAMPLES
from fact_fast.models import ModelOutput, MultiLabelModel, TaskInfo, create_model, register_model
from fact_fast.reporting import build_report, statistics
from fact_fast.utils.checkpoint import load_checkpoint
from tests.helpers import REPO_ROOT

TINY = ["--dataset", "synthetic_motifs", "--image-size", "64", "--dataset-kwargs", "num_samples=64", "--batch-size", "16", "--no-progress",
        "--threads", "1", "--warmup-epochs", "0.5"]


# -- a minimal non-FACT model (stands in for the baselines) --------------------------------------------
@dataclass
class PoolNetConfig:
    width: int = 4
    pool: int = 8


class PoolNet(MultiLabelModel):
    """1x1 conv + ReLU + average pooling (the "backbone", explained by Grad-CAM) -> mean -> linear."""

    config_class = PoolNetConfig

    def __init__(self, config, task):
        super().__init__(config, task)
        self.backbone = nn.Sequential(nn.Conv2d(3, config.width, 1), nn.ReLU(), nn.AvgPool2d(config.pool))
        self.head = nn.Linear(config.width, self.num_classes)

    def forward(self, images, view_mask=None):
        logits = self.head(self.backbone(images).mean((2, 3)))
        return ModelOutput(torch.sigmoid(logits), logits, {})

    def loss(self, output, targets, mask=None):
        w = None if mask is None else mask.float()
        return {"total": F.binary_cross_entropy_with_logits(output.logits, targets, weight=w)}


register_model("test_poolnet", PoolNet, description="test-only sigmoid model without evidence maps")


@pytest.fixture(scope="module")
def fact_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("fact_run"))
    assert train.main(TINY + ["--model", "fact_test", "--epochs", "2", "--out", out]) == 0
    return out


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pool_run"))
    assert train.main(TINY + ["--model", "test_poolnet", "--epochs", "1", "--lr", "0.01", "--out", out]) == 0
    return out


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory, fact_run):
    """Two readable test images, a corrupt file, a too-small image."""
    d = tmp_path_factory.mktemp("images")
    ckpt = load_checkpoint(os.path.join(fact_run, "best.pt"))
    ds = checkpoint_dataset(ckpt, "test")
    for i in range(2):
        Image.fromarray(ds.load_raw(i)).save(d / f"ok{i}.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.fromarray(np.full((5, 40), 128, np.uint8)).save(d / "small.png")
    return d


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# -- training outputs ------------------------------------------------------------------------------------
def test_training_writes_test_scores_that_match_best_pt(fact_run):
    scores, targets, names = load_scores(os.path.join(fact_run, TEST_SCORES_FILE))
    model, ckpt = load_trained_model(os.path.join(fact_run, "best.pt"))
    assert names == ckpt.class_names and scores.shape == targets.shape == (64, len(names))
    again, t2 = score_checkpoint_split(model, ckpt, "test")
    np.testing.assert_allclose(again, scores, atol=1e-6)
    np.testing.assert_array_equal(t2, targets)
    test = json.load(open(os.path.join(fact_run, "metrics_test.json")))
    assert compute_metrics(scores, targets, threshold=0.5)["mAP"] == pytest.approx(test["mAP"], abs=1e-9)


# -- thresholds ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["f1", "youden"])
def test_stored_thresholds_round_trip(fact_run, method):
    """best.pt's thresholds are choose_thresholds of best.pt's own validation scores, exactly."""
    model, ckpt = load_trained_model(os.path.join(fact_run, "best.pt"))
    scores, targets = score_checkpoint_split(model, ckpt, "val")
    expected = choose_thresholds(scores, targets, method=method, default=ckpt.default_threshold)
    np.testing.assert_array_equal(np.asarray(ckpt.thresholds[method], dtype=np.float64), expected)


def test_predict_val_f1_thresholds_reproduce_the_best_validation_f1(fact_run, tmp_path):
    """Stored F1 thresholds, applied by predict to the validation split and read back from its CSV,
    give every class with enough validation positives the best F1 any cut of its validation scores
    can give; the others keep the model's threshold δ."""
    out = tmp_path / "val.csv"
    assert predict.main([fact_run, "dataset:val", "--out", str(out), "--thresholds", "val-f1", "--no-progress"]) == 0
    ckpt = load_checkpoint(os.path.join(fact_run, "best.pt"))
    names, thr = ckpt.class_names, np.asarray(ckpt.thresholds["f1"], dtype=np.float64)
    rows = read_csv(out)
    scores = np.array([[float(r[f"score:{c}"]) for c in names] for r in rows])
    calls = np.array([[int(r[f"positive:{c}"]) for c in names] for r in rows])
    np.testing.assert_array_equal(calls, (scores > thr[None]).astype(int))
    targets = checkpoint_dataset(ckpt, "val").labels
    chosen = 0
    for c in range(len(names)):
        y = targets[:, c]
        if y.sum() < MIN_EXAMPLES:
            assert thr[c] == ckpt.default_threshold, names[c]
            continue
        chosen += 1
        s = scores[:, c]
        cuts = np.concatenate([np.unique(s), [np.nextafter(s.min(), -np.inf)]])
        best = max(2 * ((s > t) & (y == 1)).sum() / ((s > t).sum() + y.sum()) for t in cuts)
        tp = (calls[:, c] & (y == 1)).sum()
        assert 2 * tp / (calls[:, c].sum() + y.sum()) == pytest.approx(best, abs=1e-12), names[c]
    assert chosen > 0


def test_positive_calls_are_strict_and_float64():
    s = np.array([[0.5, np.float32(0.1)]], dtype=np.float32)
    thr = np.array([0.5, float(np.float32(0.1))])  # exactly the float32 score -> not positive
    np.testing.assert_array_equal(positive_calls(s, thr), [[False, False]])
    thr = np.array([np.nextafter(0.5, 0), np.nextafter(float(np.float32(0.1)), 0)])
    np.testing.assert_array_equal(positive_calls(s, thr), [[True, True]])
    with pytest.raises(ValueError, match="one value per class"):
        positive_calls(s, np.array([0.5]))


# -- predict ---------------------------------------------------------------------------------------------
def test_predict_csv_rows_columns_and_errors(fact_run, images_dir, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    missing = str(images_dir / "missing.png")
    rc = predict.main([fact_run, str(images_dir), missing, "--out", str(out), "--no-progress", "--batch-size", "3"])
    assert rc == 0
    names = load_checkpoint(os.path.join(fact_run, "best.pt")).class_names
    rows = read_csv(out)
    with open(out) as fh:
        header = next(csv.reader(fh))
    assert header == (["path", "error"] + [f"score:{c}" for c in names] + [f"positive:{c}" for c in names]
                      + ["positives"])
    by_name = {os.path.basename(r["path"]): r for r in rows}
    assert [os.path.basename(r["path"]) for r in rows] == ["corrupt.png", "ok0.png", "ok1.png", "small.png",
                                                           "missing.png"]
    assert by_name["corrupt.png"]["error"].startswith("unreadable image")
    assert by_name["missing.png"]["error"] == "file not found"
    small = by_name["small.png"]["error"]
    assert "image too small: 40x5 px" in small and "at least 8 px" in small
    for bad in ("corrupt.png", "missing.png", "small.png"):
        assert all(by_name[bad][f"score:{c}"] == "" for c in names)
    model, ckpt = load_trained_model(os.path.join(fact_run, "best.pt"))
    ds = checkpoint_dataset(ckpt, "test")
    with torch.no_grad():
        expected = model(torch.stack([ds[i][0] for i in range(2)])).scores.numpy()
    for i in range(2):
        r = by_name[f"ok{i}.png"]
        assert r["error"] == ""
        got = np.array([float(r[f"score:{c}"]) for c in names])
        np.testing.assert_allclose(got, expected[i], atol=1e-6)
        calls = [c for c in names if r[f"positive:{c}"] == "1"]
        assert r["positives"] == "|".join(calls)
        assert calls == [c for c, s in zip(names, got) if s > 0.5]
    assert "5 images, 2 scored, 3 not scored" in capsys.readouterr().out


def test_predict_json_and_csv_input(fact_run, images_dir, tmp_path):
    names = load_checkpoint(os.path.join(fact_run, "best.pt")).class_names
    listing = tmp_path / "list.csv"
    rel = os.path.relpath(images_dir / "ok1.png", tmp_path)
    with open(listing, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "split"] + list(reversed(names)) + ["age"])  # labels in any order, metadata ignored
        w.writerow([rel, "test"] + ["0"] * len(names) + ["63"])
    out = tmp_path / "pred.json"
    assert predict.main([fact_run, str(listing), "--out", str(out), "--thresholds", "val-youden",
                         "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert data["class_names"] == names and data["threshold_mode"] == "val-youden"
    assert data["thresholds"] == load_checkpoint(os.path.join(fact_run, "best.pt")).thresholds["youden"]
    (row,) = data["predictions"]
    assert os.path.samefile(row["path"], images_dir / "ok1.png") and row["error"] == ""
    assert [row[f"positive:{c}"] for c in names] == [int(row[f"score:{c}"] > t)
                                                    for c, t in zip(names, data["thresholds"])]


def test_predict_bad_inputs_name_the_problem(fact_run, images_dir, tmp_path, capsys):
    out = str(tmp_path / "p.csv")
    assert predict.main([str(tmp_path / "nope.pt"), str(images_dir), "--out", out]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    bad_ckpt = tmp_path / "corrupt.pt"
    bad_ckpt.write_bytes(b"garbage")
    assert predict.main([str(bad_ckpt), str(images_dir), "--out", out]) == 2
    assert "corrupt or not a PyTorch file" in capsys.readouterr().err
    wrong = tmp_path / "wrong_labels.csv"
    wrong.write_text("path,Pneumonia,Effusion\nok0.png,1,0\n")
    assert predict.main([fact_run, str(wrong), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "wrong_labels.csv" in err and "unexpected ['Pneumonia']" in err and "'Hernia'" in err
    assert predict.main([fact_run, "dataset:holdout", "--out", out]) == 2
    assert "expected dataset:train" in capsys.readouterr().err
    assert predict.main([fact_run, str(tmp_path / "notes.txt"), "--out", out]) == 2
    assert "not an image file" in capsys.readouterr().err
    assert predict.main([os.path.join(fact_run, "last.pt"), str(images_dir), "--out", out,
                         "--thresholds", "val-f1"]) == 2
    assert "no val-f1 thresholds" in capsys.readouterr().err
    # every image unreadable: the output is written, the exit code says nothing was scored
    assert predict.main([fact_run, str(images_dir / "corrupt.png"), "--out", out, "--no-progress"]) == 1
    assert len(read_csv(out)) == 1


def test_dataset_split_with_another_label_set_is_refused(fact_run):
    ckpt = load_checkpoint(os.path.join(fact_run, "best.pt"))
    other = replace(ckpt, class_names=["Pneumonia"] + ckpt.class_names[1:])
    with pytest.raises(ValueError, match=r"missing \['Pneumonia'\], unexpected \['Effusion'\]"):
        checkpoint_dataset(other, "val")


def test_min_image_side_rule():
    assert min_image_side(ImagePipeline(image_size=64)) == 8
    assert min_image_side(ImagePipeline(image_size=224)) == 28
    assert min_image_side(ImagePipeline(image_size=224, resize=256)) == 32


# -- explain ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("run", ["fact_run", "pool_run"])
def test_explain_writes_overlays_and_json(run, images_dir, tmp_path, request):
    run_dir = request.getfixturevalue(run)
    out, expl = tmp_path / "p.csv", tmp_path / "expl"
    # val-f1: cuts inside the validation score range, so a barely trained model still has positives
    assert predict.main([run_dir, str(images_dir), "--out", str(out), "--explain", str(expl), "--thresholds",
                         "val-f1", "--no-progress"]) == 0
    records = json.loads((expl / "explanations.json").read_text())
    assert [os.path.basename(r["image"]) for r in records] == ["ok0.png", "ok1.png"]
    rows = {os.path.basename(r["path"]): r for r in read_csv(out)}
    n_png = 0
    for r in records:
        row = rows[os.path.basename(r["image"])]
        assert r["positives"] == [c for c in row["positives"].split("|") if c]
        assert [p["class"] for p in r["classes"]] == r["positives"]  # the default: the positive classes
        assert row["explained"] == ("|".join(r["positives"]) or "no positive class")
        for p in r["classes"]:
            assert p["positive"]
            n_png += 1
            with Image.open(expl / p["heatmap"]) as im:
                assert im.size == (64 * display_scale(64),) * 2 and im.mode == "RGB"
            assert 0 <= p["peak_xy"][0] < 64 and 0 <= p["peak_xy"][1] < 64
            if run == "fact_run":
                assert r["method"] == "interface attention" and r["grid_hw"] == [2, 2]
                assert sum(a["positions"] for a in p["atoms"]) <= 4 and p["atoms"][0]["share"] > 0
            else:
                assert r["method"] == "Grad-CAM"
    assert n_png == len([f for f in os.listdir(expl) if f.endswith(".png")]) > 0


@pytest.fixture(scope="module")
def weak_run(tmp_path_factory):
    """FACT after 5 optimizer steps: a weak model, as a user has when first looking."""
    out = str(tmp_path_factory.mktemp("weak_run"))
    assert train.main(TINY + ["--model", "fact_test", "--epochs", "2", "--max-steps", "5", "--out", out]) == 0
    return out


def test_explain_classes_top1_from_the_command_line(weak_run, tmp_path):
    """As a user runs it, from a plain shell: one heatmap per test image, of its highest-scoring class."""
    out, expl = tmp_path / "pred.csv", tmp_path / "expl"
    repo = REPO_ROOT
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "PYTHONPATH": repo, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "fact_fast.predict", weak_run, "dataset:test", "--explain",
                           str(expl), "--explain-classes", "top1", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    names = load_checkpoint(os.path.join(weak_run, "best.pt")).class_names
    rows = read_csv(out)
    n = len(checkpoint_dataset(load_checkpoint(os.path.join(weak_run, "best.pt")), "test"))
    assert len(rows) == n > 0 and all(r["error"] == "" for r in rows)
    records = json.loads((expl / "explanations.json").read_text())
    pngs = sorted(f for f in os.listdir(expl) if f.endswith(".png"))
    assert len(records) == len(pngs) == n
    assert f"wrote {n} heatmaps" in done.stdout
    for k, (row, record) in enumerate(zip(rows, records)):
        scores = np.array([float(row[f"score:{c}"]) for c in names])
        top = names[int(np.argmax(scores))]
        (item,) = record["classes"]
        assert record["row"] == k and item["class"] == top == row["explained"]
        assert item["positive"] == (row[f"positive:{top}"] == "1")
        assert item["heatmap"] in pngs and item["heatmap"].endswith(f"__{top}.png")


@pytest.mark.parametrize("run", ["fact_run", "pool_run"])
def test_explain_classes_choose_what_is_drawn(run, tmp_path, request):
    """positive / topK / names, for FACT's interface attention and for Grad-CAM alike."""
    run_dir = request.getfixturevalue(run)
    model, ckpt = load_trained_model(os.path.join(run_dir, "best.pt"))
    names = ckpt.class_names
    pipeline = ImagePipeline.from_dict(ckpt.preprocessing)
    ds = checkpoint_dataset(ckpt, "test")
    candidates = torch.stack([ds[i][0] for i in range(min(8, len(ds)))])
    with torch.no_grad():
        candidate_scores = model(candidates).scores.numpy()
    # image 0: the highest score anywhere, on its class top0; image 1: the lowest score on top0
    first, top0 = np.unravel_index(int(np.argmax(candidate_scores)), candidate_scores.shape)
    second = int(np.argmin(candidate_scores[:, top0]))
    assert candidate_scores[second, top0] < candidate_scores[first, top0], "the test images score alike"
    images = [candidates[first], candidates[second]]
    scores = candidate_scores[[first, second]]
    items = [(i, f"img{i}", images[i]) for i in range(2)]
    # image 0: exactly its highest-scoring class is positive; image 1: nothing passes
    top0 = int(top0)
    thresholds = np.full(len(names), 2.0)
    thresholds[top0] = np.nextafter(float(scores[0, top0]), -np.inf)

    expl = tmp_path / "positive"
    assert write_explanations(model, ckpt.class_names, pipeline, items, scores, thresholds, str(expl)) == 1
    first, second = json.loads((expl / "explanations.json").read_text())
    assert first["positives"] == [names[top0]] and [p["class"] for p in first["classes"]] == [names[top0]]
    assert second["positives"] == [] and second["classes"] == []
    assert second["note"].startswith("no positive class")
    assert sorted(os.listdir(expl)) == sorted(["explanations.json", first["classes"][0]["heatmap"]])

    expl = tmp_path / "top3"
    assert write_explanations(model, ckpt.class_names, pipeline, items, scores, thresholds, str(expl), "top3") == 6
    records = json.loads((expl / "explanations.json").read_text())
    for i, record in enumerate(records):
        order = sorted(range(len(names)), key=lambda c: (-float(scores[i, c]), c))[:3]
        assert [p["class"] for p in record["classes"]] == [names[c] for c in order]
        assert [p["positive"] for p in record["classes"]] == [i == 0 and c == top0 for c in order]
        # the drawn map is that class's own map: its range matches class_heatmaps for the class
        for p, c in zip(record["classes"], order):
            (heat,), _ = class_heatmaps(model, images[i], [c])
            assert p["heat_range"] == pytest.approx([float(heat.min()), float(heat.max())], abs=1e-6)

    expl = tmp_path / "names"
    wanted = [names[-1], names[0]]
    assert write_explanations(model, ckpt.class_names, pipeline, items, scores, thresholds, str(expl),
                              ",".join(wanted)) == 4
    for record in json.loads((expl / "explanations.json").read_text()):
        assert [p["class"] for p in record["classes"]] == wanted
        assert record["method"] == ("interface attention" if run == "fact_run" else "Grad-CAM")


def test_explain_classes_bad_values_name_the_option(fact_run, images_dir, tmp_path, capsys):
    names = load_checkpoint(os.path.join(fact_run, "best.pt")).class_names
    for bad, message in (("top0", "K must be between 1"), (f"top{len(names) + 1}", "K must be between 1"),
                         ("Effusion,Nodulee", "unknown class name(s) ['Nodulee']"), ("", "--explain-classes"),
                         ("best", "unknown class name(s) ['best']")):
        with pytest.raises(ValueError, match="--explain-classes") as err:
            parse_explain_classes(bad, names)
        assert message in str(err.value)
    assert parse_explain_classes("top1", names) == ("top", 1)
    assert parse_explain_classes(f"{names[2]}, {names[0]}", names) == ("names", [2, 0])
    out = str(tmp_path / "p.csv")
    assert predict.main([fact_run, str(images_dir), "--out", out, "--explain", str(tmp_path / "e"),
                         "--explain-classes", "top0"]) == 2
    assert "--explain-classes top0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        predict.main([fact_run, str(images_dir), "--out", out, "--explain-classes", "top1"])
    assert exit_.value.code == 2 and "--explain-classes needs --explain" in capsys.readouterr().err


def _planted_image(path, side=128, square=(80, 16, 16)):
    """Dim noise with a white square at (x0, y0, size) -- off the diagonal, so a transpose moves it."""
    rng = np.random.default_rng(0)
    img = rng.integers(20, 60, size=(side, side), dtype=np.uint8)
    x0, y0, s = square
    img[y0:y0 + s, x0:x0 + s] = 255
    Image.fromarray(img).save(path)
    return x0, y0, s


def _explain_planted(model, tmp_path, pipeline, class_names):
    path = tmp_path / "planted.png"
    x0, y0, s = _planted_image(path, side=pipeline.image_size)
    items = ImageFiles([str(path)], pipeline)
    scores, errors, kept = predict_images(model, items, keep=1)
    assert errors == [""]
    thresholds = np.array([-1.0] + [2.0] * (len(class_names) - 1))  # class 0 positive, whatever its score
    assert write_explanations(model, class_names, pipeline, [(0, str(path), kept[0])], scores,
                              thresholds, str(tmp_path / "expl")) == 1
    (record,) = json.loads((tmp_path / "expl" / "explanations.json").read_text())
    (p,) = record["classes"]
    return record, p, (x0, y0, s), kept[0]


def _assert_peak_in_square(record, p, square, tmp_path, image_size):
    x0, y0, s = square
    px, py = p["peak_xy"]
    assert x0 <= px < x0 + s and y0 <= py < y0 + s, (p["peak_xy"], square)
    # the PNG shows the same place: the square's centre has the colour of the hottest heat on white
    k = record["png_scale"]
    assert k == display_scale(image_size) and image_size * k >= DISPLAY_SIDE
    png = np.asarray(Image.open(tmp_path / "expl" / p["heatmap"]).convert("RGB")).astype(int)
    hottest = overlay(np.ones((1, 1, 3)), np.ones((1, 1)))[0, 0].astype(int)
    cx, cy = (x0 + s // 2) * k, (y0 + s // 2) * k
    assert np.abs(png[cy, cx] - hottest).max() <= 4
    assert np.abs(png[cx, cy] - hottest).max() > 40  # the transposed place is not hot


def test_fact_heatmap_peaks_where_the_class_was_planted(tmp_path):
    """FACT with an average-pooling "backbone" (feature cell = mean of its 16x16 patch), a codebook
    of brightness levels and a class-0 query along the brightness direction: its interface
    attention is monotone in patch brightness by construction, so it must peak on the square."""
    torch.manual_seed(0)
    task = TaskInfo(class_names=["Planted", "Other"])
    model = create_model("fact_test", task, use_gcn=False).eval()
    d = model.config.dim
    u = torch.zeros(d)
    u[3] = 1.0
    model.backbone = nn.AvgPool2d(16)
    model.proj = nn.Conv2d(3, d, 1)
    with torch.no_grad():
        model.proj.weight.copy_((u / 3).view(d, 1, 1, 1).expand(d, 3, 1, 1))
        model.proj.bias.zero_()
        levels = torch.linspace(-3, 3, model.vq.num_codes)
        model.vq.codebook.copy_(levels[:, None] * u[None])
        model.vq.initialized.fill_(True)
        model.interface.queries.zero_()
        model.interface.queries[0] = 40.0 * u  # dark patches: σ ≈ 1e-5, the square: σ ≈ 1
    pipeline = ImagePipeline(image_size=128, channels="gray")
    record, p, square, image = _explain_planted(model, tmp_path, pipeline, task.class_names)
    assert record["method"] == "interface attention" and record["grid_hw"] == [8, 8]
    _assert_peak_in_square(record, p, square, tmp_path, 128)
    # the atom that carried the evidence is the one the square's cell was quantised to
    codes = model.evidence_maps(image.unsqueeze(0))["codes"][0]
    x0, y0, s = square
    assert p["atoms"][0]["atom"] == int(codes[y0 // 16, x0 // 16]) and p["atoms"][0]["positions"] == 1


def test_gradcam_heatmap_peaks_where_the_class_was_planted(tmp_path):
    """PoolNet whose 1x1 conv reads brightness and whose head weighs it positively: Grad-CAM is
    ReLU(positive weight x pooled brightness), largest on the planted square."""
    task = TaskInfo(class_names=["Planted", "Other"])
    model = PoolNet(PoolNetConfig(width=1, pool=8), task).eval()
    with torch.no_grad():
        model.backbone[0].weight.fill_(1 / 3)
        model.backbone[0].bias.zero_()
        model.head.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        model.head.bias.zero_()
    pipeline = ImagePipeline(image_size=128, channels="gray")
    record, p, square, _ = _explain_planted(model, tmp_path, pipeline, task.class_names)
    assert record["method"] == "Grad-CAM"
    _assert_peak_in_square(record, p, square, tmp_path, 128)


def test_class_heatmaps_cover_the_input(fact_run):
    model, ckpt = load_trained_model(os.path.join(fact_run, "best.pt"))
    image = checkpoint_dataset(ckpt, "test")[0][0]
    heats, extras = class_heatmaps(model, image, [0, 3])
    assert heats.shape == (2, 64, 64) and heats.dtype == np.float32
    assert extras["maps"].shape == (2, 2, 2) and extras["codes"].shape == (2, 2)
    assert 0 <= heats.min() and heats.max() <= 1


# -- report ----------------------------------------------------------------------------------------------
REPORT_PNGS = {"training_curves.png", "ap_auc_vs_prevalence.png", "pr_curves.png", "roc_curves.png",
               "reliability.png", "label_graph.png", "cooccurrence.png"}


def _check_report(out_dir, pngs):
    files = set(os.listdir(out_dir))
    assert pngs | {"report.html", "thresholds.csv"} == files
    html = open(os.path.join(out_dir, "report.html")).read()
    assert html.count("src='data:image/png;base64,") == len(pngs)
    import base64
    import io
    import re

    for b64 in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html):
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            im.verify()
    for f in pngs:
        with Image.open(os.path.join(out_dir, f)) as im:
            assert im.format == "PNG" and min(im.size) >= 300
    return html


def test_report_fact(fact_run, tmp_path, capsys):
    out = tmp_path / "report"
    assert report.main([fact_run, "--out", str(out), "--no-progress"]) == 0
    html = _check_report(str(out), REPORT_PNGS | {"codebook_usage.png"})
    assert "read from scores_test.npz" in html and "Codebook usage" in html
    ckpt = load_checkpoint(os.path.join(fact_run, "best.pt"))
    rows = list(csv.reader(open(out / "thresholds.csv")))
    assert rows[0][:5] == ["class", "group", "train prevalence %", "fixed threshold", "fixed test F1 %"]
    assert [r[0] for r in rows[1:]] == ckpt.class_names
    col = rows[0].index("val-f1 threshold")
    np.testing.assert_allclose([float(r[col]) for r in rows[1:]], ckpt.thresholds["f1"], atol=1e-4)


def test_report_recomputes_missing_scores(fact_run, tmp_path):
    run = tmp_path / "run"
    os.makedirs(run)
    for f in ("best.pt", "metrics.jsonl"):
        shutil.copy(os.path.join(fact_run, f), run / f)
    path = build_report(str(run))
    html = _check_report(os.path.dirname(path), REPORT_PNGS | {"codebook_usage.png"})
    assert "recomputed from best.pt" in html
    a = load_scores(os.path.join(fact_run, TEST_SCORES_FILE))
    b = load_scores(str(run / TEST_SCORES_FILE))
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    np.testing.assert_array_equal(a[1], b[1])


def test_report_baseline_has_no_codebook_figure(pool_run, tmp_path):
    path = build_report(pool_run, str(tmp_path / "r"))
    html = _check_report(os.path.dirname(path), REPORT_PNGS)
    assert "Codebook usage" not in html


def test_report_bad_run_dir(tmp_path, capsys):
    assert report.main([str(tmp_path / "none")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert report.main([str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_cooccurrence_by_hand():
    y = np.array([[1, 1, 0], [1, 0, np.nan], [1, 1, 1], [0, 1, 1]], dtype=np.float32)
    p = statistics.cooccurrence(y)
    # class 0 positive in rows 0-2: class 1 positive in 2 of 3; class 2 known in rows 0, 2 -> 1 of 2
    np.testing.assert_allclose(p[0], [1, 2 / 3, 1 / 2])
    # class 1 positive in rows 0, 2, 3: class 0 in 2 of 3, class 2 in 2 of 3
    np.testing.assert_allclose(p[1], [2 / 3, 1, 2 / 3])
    np.testing.assert_allclose(p[2], [1 / 2, 1, 1])
    assert np.isnan(statistics.cooccurrence(np.zeros((2, 2))) ).all()


def test_reliability_bins_by_hand():
    s = np.array([[0.05, 0.15], [0.95, 0.91], [0.08, 0.5]])
    t = np.array([[0, 1], [1, np.nan], [1, 0]])
    r = statistics.reliability_bins(s, t, bins=10)
    assert r["count"].tolist() == [2, 1, 0, 0, 1, 0, 0, 0, 0, 1]
    assert r["mean_score"][0] == pytest.approx(0.065) and r["positive_rate"][0] == pytest.approx(0.5)
    ece = (2 * abs(0.5 - 0.065) + abs(1 - 0.15) + abs(0 - 0.5) + abs(1 - 0.95)) / 5
    assert r["ece"] == pytest.approx(ece)


def test_circular_layout():
    pos = statistics.circular_layout(4)
    np.testing.assert_allclose(pos, [[0, 1], [1, 0], [0, -1], [-1, 0]], atol=1e-12)


# -- export ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("run", ["fact_run", "pool_run"])
def test_export_matches_pytorch(run, fmt, tmp_path, request, capsys):
    run_dir = request.getfixturevalue(run)
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="onnx export is checked with onnxruntime (requirements/dev.txt)")
    out = str(tmp_path / f"model.{fmt}")
    assert export.main([run_dir, "--format", fmt, "--out", out]) == 0
    printed = capsys.readouterr().out
    diff = float(printed.rsplit(":", 1)[1])
    assert diff <= 1e-4
    side = json.loads(open(out + ".json").read())
    model, ckpt = load_trained_model(os.path.join(run_dir, "best.pt"))
    assert side["class_names"] == ckpt.class_names
    assert side["preprocessing"] == json.loads(json.dumps(ckpt.preprocessing))
    assert side["thresholds"]["val-f1"] == ckpt.thresholds["f1"]
    assert side["max_abs_diff"] == pytest.approx(diff, rel=1e-2)
    # independent check on real test images, batch size 5 (traced with 2)
    ds = checkpoint_dataset(ckpt, "test")
    x = torch.stack([ds[i][0] for i in range(5)])
    from fact_fast import ops

    with torch.no_grad(), ops.use_backend("reference"):
        expected = model(x).scores.numpy()
    if fmt == "onnx":
        import onnx
        import onnxruntime as ort

        graph = onnx.load(out)
        assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"}
        got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(["scores"], {"images": x.numpy()})[0]
    else:
        loaded = torch.jit.load(out)
        assert "fact_fast::" not in str(loaded.inlined_graph)
        with torch.no_grad():
            got = loaded(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_export_errors(fact_run, tmp_path, monkeypatch, capsys):
    assert export.main([str(tmp_path / "no.pt"), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert export.main([fact_run, "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "['onnxruntime']" in err and "pip install onnx onnxruntime" in err
    assert not os.path.exists(tmp_path / "m.onnx")


def test_export_refuses_a_mismatch(fact_run, tmp_path, monkeypatch, capsys):
    """The check compares against the PyTorch model: a broken export is not kept silently."""
    real = export_lib._torchscript_export

    def off_by_a_bit(frozen, path):
        run = real(frozen, path)
        return lambda x: run(x) + 1e-3
    monkeypatch.setattr(export_lib, "_torchscript_export", off_by_a_bit)
    assert export.main([fact_run, "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 2
    assert "differs from PyTorch by 0.001" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "m.pt") and not os.path.exists(tmp_path / "m.pt.json")
