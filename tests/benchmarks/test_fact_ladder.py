"""benchmarks.fact_ladder on a tiny budget: rungs train on validation only, the table reads each
row's best validation epoch with the head's diagnostics, and a rerun resumes."""
import json
import os

from benchmarks import fact_ladder as fl

TINY = ["--dataset", "synthetic_motifs", "--image-size", "32", "--dataset-kwargs", "num_samples=48",
        "--batch-size", "16", "--epochs", "2"]


def test_rungs_table_and_resume(tmp_path, capsys):
    out = str(tmp_path / "ladder")
    assert fl.main(["--out", out, "--rows", "r1_projection", "r7_gcn", "--jobs", "2", "--", *TINY]) == 0
    for row in ("r1_projection", "r7_gcn"):
        assert os.path.isfile(os.path.join(out, row, "summary.json"))
        assert not os.path.exists(os.path.join(out, row, "seed0", "metrics_test.json"))  # no test split read
    rows = [json.loads(line) for line in open(os.path.join(out, "r7_gcn", "seed0", "metrics.jsonl"))]
    best = max(rows, key=lambda r: r["val_mAP"])
    data = json.load(open(os.path.join(out, "ladder.json")))
    assert data["r7_gcn"]["seeds"] == 1
    assert data["r7_gcn"]["val_mAP"][0] == best["val_mAP"]
    assert data["r7_gcn"]["anchor_cos"][0] == best["anchor_cos"]
    assert data["r1_projection"]["anchor_cos"] == [None, None]  # the probe has no anchors
    table = open(os.path.join(out, "ladder.md")).read()
    assert "| r7_gcn | R7 |" in table and "| r1_projection | R1 |" in table
    assert f"{100 * best['val_mAP']:.2f}" in table
    stamp = os.path.getmtime(os.path.join(out, "r7_gcn.log"))
    assert fl.main(["--out", out, "--rows", "r7_gcn", "--", *TINY]) == 0
    assert os.path.getmtime(os.path.join(out, "r7_gcn.log")) == stamp


def test_every_ladder_row_is_defined_and_listed(capsys):
    assert set(fl.LADDER + fl.PAPER_LADDER) <= set(fl.ROWS)
    assert fl.main(["--list"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in fl.ROWS)
