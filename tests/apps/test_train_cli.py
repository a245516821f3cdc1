"""Training / evaluation command lines: smoke run, evaluate, resume, atomic checkpoints, CLI errors."""
import json
import os
import subprocess
import sys

import pytest
import torch

from fact_fast import evaluate, train
from fact_fast.config import config_from_dict, parse_config
from fact_fast.utils.checkpoint import SCHEMA_VERSION, CheckpointError, RunCheckpoint, atomic_save, load_checkpoint
from tests.helpers import REPO_ROOT as ROOT

TINY = ["--model", "fact_test", "--image-size", "32", "--dataset-kwargs", "num_samples=64",
        "--batch-size", "16", "--no-progress", "--threads", "1", "--warmup-epochs", "0.5"]


def run_train(tmp, *extra):
    rc = train.main(TINY + ["--out", str(tmp)] + list(extra))
    assert rc == 0
    return str(tmp)


def read_log(out):
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def no_temp_files(out):
    return [f for f in os.listdir(out) if f.endswith(".tmp")] == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_train(out, "--epochs", "2")
    return str(out)


def test_train_smoke_outputs(trained, capsys):
    files = set(os.listdir(trained))
    assert {"last.pt", "best.pt", "metrics.jsonl", "metrics_test.json", "config.json"} <= files
    assert no_temp_files(trained)
    log = read_log(trained)
    assert [r["epoch"] for r in log] == [1, 2]
    assert log[1]["step"] == 2 * 4  # 64 samples / batch 16
    for key in ("lr", "train_total", "train_fuzzy", "train_commit", "val_mAP", "codebook_perplexity",
                "codebook_usage", "seconds", "tau"):
        assert key in log[0]
    assert 1.0 <= log[0]["codebook_perplexity"] <= 64 and 0 < log[0]["codebook_usage"] <= 1
    with open(os.path.join(trained, "metrics_test.json")) as fh:
        test = json.load(fh)
    assert test["num_samples"] == 64 and 0 <= test["mAP"] <= 1 and test["split"] == "test"
    ck = load_checkpoint(os.path.join(trained, "last.pt"))
    assert ck.epoch == 2 and ck.step == 8
    assert ck.config["model"] == "fact_test" and ck.model_spec["config"]["backbone"] == "test_resnet"
    assert ck.model_spec["name"] == "fact_test" and ck.class_names == ck.model_spec["task"]["class_names"]
    best = load_checkpoint(os.path.join(trained, "best.pt"))
    assert len(best.thresholds["f1"]) == len(best.class_names) == len(best.thresholds["youden"])
    assert best.preprocessing["image_size"] == 32 and best.default_threshold == 0.5


