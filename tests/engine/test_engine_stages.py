"""The engine's learning-rate scales and stage selection, through ``python -m fact_fast.train`` on a
toy two-stage model: per-module and per-stage learning rates reach the optimiser (and the log),
every stage's best checkpoint is evaluated on the test split, and best.pt is the stage the
validation split prefers, also when that is not the last one. Plus the class-balanced samplers'
positive rates with and without the virtual "no finding" class."""
import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from fact_fast import train
from fact_fast.engine.data import ClassAwareSampler
from fact_fast.models import ModelOutput, MultiLabelModel, Stage, register_model
from fact_fast.nn import bce_loss
from fact_fast.utils.checkpoint import load_checkpoint
from tests.helpers.model_utils import single_thread

_one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


@dataclass
class ToyConfig:
    head_lr_scale: float = 0.25     # the per-module scale of "head."
    second_lr_scale: float = 0.5    # the second stage's scale
    sabotage: bool = False          # the second stage starts from negated classifier weights


class TwoStageToy(MultiLabelModel):
    """Pixels → a 4×4 average pool → ``stem`` (Linear) → ReLU → ``head`` (Linear): two stages of
    the same loss; with ``sabotage`` the second stage begins by negating the head, which reverses
    every class's ranking, and trains at a vanishing rate so it cannot recover."""

    config_class = ToyConfig
    backbone_prefixes = ("stem.",)

    def __init__(self, config, task):
        super().__init__(config, task)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.stem = nn.Linear(3 * 16, 32)
        self.head = nn.Linear(32, self.num_classes)

    def forward(self, images, view_mask=None):
        logits = self.head(torch.relu(self.stem(self.pool(images).flatten(1))))
        return ModelOutput(torch.sigmoid(logits), logits, {})

    def loss(self, output, targets, mask=None):
        value = bce_loss(output.logits, targets, mask)
        return {"total": value, "bce": value.detach()}

    def lr_scales(self):
        return {"head.": self.config.head_lr_scale}

    def stages(self):
        second = 1e-9 if self.config.sabotage else self.config.second_lr_scale
        return [Stage("first"), Stage("second", lr_scale=second)]

    def begin_stage(self, stage, ctx, resumed=False):
        if stage.name == "second" and self.config.sabotage and not resumed:
            with torch.no_grad():
                self.head.weight.neg_()
                self.head.bias.neg_()


register_model("two_stage_toy", TwoStageToy, description="test-only two-stage model")

RUN = ["--model", "two_stage_toy", "--dataset", "synthetic_motifs", "--image-size", "32", "--dataset-kwargs",
       "num_samples=96", "--batch-size", "32", "--epochs", "2", "--lr", "0.01", "--warmup-epochs", "0",
       "--no-progress", "--threads", "1"]


