"""python -m fact_fast.compare on tiny runs: a --seeds run and a single run side by side (Markdown,
CSV, plots), mean ± std over seeds computed from the runs' own metrics files, clear errors."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from fact_fast import compare, train

TINY = ["--dataset", "synthetic_motifs", "--image-size", "32", "--dataset-kwargs", "num_samples=48",
        "--batch-size", "16", "--no-progress", "--threads", "1", "--epochs", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    seeds, single = str(root / "fact"), str(root / "bce")
    assert train.main(TINY + ["--model", "fact_test", "--seeds", "0,1", "--out", seeds]) == 0
    assert train.main(TINY + ["--model", "resnet50_bce", "--backbone", "test_resnet", "--out", single]) == 0
    return seeds, single


def _test_metrics(run):
    with open(os.path.join(run, "metrics_test.json")) as fh:
        return json.load(fh)


def test_compare_table_and_plots(runs, tmp_path, capsys):
    seeds, single = runs
    out = str(tmp_path / "out")
    assert compare.main([seeds, single, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "| run | model | seeds |" in printed and "fact_test" in printed and "resnet50_bce" in printed
    for name in ("compare.md", "compare.csv", "per_class_ap.png", "summary_bars.png"):
        assert os.path.isfile(os.path.join(out, name)), name
    for png in ("per_class_ap.png", "summary_bars.png"):
        with Image.open(os.path.join(out, png)) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    with open(os.path.join(out, "compare.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run"] for r in rows] == ["fact", "bce"] and [r["seeds"] for r in rows] == ["2", "1"]
    # mean ± std over the seed runs' own test metrics (sample std, as summary.json), in %
    maps = [_test_metrics(os.path.join(seeds, f"seed{s}"))["mAP"] for s in (0, 1)]
    assert float(rows[0]["mAP mean"]) == pytest.approx(100 * np.mean(maps))
    assert float(rows[0]["mAP std"]) == pytest.approx(100 * np.std(maps, ddof=1))
    assert float(rows[1]["mAP mean"]) == pytest.approx(100 * _test_metrics(single)["mAP"])
    assert rows[1]["mAP std"] == ""  # one seed: no spread is reported, not a std of 0
    accs = [_test_metrics(os.path.join(seeds, f"seed{s}"))["accuracy"] for s in (0, 1)]
    assert float(rows[0]["F1 (paper) mean"]) == pytest.approx(100 * np.mean(accs))
    # F1 at the model's own threshold beside the paper's accuracy-like F1
    for column, key in (("F1 micro", "f1_micro"), ("F1 macro", "f1_macro")):
        values = [_test_metrics(os.path.join(seeds, f"seed{s}"))[key] for s in (0, 1)]
        assert float(rows[0][f"{column} mean"]) == pytest.approx(100 * np.mean(values))
    # parameters and multiply-accumulates come from each run's best.pt at its resolution
    assert float(rows[0]["params (M)"]) > 0 and float(rows[1]["GMACs"]) > 0


def test_one_seed_of_a_seeds_run_is_named_after_its_run(runs, tmp_path, capsys):
    seeds, _ = runs
    assert compare.main([os.path.join(seeds, "seed1"), "--out", str(tmp_path / "o"), "--no-plots", "--no-cost"]) == 0
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| fact/seed1 |")]
    assert len(row) == 1 and "±" not in row[0]
    assert f"{100 * _test_metrics(os.path.join(seeds, 'seed1'))['mAP']:.2f}" in row[0]


def test_compare_errors(runs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert compare.main([str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "metrics_test.json" in capsys.readouterr().err
    assert compare.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "not a directory" in capsys.readouterr().err