def test_evaluate_checkpoint(trained, tmp_path, capsys):
    out_json = tmp_path / "val.json"
    rc = evaluate.main([os.path.join(trained, "best.pt"), "--split", "val", "--out", str(out_json),
                        "--batch-size", "32", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mAP" in printed and "macro AUC" in printed
    metrics = json.loads(out_json.read_text())
    for key in ("mAP", "macro_auc", "f1_micro", "f1_macro", "per_class_ap", "group_ap", "group_auc", "accuracy", "paper_avg", "odir_score"):
        assert key in metrics
    assert metrics["split"] == "val" and metrics["num_samples"] == 64
    # same checkpoint, same split -> the same numbers as the training run's validation
    ck = load_checkpoint(os.path.join(trained, "best.pt"))
    assert metrics["mAP"] == pytest.approx(ck.metrics["val"]["mAP"], abs=1e-6)


def test_resume_continues_and_matches_uninterrupted_run(trained, tmp_path):
    # an "interrupted" run: same schedule as the 2-epoch run, stopped after epoch 1 (4 steps)
    out = run_train(tmp_path / "a", "--epochs", "2", "--max-steps", "4", "--no-eval-test")
    assert [r["epoch"] for r in read_log(out)] == [1]
    rc = train.main(["--resume", os.path.join(out, "last.pt"), "--max-steps", "none", "--no-progress"])
    assert rc == 0
    log = read_log(out)
    assert [r["epoch"] for r in log] == [1, 2] and log[1]["step"] == 8
    ck = load_checkpoint(os.path.join(out, "last.pt"))
    assert ck.epoch == 2
    # model, optimizer, scheduler, RNG and data order restored: same weights as 2 epochs straight
    ref = load_checkpoint(os.path.join(trained, "last.pt"))
    for k, v in ref.model.items():
        if v.is_floating_point():
            assert torch.allclose(v, ck.model[k], atol=1e-5), k
    # auto-resume from --out when everything is done: nothing more to train, log unchanged
    assert train.main(TINY + ["--out", out, "--resume", "auto", "--epochs", "2", "--no-eval-test"]) == 0
    assert len(read_log(out)) == 2


def test_ablation_flags_reach_model(tmp_path):
    out = run_train(tmp_path, "--epochs", "1", "--model-kwargs", "use_vq=false", "--model-kwargs", "use_gcn=false",
                    "--model-kwargs", "loss=bce", "--max-steps", "2", "--no-eval-test",
                    "--model-kwargs", "membership=cosine")
    ck = load_checkpoint(os.path.join(out, "last.pt"))
    mc = ck.model_spec["config"]
    assert (mc["use_vq"], mc["use_gcn"], mc["loss"], mc["membership"]) == (False, False, "bce", "cosine")
    assert ck.step == 2
    assert "codebook_usage" not in read_log(out)[0]


def test_atomic_save_keeps_old_file_on_crash(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"a": 1}, str(path))
    real = torch.save

    def boom(obj, f, *a, **k):
        real(obj, f, *a, **k)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        atomic_save({"a": 2}, str(path))
    monkeypatch.setattr(torch, "save", real)
    assert torch.load(str(path)) == {"a": 1}
    assert os.listdir(tmp_path) == ["last.pt"]


def test_evaluate_friendly_errors(tmp_path, capsys):
    assert evaluate.main([str(tmp_path / "missing.pt")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"definitely not a checkpoint")
    assert evaluate.main([str(bad)]) == 2
    assert "corrupt" in capsys.readouterr().err
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, str(other))
    with pytest.raises(CheckpointError, match="not a fact_fast"):
        load_checkpoint(str(other))


def _tiny_checkpoint() -> RunCheckpoint:
    return RunCheckpoint(model={"w": torch.arange(3.0)}, model_spec={"name": "fact_test", "config": {"dim": 8}},
                         stage="train", stage_index=0, epoch=2, step=8, best_metric=0.5, metrics={"val": {"mAP": 0.5}},
                         config={"model": "fact_test", "seed": 3}, class_names=["a", "b"],
                         thresholds={"f1": [0.1, 0.2]}, rng={"python": None})


def test_run_checkpoint_round_trip(tmp_path):
    ck = _tiny_checkpoint()
    path = ck.save(str(tmp_path / "ck.pt"))
    raw = torch.load(path, weights_only=False)
    assert raw["version"] == SCHEMA_VERSION and "path" not in raw and "file_version" not in raw
    back = RunCheckpoint.load(path)
    assert back.path == path and back.file_version == SCHEMA_VERSION
    assert torch.equal(back.model["w"], ck.model["w"])
    for name in ("model_spec", "stage", "stage_index", "epoch", "step", "best_metric", "metrics", "config",
                 "class_names", "thresholds", "default_threshold", "ema"):
        assert getattr(back, name) == getattr(ck, name), name
    # a run directory means its best.pt (else last.pt)
    ck.save(str(tmp_path / "run" / "last.pt"))
    assert RunCheckpoint.load(str(tmp_path / "run")).path.endswith("last.pt")


def test_run_checkpoint_without_version_key_loads(tmp_path, capsys):
    old = {k: v for k, v in _tiny_checkpoint().to_dict().items() if k not in ("version", "groups", "rng", "ema")}
    old["training_state"] = None
    path = tmp_path / "old.pt"
    torch.save(old, str(path))
    ck = RunCheckpoint.load(str(path))
    assert ck.file_version is None and ck.epoch == 2 and ck.groups is None and ck.training_state == {}
    # it can be evaluated, not resumed
    assert train.main(["--resume", str(path), "--no-progress"]) == 2
    assert "old.pt: checkpoint version None cannot be resumed" in capsys.readouterr().err


def test_run_checkpoint_refuses_other_versions_and_files(tmp_path):
    future = tmp_path / "future.pt"
    torch.save(dict(_tiny_checkpoint().to_dict(), version=SCHEMA_VERSION + 1), str(future))
    with pytest.raises(ValueError, match=rf"{future}: checkpoint version {SCHEMA_VERSION + 1} is newer"):
        RunCheckpoint.load(str(future))
    first = tmp_path / "v1.pt"
    torch.save({"version": 1, "model": {}, "model_config": {}}, str(first))
    with pytest.raises(ValueError, match=r"v1.pt was written by an older fact_fast .*no model_spec"):
        RunCheckpoint.load(str(first))
    weights = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, str(weights))
    with pytest.raises(ValueError, match=rf"{weights} is not a fact_fast training checkpoint"):
        RunCheckpoint.load(str(weights))


