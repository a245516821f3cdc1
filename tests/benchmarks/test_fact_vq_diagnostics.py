"""benchmarks.fact_vq_diagnostics on tiny trained runs: its numbers agree with independent
computations (the engine's own validation mAP, a brute-force nearest code), and it refuses what it
cannot read."""
import json
import os

import numpy as np
import pytest
import torch

from benchmarks import fact_vq_diagnostics as vd
from fact_fast import train
from fact_fast.inference import load_trained_model
from fact_fast.inference.checkpoints import checkpoint_loader

TINY = ["--image-size", "32", "--dataset-kwargs", "num_samples=64", "--batch-size", "16", "--epochs", "2",
        "--no-progress", "--threads", "1", "--warmup-epochs", "0.5", "--no-eval-test"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqdiag")
    out = {}
    for name, extra in (("fact", ["--model", "fact_test"]),
                        ("no_vq", ["--model", "fact_test", "--model-kwargs", "use_vq=false"]),
                        ("cnn", ["--model", "resnet50_bce", "--backbone", "fact_resnet_tiny"])):
        out[name] = str(root / name)
        assert train.main(TINY + extra + ["--out", out[name]]) == 0
    return out


def best_val_map(run):
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl")) if "val_mAP" in line]
    return 100 * max(r["val_mAP"] for r in rows)


def test_fact_row_matches_the_engine_and_a_brute_force_quantiser(runs, tmp_path):
    out = str(tmp_path / "vq.json")
    assert vd.main([runs["fact"], runs["no_vq"], "--json", out]) == 0
    written = json.load(open(out))
    assert written["command"].endswith(f"--json {out}") and written["device"] == "cpu"
    fact, no_vq = written["rows"]
    assert fact["use_vq"] and not no_vq["use_vq"]
    assert "quantisation_error" not in no_vq and "mAP_vq_bypassed" not in no_vq
    # the model as trained: best.pt scored by the engine at its best validation epoch
    assert fact["mAP"] == pytest.approx(best_val_map(runs["fact"]), abs=1e-6)
    assert no_vq["mAP"] == pytest.approx(best_val_map(runs["no_vq"]), abs=1e-6)
    model, ckpt = load_trained_model(runs["fact"])
    err = energy = 0.0
    with torch.no_grad():
        for images, _ in checkpoint_loader(model, ckpt, "val", views=False):
            z = model.features(images)[0].reshape(-1, model.vq.dim)
            nearest = model.vq.codebook[torch.cdist(z, model.vq.codebook).argmin(1)]
            err += float((z - nearest).pow(2).sum())
            energy += float(z.pow(2).sum())
    assert fact["quantisation_error"] == pytest.approx(err / energy, rel=1e-4)
    assert 0 <= fact["mAP_vq_bypassed"] <= 100 and 0 <= fact["probe_mAP"] <= 100
    assert model.vq is not None


def test_bypass_restores_the_quantiser_after_an_error(runs):
    model, _ = load_trained_model(runs["fact"])
    vq = model.vq
    with pytest.raises(RuntimeError):
        with vd.vq_bypassed(model):
            assert model.vq is None
            raise RuntimeError("boom")
    assert model.vq is vq


def test_probe_separates_separable_features_and_not_noise():
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(400, 3, generator=g) < 0.3).float()
    signal = torch.cat([y * 4 + torch.randn(400, 3, generator=g), torch.randn(400, 5, generator=g)], 1)
    noise = torch.randn(400, 8, generator=g)
    tr, te = slice(0, 300), slice(300, 400)
    assert vd.probe_map(signal[tr], y[tr], signal[te], y[te], 1e-3) > 95
    prevalence = 100 * float(y[te].mean())
    assert vd.probe_map(noise[tr], y[tr], noise[te], y[te], 1e-3) < prevalence + 20


def test_probe_masks_unknown_labels():
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(200, 2, generator=g) < 0.4).float()
    x = y * 3 + torch.randn(200, 2, generator=g)
    y_nan = y.clone()
    y_nan[:50, 0] = float("nan")
    value = vd.probe_map(x[:150], y_nan[:150], x[150:], y[150:], 1e-3)
    assert np.isfinite(value) and value > 90


def test_non_fact_checkpoint_is_refused_by_name(runs):
    with pytest.raises(ValueError, match="cnn.*FACT"):
        vd.diagnose(runs["cnn"])
