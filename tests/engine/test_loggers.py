"""--logger: the curves a run writes, read back with each tool's own reader (nothing mocked)."""
import glob
import json
import math
import os
import sys

import numpy as np
import pytest
import torch

from fact_fast import train
from fact_fast.config import TrainConfig
from fact_fast.engine.loggers import (Loggers, MLflowLogger, TensorBoardLogger, WandbLogger, flatten_scalars,
                                      open_loggers, parse_logger_names, require_logger_packages)
from tests.helpers import REPO_ROOT

TINY = ["--model", "fact_test", "--image-size", "32", "--dataset-kwargs", "num_samples=64",
        "--batch-size", "16", "--no-progress", "--threads", "1", "--warmup-epochs", "0.5"]


def read_rows(out):
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def tensorboard_events(out):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(out, "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def tensorboard_text(acc, tag="config/text_summary"):
    return [e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag)]


def assert_rows_logged(rows, series):
    """Every numeric key of every metrics.jsonl row is a scalar at step = row position, same value.

    Returns {tag: number of rows that hold a number for it} (a metric undefined in an epoch, such as a
    correlation over constant scores, is null in the row and absent from the curve).
    """
    expected_tags = {}
    for position, row in enumerate(rows, start=1):
        for key, value in row.items():
            if isinstance(value, str) or value is None:
                continue
            tag = ("train/" + key[6:] if key.startswith("train_") else "val/" + key[4:] if key.startswith("val_")
                   else "progress/" + key if key in ("lr", "epoch", "step", "stage_index", "seconds")
                   else "model/" + key)
            expected_tags[tag] = expected_tags.get(tag, 0) + 1
            got = series[tag][position]
            assert got == pytest.approx(value, rel=1e-6, abs=1e-30) or (math.isnan(got) and math.isnan(value)), tag
    return expected_tags


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tb_run"))
    assert train.main(TINY + ["--epochs", "2", "--logger", "tensorboard", "--out", out]) == 0
    return out


def test_tensorboard_holds_every_numeric_key_of_metrics_jsonl(tb_run):
    rows = read_rows(tb_run)
    assert len(rows) == 2
    acc = tensorboard_events(tb_run)
    tags = acc.Tags()["scalars"]
    series = {t: {e.step: e.value for e in acc.Scalars(t)} for t in tags}
    expected = assert_rows_logged(rows, series)
    # what the issue names: losses, validation metrics, lr, and FACT's τ and codebook usage
    assert {"train/total", "val/mAP", "val/macro_auc", "progress/lr", "model/tau", "model/codebook_usage",
            "model/codebook_perplexity"} <= {t for t, n in expected.items() if n == 2}
    assert all(len(series[t]) == n for t, n in expected.items())  # one point per epoch, no duplicates
    test = json.load(open(os.path.join(tb_run, "metrics_test.json")))
    assert series["test/mAP"][2] == pytest.approx(test["mAP"], rel=1e-6)
    assert series["test/macro_auc"][2] == pytest.approx(test["macro_auc"], rel=1e-6)
    for group, ap in test["group_ap"].items():
        assert series[f"test/group_ap/{group}"][2] == pytest.approx(ap, rel=1e-6)
    assert not [t for t in tags if t.startswith("test/per_class")]
    (config,) = tensorboard_text(acc)
    with open(os.path.join(tb_run, "config.json")) as fh:
        assert config == "```json\n" + fh.read() + "\n```"