def test_config_precedence_and_bad_options(tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 7\nlr: 0.01\nno_such_option: 1\n")
    with pytest.raises(SystemExit) as exc:
        parse_config(["--config", str(cfg_file)])
    assert exc.value.code == 2 and "no_such_option" in capsys.readouterr().err
    cfg_file.write_text("epochs: 7\nlr: 0.01\nbatch-size: 8\n")
    cfg, explicit = parse_config(["--config", str(cfg_file), "--epochs", "3"])
    assert (cfg.epochs, cfg.lr, cfg.batch_size) == (3, 0.01, 8)
    jf = tmp_path / "c.json"
    jf.write_text(json.dumps({"model_kwargs": {"membership": "cosine"}}))
    assert parse_config(["--config", str(jf), "--model-kwargs", "dim=16"])[0].model_kwargs == {"membership": "cosine",
                                                                                             "dim": 16}
    for argv in (["--epochs", "many"], ["--frobnicate"], ["--backend", "gpu"]):
        with pytest.raises(SystemExit) as exc:
            parse_config(argv)
        assert exc.value.code == 2
    capsys.readouterr()
    # out-of-range numbers stop at parse time with the option's name, never a run that trains nothing
    for argv, name in ((["--epochs", "0"], "--epochs"), (["--batch-size", "-4"], "--batch-size"),
                       (["--lr", "0"], "--lr"), (["--min-lr-ratio", "2"], "--min-lr-ratio"),
                       (["--ema-decay", "1.5"], "--ema-decay"), (["--image-size", "4"], "--image-size")):
        with pytest.raises(SystemExit) as exc:
            parse_config(argv)
        assert exc.value.code == 2 and f"{name} must be" in capsys.readouterr().err, argv
    cfg_file.write_text("max_steps: 0\n")
    with pytest.raises(SystemExit):
        parse_config(["--config", str(cfg_file)])
    assert "--max-steps must be at least 1" in capsys.readouterr().err
    assert parse_config(["--warmup-epochs", "0", "--grad-clip", "none"])[0].warmup_epochs == 0
    with pytest.raises(SystemExit) as exc:
        evaluate.build_parser().parse_args(["ck.pt", "--split", "dev"])
    assert exc.value.code == 2


@pytest.mark.parametrize("module", ["fact_fast.train", "fact_fast.evaluate"])
def test_help(module):
    res = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "usage:" in res.stdout
    if module == "fact_fast.train":
        for opt in ("--dataset", "--model", "--model-kwargs", "--epochs", "--resume", "--backend", "--amp", "--nvtx",
                    "--max-steps", "--config", "--no-progress"):
            assert opt in res.stdout, opt
        for gone in ("--no-vq", "--membership", "--logit-scale", "--codebook-size"):
            assert gone not in res.stdout, gone
    else:
        for opt in ("--split", "--out", "--batch-size", "--device", "--data-root"):
            assert opt in res.stdout, opt


def test_model_options_are_model_kwargs(tmp_path, capsys):
    # the removed per-model flags name their replacement
    for argv, hint in ((["--no-vq"], "--model-kwargs use_vq=false"), (["--dim", "64"], "--model-kwargs dim=VALUE"),
                       (["--logit-scale=3"], "--model-kwargs logit_scale=VALUE")):
        with pytest.raises(SystemExit) as exc:
            parse_config(argv)
        assert exc.value.code == 2 and hint in capsys.readouterr().err, argv
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("membership: cosine\nepochs: 2\n")
    with pytest.raises(SystemExit):
        parse_config(["--config", str(cfg_file)])
    assert "membership is a model option; give it under model_kwargs: {membership: 'cosine'}" in \
        capsys.readouterr().err
    # an unknown model option stops before any data is read, naming it and listing the model's options
    out = tmp_path / "bad"
    assert train.main(TINY + ["--model-kwargs", "dimm=8", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no option(s) ['dimm']" in err and "codebook_size" in err and not out.exists()
    # a bad value is the model config's error
    assert train.main(TINY + ["--model-kwargs", "membership=rbf", "--out", str(out)]) == 2
    assert "membership must be one of" in capsys.readouterr().err


def test_stored_configs_with_model_fields_still_load(trained, tmp_path, capsys):
    stored = {"model": "fact_test", "epochs": 2, "vq": False, "dim": 16, "alpha": None, "loss": "bce",
              "model_kwargs": {"dim": 32}, "label_graph": {"edges": 3}, "skipped": {}}
    cfg = config_from_dict(stored)
    assert cfg.model_kwargs == {"use_vq": False, "dim": 32, "loss": "bce"} and cfg.epochs == 2
    # a checkpoint whose configuration holds them evaluates as before
    ck = load_checkpoint(os.path.join(trained, "best.pt"))
    ck.config = {**ck.config, "vq": None, "gcn": None, "dim": None, "membership": None, "threshold": None}
    path = ck.save(str(tmp_path / "old" / "best.pt"))
    out_json = tmp_path / "val.json"
    assert evaluate.main([path, "--split", "val", "--out", str(out_json), "--no-progress"]) == 0
    assert json.loads(out_json.read_text())["mAP"] == pytest.approx(ck.metrics["val"]["mAP"], abs=1e-6)
