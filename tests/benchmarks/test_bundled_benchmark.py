"""benchmarks.bundled_benchmark on a tiny budget: rows train through fact_fast.train --seeds, the
comparison is written, finished rows are skipped on a rerun, a failing row fails the batch."""
import json
import os

from benchmarks import bundled_benchmark as bb

TINY = ["--dataset", "synthetic_motifs", "--image-size", "32", "--dataset-kwargs", "num_samples=48",
        "--batch-size", "16", "--epochs", "1"]


def test_rows_run_compare_and_resume(tmp_path, capsys):
    out = str(tmp_path / "batch")
    assert bb.main(["--out", out, "--rows", "fact", "cnn_bce", "--seeds", "0,1", "--jobs", "2", "--", *TINY]) == 0
    for row in ("fact", "cnn_bce"):
        summary = json.load(open(os.path.join(out, row, "summary.json")))
        assert summary, row
        assert os.path.isfile(os.path.join(out, row, "seed1", "metrics_test.json"))
    with open(os.path.join(out, "compare", "compare.md")) as fh:
        table = fh.read()
    assert "| fact | fact_tiny | 2 |" in table and "| cnn_bce | resnet50_bce | 2 |" in table
    record = json.load(open(os.path.join(out, "batch.json")))
    assert record["rows"]["fact"]["returncode"] == 0 and "--model-kwargs" not in record["rows"]["fact"]["command"]
    assert "--backbone fact_resnet_tiny --out-index 3" in record["rows"]["cnn_bce"]["command"]
    assert record["environment"]["device"] and record["environment"]["torch"]

    # a rerun trains nothing: the finished rows' logs stay as they were
    stamp = os.path.getmtime(os.path.join(out, "fact.log"))
    assert bb.main(["--out", out, "--rows", "fact", "--seeds", "0,1", "--", *TINY]) == 0
    assert os.path.getmtime(os.path.join(out, "fact.log")) == stamp


def test_a_failing_row_fails_the_batch(tmp_path):
    out = str(tmp_path / "bad")
    assert bb.main(["--out", out, "--rows", "fact_no_vq", "--seeds", "0", "--", *TINY, "--epochs", "0"]) == 1
    assert json.load(open(os.path.join(out, "batch.json")))["rows"]["fact_no_vq"]["returncode"] != 0


def test_list_names_every_row(capsys):
    assert bb.main(["--list"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in bb.ROWS)


def test_baseline_rows_carry_their_recipes():
    from fact_fast.config import parse_config

    cfgs = {name: parse_config(flags)[0] for name, (_, flags) in bb.ROWS.items()}
    experts = cfgs["mlgcn_experts"]
    assert (experts.graph, experts.sampler, experts.sampler_no_finding) == ("topk_reweighted", "cycle", True)
    assert cfgs["chexfusion_two_views"].dataset_kwargs == {"views": 2}
    assert cfgs["chexfusion"].dataset_kwargs == {}
    for name in ("cnn_bce", "ldr", "chexfusion", "chexfusion_two_views", "proto_contrast"):
        assert (cfgs[name].backbone, cfgs[name].out_index) == ("fact_resnet_tiny", 3), name
    # every row shares the recipe: the models' own learning-rate scales do the rest
    assert {(c.lr, c.optimizer, c.epochs) for c in cfgs.values()} == {(2e-3, "adamw", 20)}
