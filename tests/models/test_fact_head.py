"""FACT's head options (S⁰ transform, anchor centring and residual, query init, the point loss's
logit and bias), its per-epoch diagnostics, and the head probe of the FACT ladder."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fact_fast.metrics import class_score_correlation
from fact_fast.models import HeadProbe, create_model
from fact_fast.ops.reference.fuzzy import point_logit
from tests.helpers.model_utils import ring_task, single_thread

C = 5
pytestmark = []
_threads = pytest.fixture(autouse=True, scope="module")(single_thread)


def tiny(**over):
    torch.manual_seed(0)
    return create_model("fact_test", ring_task(C, seed=3), **over)


def images(B=4):
    return torch.randn(B, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_centred_label_embeddings_feed_the_gcn():
    task = ring_task(C, seed=3)
    model = create_model("fact_test", task, label_embedding_transform="center")
    s0 = task.label_embeddings
    assert torch.allclose(model.gcn.label_embeddings, s0 - s0.mean(0))
    assert torch.allclose(create_model("fact_test", task, label_embedding_transform="none").gcn.label_embeddings, s0)


def test_centred_anchors_have_no_common_mode():
    model = tiny(center_anchors=True, anchor_residual=False)
    s = model.anchors()
    assert torch.allclose(s.sum(0), torch.zeros(s.shape[1]), atol=1e-5)
    assert torch.allclose(s, model.gcn() - model.gcn().mean(0), atol=1e-6)


def test_residual_anchors_add_a_learned_vector_per_class():
    model = tiny(anchor_residual=True, center_anchors=False)
    assert model.free_anchors.shape == (C, model.config.dim)
    assert torch.allclose(model.anchors(), model.gcn() + model.free_anchors)
    centred = tiny(anchor_residual=True)  # the default: the GCN's output centred, then the residual
    assert torch.allclose(centred.anchors(), centred.gcn() - centred.gcn().mean(0) + centred.free_anchors, atol=1e-6)
    assert tiny(anchor_residual=False).free_anchors is None
    out = model(images())
    model.loss(out, (torch.rand(4, C) < 0.4).float())["total"].backward()
    assert model.free_anchors.grad.abs().sum() > 0 and model.gcn.layer2.weight.grad.abs().sum() > 0
    assert "free_anchors" in model.no_weight_decay()


def test_query_init_std():
    q = tiny(dim=32, query_init_std=1.0).interface.queries.detach()
    assert 0.7 < float(q.std()) < 1.0  # truncated at ±2σ: std ≈ 0.88σ
    assert float(tiny(query_init_std=0.02).interface.queries.detach().std()) < 0.02


@pytest.mark.parametrize("bad", [{"point_logit": "linear"}, {"label_embedding_transform": "whiten"},
                                 {"query_init_std": 0.0}, {"token_dropout": 1.0}, {"token_dropout": -0.1},
                                 {"token_noise": -0.1}, {"token_noise": float("nan")},
                                 {"head_lr_scale": 0.0}])
def test_bad_options_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        tiny(**bad)


def test_token_dropout_drops_whole_positions_in_training_only():
    model = tiny(token_dropout=0.5, use_vq=False)
    x = images()
    seen = {}
    model.interface.register_forward_hook(lambda m, args, out: seen.__setitem__("v", args[0].detach()))
    model.eval()
    mu_eval = model(x).scores
    z, _ = model.features(x)
    assert torch.equal(seen["v"], z)
    assert torch.equal(tiny(use_vq=False).eval()(x).scores, mu_eval)  # eval ignores the option
    model.train()
    torch.manual_seed(5)
    model(x)
    v, z = seen["v"], model.features(x)[0]
    dropped = (v == 0).all(-1)                                 # [B, M]: a position is dropped whole
    kept = ~dropped
    assert 0 < int(dropped.sum()) < dropped.numel()
    assert torch.allclose(v[kept], 2 * z[kept], atol=1e-5)    # rescaled by 1 / (1 - p)


def test_token_noise_perturbs_v_by_its_relative_energy_in_training_only():
    model = tiny(token_noise=0.2, use_vq=False)
    x = images(8)
    seen = {}
    model.interface.register_forward_hook(lambda m, args, out: seen.__setitem__("v", args[0].detach()))
    model.eval()
    mu_eval = model(x).scores
    assert torch.equal(mu_eval, tiny(use_vq=False).eval()(x).scores)  # eval ignores the option
    model.train()
    torch.manual_seed(5)
    model(x)
    with torch.no_grad():
        z = model.features(x)[0]
    noise = seen["v"] - z
    assert float(noise.pow(2).sum() / z.pow(2).sum()) == pytest.approx(0.2, rel=0.05)
    assert abs(float(noise.mean())) < 0.05 * float(noise.std())


def test_head_lr_scale_multiplies_every_parameter_after_the_trunk():
    model = tiny(head_lr_scale=0.25, codebook_lr_scale=2.0)
    lr = {id(p): g["lr"] for g in model.param_groups(1e-3, 1e-4) for p in g["params"]}
    for name, p in model.named_parameters():
        want = 1e-3 if name.startswith("backbone.") else 0.25e-3 * (2.0 if name == "vq.codebook" else 1.0)
        assert lr[id(p)] == pytest.approx(want), name
    assert {id(p) for p in model.parameters()} == set(lr)
    assert tiny().lr_scales() == {}


def test_projection_lr_scale_multiplies_the_projection_only():
    model = tiny(head_lr_scale=0.5, projection_lr_scale=0.1)
    lr = {id(p): g["lr"] for g in model.param_groups(1e-3, 1e-4) for p in g["params"]}
    for name, p in model.named_parameters():
        want = 1e-3 if name.startswith("backbone.") else 0.5e-3 * (0.1 if name.startswith("proj.") else 1.0)
        assert lr[id(p)] == pytest.approx(want), name
    probe = create_model("fact_head_probe", ring_task(C), backbone="test_resnet", dim=16, projection_lr_scale=0.1)
    lr = {id(p): g["lr"] for g in probe.param_groups(1e-3, 1e-4) for p in g["params"]}
    for name, p in probe.named_parameters():
        assert lr[id(p)] == pytest.approx(1e-4 if name.startswith("proj.") else 1e-3), name
    for name in ("fact_test", "fact_head_probe"):
        with pytest.raises(ValueError, match="projection_lr_scale"):
            create_model(name, ring_task(C), projection_lr_scale=0.0)


def test_logit_bias_is_learned_through_the_point_loss():
    model = tiny(point_logit="log", logit_bias=True)
    y = (torch.rand(4, C, generator=torch.Generator().manual_seed(2)) < 0.4).float()
    out = model(images())
    assert out.extras["logit_bias"] is model.logit_bias
    model.loss(out, y)["total"].backward()
    assert model.logit_bias.grad is not None and model.logit_bias.grad.abs().sum() > 0


@torch.no_grad()  # the definitions are recomputed as plain numbers
def test_diagnostics_match_their_definitions():
    model = tiny(query_init_std=0.5, point_logit="scaled").eval()
    x = images(3)
    scores = torch.tensor([[0.9, 0.2, 0.5, 0.1, 0.7], [0.3, 0.8, 0.6, 0.4, 0.2]])
    targets = torch.tensor([[1.0, 0.0, float("nan"), 0.0, 1.0], [0.0, 1.0, 0.0, 0.0, 0.0]])
    d = model.diagnostics(x, scores, targets)

    s = F.normalize(model.anchors(), dim=-1)
    off = ~torch.eye(C, dtype=torch.bool)
    assert d["anchor_cos"] == pytest.approx(float((s @ s.T)[off].mean()), rel=1e-5)

    v = model.vq(model.features(x)[0])[0]
    q = model.interface.queries
    gates = torch.sigmoid(q @ v.transpose(1, 2) / math.sqrt(v.shape[-1]))
    e = model.interface(v)
    assert torch.allclose(e, q + gates @ v, atol=1e-5)  # the interface is E = Q + σ(QVᵀ/√d)V
    en = F.normalize(e, dim=-1)
    per_image = [float((g @ g.T)[off].mean()) for g in en]
    assert d["class_embedding_cos"] == pytest.approx(float(np.mean(per_image)), rel=1e-5)
    assert d["gate_std"] == pytest.approx(float(gates.std()), rel=1e-5)
    ratio = q.norm(dim=-1).mean() / (gates @ v).norm(dim=-1).mean()
    assert d["query_ratio"] == pytest.approx(float(ratio), rel=1e-5)

    # the point loss's logit f = 10(μ − 0.5) at the known positives and negatives
    pos = [0.9, 0.7, 0.8]
    neg = [0.2, 0.1, 0.3, 0.6, 0.4, 0.2]
    for name, vals in (("pos", pos), ("neg", neg)):
        f = 10 * (np.array(vals) - 0.5)
        for p in (10, 50, 90):
            assert d[f"logit_{name}_p{p}"] == pytest.approx(float(np.quantile(f, p / 100)), abs=1e-5)


def test_diagnostics_logits_follow_the_configured_logit():
    model = tiny(point_logit="log", logit_scale=2.0).eval()
    scores = torch.tensor([[0.9, 0.2, 0.5, 0.1, 0.7]])
    targets = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0]])
    d = model.diagnostics(images(2), scores, targets)
    f = 2.0 * np.log(scores.numpy()[0] / 0.5)
    assert d["logit_pos_p50"] == pytest.approx(float(np.median(f)), rel=1e-5)
    assert d["logit_neg_p50"] is None  # no negative label
    assert torch.allclose(point_logit(scores, "log", 2.0, 0.5), torch.from_numpy(f).float()[None], atol=1e-6)


def test_class_score_correlation():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    same = np.stack([a, 2 * a + 1, a], 1)
    assert class_score_correlation(same) == pytest.approx(1.0)
    assert class_score_correlation(np.stack([a, -a], 1)) == pytest.approx(-1.0)
    r = rng.random((200, 4))
    assert class_score_correlation(r) == pytest.approx(
        float(np.corrcoef(r, rowvar=False)[~np.eye(4, dtype=bool)].mean()))
    # a constant column is left out; fewer than two varying columns -> None
    assert class_score_correlation(np.stack([a, a, np.ones(200)], 1)) == pytest.approx(1.0)
    assert class_score_correlation(np.stack([a, np.ones(200)], 1)) is None
    assert class_score_correlation(np.ones((1, 3))) is None


# -- the head probe ------------------------------------------------------------------------------
@pytest.mark.parametrize("pool,readout", [("mean", "linear"), ("interface", "linear"), ("interface", "cosine"),
                                          ("mean", "cosine")])
def test_head_probe_rungs(pool, readout):
    torch.manual_seed(0)
    model = create_model("fact_head_probe", ring_task(C), backbone="test_resnet", dim=16, pool=pool,
                         readout=readout, cosine_scale=5.0)
    x = images(3)
    out = model(x)
    assert out.logits.shape == (3, C) and torch.allclose(out.scores, torch.sigmoid(out.logits))
    assert out.extras["features"].shape == ((3, C, 16) if pool == "interface" else (3, 16))
    if readout == "cosine":  # |logit − b_c| ≤ the scale
        assert ((out.logits - model.classifier.bias).abs() <= 5.0 + 1e-5).all()
    else:
        feats = out.extras["features"]
        feats = feats if feats.dim() == 3 else feats[:, None].expand(-1, C, -1)
        expected = (feats * model.classifier.weight).sum(-1) + model.classifier.bias
        assert torch.allclose(out.logits, expected, atol=1e-5)
    y = (torch.rand(3, C) < 0.5).float()
    loss = model.loss(out, y)
    assert loss["total"].item() == pytest.approx(F.binary_cross_entropy_with_logits(out.logits, y).item(), rel=1e-6)
    loss["total"].backward()
    assert model.classifier.weight.grad.abs().sum() > 0


def test_head_probe_without_projection_reads_the_trunk():
    torch.manual_seed(0)
    model = create_model("fact_head_probe", ring_task(C), backbone="test_resnet", dim=None)
    assert model.proj is None
    assert model(images(2)).extras["features"].shape == (2, model.backbone.out_channels)
    with pytest.raises(ValueError, match="dim"):
        create_model("fact_head_probe", ring_task(C), dim=None, pool="interface")
    with pytest.raises(ValueError, match="readout"):
        create_model("fact_head_probe", ring_task(C), readout="mlp")
    assert isinstance(model, HeadProbe)


@pytest.mark.parametrize("name, over", [("fact_test", {}), ("fact_head_probe", {"backbone": "test_resnet", "dim": 16})])
def test_projection_init_reaches_the_projection(name, over):
    torch.manual_seed(0)
    model = create_model(name, ring_task(C, seed=3), projection_init="orthogonal", **over)
    w = model.proj.weight.detach().flatten(1)
    torch.testing.assert_close(w @ w.T, torch.eye(w.shape[0]), atol=1e-5, rtol=0)
    assert torch.count_nonzero(model.proj.bias) == 0
    default = create_model(name, ring_task(C, seed=3), **over)
    assert torch.count_nonzero(default.proj.bias) == default.proj.bias.numel()
    with pytest.raises(ValueError, match="projection_init"):
        create_model(name, ring_task(C, seed=3), projection_init="unit", **over)


def test_identity_projection_of_fact_tiny_refuses_another_width():
    # fact_tiny keeps its projection at the identity, which needs d = the trunk's 128 channels
    with pytest.raises(ValueError, match="projection_init='identity' needs d equal"):
        create_model("fact_tiny", ring_task(C, seed=3), dim=64)
    model = create_model("fact_tiny", ring_task(C, seed=3), dim=64, projection_init="default", projection_lr_scale=1.0)
    assert model.proj.out_channels == 64


def test_report_draws_the_diagnostics_in_groups():
    from fact_fast.reporting.figures import fig_training_curves

    rows = [{"epoch": e, "train_total": 1.0 / e, "val_mAP": 0.1 * e, "val_class_score_correlation": 0.9,
             "anchor_cos": 0.5, "class_embedding_cos": 0.99, "gate_std": 0.01, "query_ratio": 0.1, "tau": 1.2,
             "logit_pos_p50": -1.0, "logit_neg_p50": -4.0} for e in (1, 2)]
    fig = fig_training_curves(rows)
    panels = {ax.get_title(): sorted(line.get_label() for line in ax.get_lines())
              for ax in fig.axes if ax.get_title()}
    assert panels["how alike the classes are"] == ["anchor_cos", "class_embedding_cos", "class_score_correlation"]
    assert panels["interface gates"] == ["gate_std", "query_ratio"]
    assert panels["point-loss logit percentiles"] == ["logit_neg_p50", "logit_pos_p50"]
    assert panels["validation metrics"] == ["mAP"] and "tau" in panels


def test_the_paper_reading_is_one_switch_away():
    from dataclasses import replace

    from fact_fast.models import get_model_config
    from fact_fast.models.fact import PAPER_CHOICES

    # each choice is a real switch, but for ResNet-50 (d = 512 < 2048 channels) the projection keeps
    # PyTorch's initialisation: an identity needs d equal to the trunk's width
    for name, same in (("fact_tiny", set()), ("fact_resnet50", {"projection_init", "projection_lr_scale"})):
        default, paper = get_model_config(name), get_model_config(f"{name}_paper")
        assert paper == replace(default, **PAPER_CHOICES)
        assert {k for k, v in PAPER_CHOICES.items() if getattr(default, k) == v} == same
    model = create_model("fact_tiny_paper", ring_task(C, seed=3), backbone="test_resnet", out_index=-1)
    assert model.config.embedding_norm == "none" and model.criterion.logit == "scaled"
    assert model.free_anchors is None
    assert torch.allclose(model.gcn.label_embeddings, ring_task(C, seed=3).label_embeddings)