def test_a_resumed_run_continues_the_curves(tb_run, tmp_path):
    import shutil

    out = str(tmp_path / "run")
    shutil.copytree(tb_run, out)
    assert train.main(TINY + ["--epochs", "3", "--logger", "tensorboard", "--out", out, "--resume", "auto",
                              "--no-eval-test"]) == 0
    rows = read_rows(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    acc = tensorboard_events(out)
    series = {t: {} for t in acc.Tags()["scalars"]}
    for t in series:
        for e in acc.Scalars(t):
            assert e.step not in series[t], (t, e.step)  # no step logged twice
            series[t][e.step] = e.value
    assert_rows_logged(rows, {t: s for t, s in series.items() if not t.startswith("test/")})
    assert sorted(series["val/mAP"]) == [1, 2, 3]
    assert len(tensorboard_text(acc)) == 2  # the config of each process


def test_flatten_scalars_by_hand():
    row = {"stage": "main", "epoch": 3, "lr": np.float32(0.5), "train_total": torch.tensor(1.25),
           "val_mAP": None, "tau": 2.0, "frozen": True, "per_class": [0.1, 0.2], "seconds": 4,
           "gate": {"std": 0.25, "name": "x", "deep": {"mean": -1}}}
    assert flatten_scalars(row) == {"progress/epoch": 3.0, "progress/lr": 0.5, "train/total": 1.25,
                                    "model/tau": 2.0, "model/frozen": 1.0, "progress/seconds": 4.0,
                                    "model/gate/std": 0.25, "model/gate/deep/mean": -1.0}
    assert flatten_scalars({"mAP": 0.5, "groups": {"head": {"mAP": 0.7}}}, "test") == {
        "test/mAP": 0.5, "test/groups/head/mAP": 0.7}


def test_logger_names_and_errors():
    assert parse_logger_names("none") == [] and parse_logger_names(None) == []
    assert parse_logger_names("tensorboard, mlflow,tensorboard") == ["tensorboard", "mlflow"]
    with pytest.raises(ValueError, match="--logger: unknown logger 'tensorbord'"):
        parse_logger_names("tensorbord")
    with pytest.raises(TypeError, match="--logger"):
        parse_logger_names(3)
    with pytest.raises(ValueError, match=r"--logger: unknown logger\(s\) \['neptune'\]"):
        TrainConfig(logger="tensorboard,neptune")
    with pytest.raises(TypeError, match="--logger must be a string"):
        TrainConfig(logger=["tensorboard"])
    assert open_loggers("tensorboard", "/nonexistent", is_main=False).loggers == []  # only rank 0 logs


@pytest.mark.parametrize("name,cls,module", [("wandb", WandbLogger, "wandb"), ("mlflow", MLflowLogger, "mlflow"),
                                             ("tensorboard", TensorBoardLogger, "tensorboard")])
def test_a_missing_package_names_the_logger(name, cls, module, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # what Python does for a package that is not installed
    if module == "tensorboard":
        monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    with pytest.raises(ImportError, match=f"--logger {name} needs the {module} package"):
        require_logger_packages(f"tensorboard,{name}" if name != "tensorboard" else name)
    with pytest.raises(ImportError, match=f"--logger {name} needs the {module} package.*pip install"):
        cls(str(tmp_path), "{}", 1)
    assert train.main(TINY + ["--epochs", "1", "--logger", name, "--out", str(tmp_path / "run")]) == 2
    assert f"--logger {name} needs the {module} package" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")  # refused before anything was trained or written


def test_tensorboard_from_the_command_line(tmp_path):
    """`tensorboard --logdir RUN` finds the run's event files: the train CLI as a user runs it."""
    import subprocess

    out = str(tmp_path / "run")
    repo = REPO_ROOT
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "PYTHONPATH": repo, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "fact_fast.train", *TINY, "--epochs", "1", "--logger", "tensorboard",
                           "--out", out, "--no-eval-test"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(out)  # what `tensorboard --logdir out` does
    mux.Reload()
    (run,) = mux.Runs()
    (row,) = read_rows(out)
    assert mux.Scalars(run, "val/mAP")[0].value == pytest.approx(row["val_mAP"], rel=1e-6)


@pytest.mark.skipif(__import__("importlib").util.find_spec("mlflow") is None,
                    reason="mlflow is optional (pip install mlflow-skinny) and not installed here")
def test_mlflow_file_store_holds_the_rows(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    out = str(tmp_path / "run")
    assert train.main(TINY + ["--epochs", "2", "--logger", "tensorboard,mlflow", "--out", out]) == 0
    from mlflow.tracking import MlflowClient

    assert os.environ.get("MLFLOW_ALLOW_FILE_STORE") == "true"  # set by the logger for its default store
    client = MlflowClient(tracking_uri="file:" + os.path.join(out, "mlruns"))
    (run,) = client.search_runs([client.get_experiment_by_name("fact_fast").experiment_id])
    assert run.info.status == "FINISHED"
    rows = read_rows(out)
    series = {}
    for key in run.data.metrics:
        series[key] = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
    assert_rows_logged(rows, series)
    path = client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))
    assert open(path).read() == open(os.path.join(out, "config.json")).read()
    assert os.path.isdir(os.path.join(out, "tensorboard"))  # both loggers at once


@pytest.mark.skipif(__import__("importlib").util.find_spec("wandb") is None,
                    reason="wandb is optional (pip install wandb) and not installed here")
def test_wandb_offline_run(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = str(tmp_path / "run")
    assert train.main(TINY + ["--epochs", "1", "--logger", "wandb", "--out", out, "--no-eval-test"]) == 0
    (run_dir,) = glob.glob(os.path.join(out, "wandb", "offline-run-*"))
    assert glob.glob(os.path.join(run_dir, "*.wandb"))


def test_loggers_without_any_logger_do_nothing(tmp_path):
    loggers = open_loggers("none", str(tmp_path))
    assert isinstance(loggers, Loggers) and loggers.loggers == []
    loggers.log_row({"epoch": 1})
    loggers.log_test({"mAP": 0.5})
    loggers.close()
    assert os.listdir(tmp_path) == []