def read_log(out):
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def read_json(path):
    with open(path) as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("honest"))
    assert train.main(RUN + ["--out", out, "--backbone-lr-scale", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def sabotaged(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sabotaged"))
    assert train.main(RUN + ["--out", out, "--model-kwargs", "sabotage=true"]) == 0
    return out


def test_module_and_stage_learning_rates_reach_the_optimiser(honest):
    rows = read_log(honest)
    assert [(r["stage"], r["epoch"]) for r in rows] == [("first", 1), ("first", 2), ("second", 1), ("second", 2)]
    for r in rows:
        # every group follows the same schedule: their ratio is the declared scales
        assert r["lr_head_x0.25"] / r["lr_backbone"] == pytest.approx(0.25 / 2.0)
        assert r["lr_head_no_decay_x0.25"] == pytest.approx(r["lr_head_x0.25"])
    for k in (0, 1):
        # the second stage: the same schedule at half the rate
        assert rows[2 + k]["lr_backbone"] == pytest.approx(0.5 * rows[k]["lr_backbone"])
    # the first epoch ends at the cosine value after 3 of 6 steps: 0.01 * (0.01 + 0.99 * 0.5) * 2
    assert rows[0]["lr_backbone"] == pytest.approx(0.01 * 2 * (0.01 + 0.99 * 0.5))


def test_every_stage_is_evaluated_and_best_is_chosen_on_validation(honest):
    files = set(os.listdir(honest))
    assert {"best-first.pt", "best-second.pt", "best.pt", "stages.json", "metrics_test.json",
            "metrics_test-first.json", "metrics_test-second.json"} <= files
    report = read_json(os.path.join(honest, "stages.json"))
    vals = {s["stage"]: s["val"] for s in report["stages"]}
    for name in ("first", "second"):
        ck = load_checkpoint(os.path.join(honest, f"best-{name}.pt"))
        assert vals[name] == pytest.approx(ck.best_metric)
        test = read_json(os.path.join(honest, f"metrics_test-{name}.json"))
        assert test["stage"] == name and test["split"] == "test"
        assert test["val_mAP"] == pytest.approx(ck.metrics["val"]["mAP"])
    expected = "second" if vals["second"] >= vals["first"] else "first"
    assert report["selected"] == expected
    assert load_checkpoint(os.path.join(honest, "best.pt")).stage == expected
    chosen = read_json(os.path.join(honest, "metrics_test.json"))
    assert chosen["stage"] == expected
    assert chosen["mAP"] == pytest.approx(read_json(os.path.join(honest, f"metrics_test-{expected}.json"))["mAP"])


def test_a_second_stage_that_loses_on_validation_is_not_reported(sabotaged, capsys):
    report = read_json(os.path.join(sabotaged, "stages.json"))
    vals = {s["stage"]: s["val"] for s in report["stages"]}
    assert vals["second"] < vals["first"]
    assert report["selected"] == "first"
    best = load_checkpoint(os.path.join(sabotaged, "best.pt"))
    first = load_checkpoint(os.path.join(sabotaged, "best-first.pt"))
    assert best.stage == "first"
    for k, v in first.model.items():
        assert torch.equal(best.model[k], v), k
    test = read_json(os.path.join(sabotaged, "metrics_test.json"))
    second = read_json(os.path.join(sabotaged, "metrics_test-second.json"))
    # the reversed ranking is worse on test too, and is not what the run reports
    assert test["stage"] == "first" and test["mAP"] > second["mAP"]
    assert test["stage_val"] == {"first": pytest.approx(vals["first"]), "second": pytest.approx(vals["second"])}


def test_seeds_summary_has_every_stage(tmp_path):
    out = str(tmp_path / "seeds")
    assert train.main(RUN + ["--out", out, "--seeds", "0,1", "--epochs", "1"]) == 0
    summary = read_json(os.path.join(out, "summary.json"))
    assert set(summary["stages"]) == {"first", "second"} and len(summary["selected_stages"]) == 2
    maps = [read_json(os.path.join(out, f"seed{s}", "metrics_test-first.json"))["mAP"] for s in (0, 1)]
    assert summary["stages"]["first"]["mAP"]["mean"] == pytest.approx(np.mean(maps))


def test_bad_lr_scales_are_refused():
    from tests.helpers.model_utils import ring_task

    model = TwoStageToy(ToyConfig(head_lr_scale=0.0), ring_task(3))
    with pytest.raises(ValueError, match="lr_scales"):
        model.param_groups(1.0, 0.0)


# -- class-balanced samplers ----------------------------------------------------------------------------
def sampler_labels():
    """60 images, 3 classes: 30 all-negative, a head class, a co-occurring pair, a 2-image tail."""
    y = np.zeros((60, 3), dtype=np.float32)
    y[30:50, 0] = 1
    y[45:55, 1] = 1       # 5 images with classes 0 and 1
    y[58:60, 2] = 1
    y[55:58, 1] = np.nan  # unknown only: no positive, so "no finding"
    return y


def expected_rates(y, pools):
    """Positive rate of each class and the all-negative share when the pools are drawn uniformly
    and an image uniformly within its pool."""
    pos = np.nan_to_num(y) > 0.5
    rates = np.mean([pos[p].mean(axis=0) for p in pools], axis=0)
    empty = np.mean([(~pos[p].any(axis=1)).mean() for p in pools])
    return rates, empty


@pytest.mark.parametrize("order", ["cycle", "random"])
def test_samplers_keep_all_negative_images_at_the_rate_of_one_class(order):
    y = sampler_labels()
    pos = np.nan_to_num(y) > 0.5
    s = ClassAwareSampler(y, seed=0, num_samples=24000, class_order=order)
    idx = np.fromiter(s, dtype=np.int64)
    drawn_pos = pos[idx]
    # four pools: three classes and "no finding", each drawn a quarter of the time
    rates, empty = expected_rates(y, [np.arange(30, 50), np.arange(45, 55), np.arange(58, 60),
                                      np.r_[np.arange(0, 30), np.arange(55, 58)]])
    assert empty == pytest.approx(0.25)
    tol = 0.0 if order == "cycle" else 0.015
    np.testing.assert_allclose(drawn_pos.mean(axis=0), [(1 + 5 / 10) / 4, (5 / 20 + 1) / 4, 0.25], atol=0.015)
    np.testing.assert_allclose(drawn_pos.mean(axis=0), rates, atol=0.015)
    assert (~drawn_pos.any(axis=1)).mean() == pytest.approx(0.25, abs=tol + 1e-12)
    # every all-negative image can be drawn, the unknown-only ones included
    assert set(np.flatnonzero(~pos.any(axis=1))) <= set(idx.tolist())
    assert s.class_of_pool == [0, 1, 2, 3]


def test_samplers_without_no_finding_never_draw_all_negative_images():
    y = sampler_labels()
    pos = np.nan_to_num(y) > 0.5
    idx = np.fromiter(ClassAwareSampler(y, seed=0, num_samples=3000, class_order="cycle", no_finding=False),
                      dtype=np.int64)
    assert pos[idx].any(axis=1).all()
    np.testing.assert_allclose(pos[idx].mean(axis=0), [(1 + 5 / 10) / 3, (5 / 20 + 1) / 3, 1 / 3], atol=0.02)


def test_sampler_argument_errors():
    with pytest.raises(TypeError, match="no_finding"):
        ClassAwareSampler(sampler_labels(), no_finding="yes")
    with pytest.raises(ValueError, match="labels"):
        ClassAwareSampler(np.zeros(5))
    with pytest.raises(ValueError, match="positive label"):
        ClassAwareSampler(np.zeros((5, 2)), no_finding=False)
