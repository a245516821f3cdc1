"""The second set of baselines: ldr ("Label Decoupling and Reconstruction", ACM MM 2024; two stages),
chexfusion ("CheXFusion", ICCV Workshops 2023; two stages, the second on multi-view studies) and
proto_contrast ("Learning from Prototypes", IEEE JBHI 2026). Shapes, defaults and option errors,
masked losses, a few training steps, each model's parts against independent formulations (LDR's
Gaussians and reverse sampling, the ML-Decoder head, view fusion, the label graph attention bias,
sigmoid cross-attention, prototype updates), and the two-stage handoff, resume and evaluation
through the command-line engine."""
import contextlib
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fact_fast import evaluate, train
from fact_fast.config import parse_config
from fact_fast.data import build_dataset, collate
from fact_fast.models import (LDR, CheXFusion, ModelOutput, ProtoContrast, StageContext, TaskInfo,
                              create_model, get_model_config, list_models, model_from_spec, model_spec)
from fact_fast.models.ldr import reverse_sampling_probabilities
from fact_fast.models.proto_contrast import label_prior_bias
from fact_fast.nn import (MLDecoder, MultiHeadAttention, bce_loss, generalized_cross_entropy_loss,
                          sinusoidal_position_2d)
from fact_fast.utils.checkpoint import load_checkpoint
from tests.helpers.model_utils import ring_task as shared_ring_task, single_thread
from tests.helpers import REPO_ROOT as ROOT

MODELS = ("ldr", "chexfusion", "proto_contrast")
C = 5
WIDTH = 96  # test_resnet's feature width
SMALL = {"ldr": {"ff_dim": 64},
         "chexfusion": {"decoder_dim": 32, "decoder_ff_dim": 64, "fusion_dim": 32, "fusion_ff_dim": 64},
         "proto_contrast": {"dim": 32, "ff_dim": 64}}


_one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


def ring_task(n=C, emb_dim=16, value=None, add_self_loops=True):
    return shared_ring_task(n, emb_dim, value, add_self_loops,
                            prevalence=torch.linspace(0.05, 0.6, n, dtype=torch.float64), seed=7)


def tiny(name, task=None, **over):
    torch.manual_seed(0)
    over.setdefault("backbone", "test_resnet")
    for k, v in SMALL[name].items():
        over.setdefault(k, v)
    return create_model(name, task or ring_task(), **over)


def batch(B=4, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, size, size, generator=g)
    y = (torch.rand(B, C, generator=g) < 0.4).float()
    y[0, 0] = 1.0
    y[1, 0] = 0.0
    return x, y


def context(batches):
    return StageContext(make_train_loader=lambda: batches, device=torch.device("cpu"),
                        autocast=contextlib.nullcontext, log=lambda m: None)


def stage(model, name):
    return next(s for s in model.stages() if s.name == name)


def to_stage2(model, batches=None):
    """Begin the model's second stage on a tiny training set (LDR estimates its Gaussians there)."""
    x, y = batch(B=8, seed=11)
    y[::3, 1] = float("nan")
    model.begin_stage(model.stages()[1], context(batches or [(x, y)]))
    return model


# -- registry, defaults, options -------------------------------------------------------------------------
def test_registered_names_and_paper_defaults():
    assert set(MODELS) <= set(list_models())
    for name in MODELS:
        cfg = get_model_config(name)
        assert cfg.backbone == "resnet50" and cfg.pretrained is False and cfg.pretrained_file is None
    ldr = get_model_config("ldr")
    assert (ldr.sample_alpha, ldr.sample_eps, ldr.gce_q, ldr.use_prompt) == (0.9, 1e-9, 0.8, True)
    assert (ldr.encoder_layers, ldr.covariance, ldr.virtual_batch) == (1, "diagonal", None)
    assert (ldr.sample_normalisation, ldr.gce_form, ldr.m_step_real) == ("per_class", "paper", True)
    assert (ldr.transformer_lr_scale, ldr.reconstruct_lr_scale) == (0.1, 0.1)
    cf = get_model_config("chexfusion")
    assert (cf.decoder_dim, cf.decoder_layers, cf.decoder_ff_dim, cf.decoder_heads, cf.decoder_groups) == \
        (768, 1, 2048, 8, 100)
    assert (cf.wasl_gamma_neg, cf.wasl_gamma_pos, cf.wasl_clip, cf.wasl_detach_focusing) == (4.0, 1.0, 0.05, False)
    assert (cf.fusion_dim, cf.fusion_layers, cf.fusion_heads, cf.max_views) == (768, 2, 8, 4)
    pc = get_model_config("proto_contrast")
    assert (pc.lga_modulation, pc.lad_attention, pc.prototypes, pc.apcl_negative_weighting) == \
        ("prior", "sigmoid", "ema", "similarity")
    assert (pc.apcl_negatives, pc.apcl_temperature, pc.transformer_lr_scale) == ("absent", 1.0, 0.1)
    assert pc.apcl_weight == 0.1       # chosen on validation (docs/baselines.md)
    # the stages the engine runs
    ldr_stages = tiny("ldr").stages()
    assert [s.name for s in ldr_stages] == ["decouple", "reconstruct"] and not any(s.views for s in ldr_stages)
    cf_stages = tiny("chexfusion").stages()
    assert [s.name for s in cf_stages] == ["backbone", "fusion"]
    assert (cf_stages[0].views, cf_stages[1].views, cf_stages[1].max_views) == (False, True, 4)
    assert [s.name for s in tiny("proto_contrast").stages()] == ["main"]


@pytest.mark.parametrize("name,bad,match", [
    ("ldr", {"sample_alpha": -0.1}, "sample_alpha"),
    ("ldr", {"gce_q": 0.0}, "gce_q"),
    ("ldr", {"gce_q": 1.2}, "gce_q"),
    ("ldr", {"covariance": "spherical"}, "covariance"),
    ("ldr", {"virtual_batch": 0}, "virtual_batch"),
    ("ldr", {"heads": 7}, "heads"),
    ("ldr", {"use_prompt": "yes"}, "use_prompt"),
    ("ldr", {"m_step_real": 1}, "m_step_real"),
    ("ldr", {"sample_normalisation": "per_sample"}, "sample_normalisation"),
    ("ldr", {"gce_form": "zhang"}, "gce_form"),
    ("ldr", {"reconstruct_lr_scale": -1.0}, "reconstruct_lr_scale"),
    ("chexfusion", {"wasl_clip": 1.0}, "wasl_clip"),
    ("chexfusion", {"fusion_dim": 30}, "fusion_dim"),
    ("chexfusion", {"decoder_heads": 5}, "decoder_dim"),
    ("chexfusion", {"max_views": 0}, "max_views"),
    ("chexfusion", {"reduction": "none"}, "reduction"),
    ("proto_contrast", {"lga_modulation": "gcn"}, "lga_modulation"),
    ("proto_contrast", {"lad_attention": "linear"}, "lad_attention"),
    ("proto_contrast", {"prototypes": "kmeans"}, "prototypes"),
    ("proto_contrast", {"criterion": "focal"}, "criterion"),
    ("proto_contrast", {"apcl_temperature": 0.0}, "apcl_temperature"),
    ("proto_contrast", {"prototype_momentum": 1.0}, "prototype_momentum"),
    ("proto_contrast", {"dim": 30}, "dim"),
    ("proto_contrast", {"apcl_negatives": "random"}, "apcl_negatives"),
    ("proto_contrast", {"transformer_lr_scale": 0.0}, "transformer_lr_scale"),
])
def test_bad_options_raise_naming_them(name, bad, match):
    with pytest.raises(ValueError, match=match):
        tiny(name, **bad)


def test_models_say_what_task_information_they_need():
    task = ring_task()
    no_text = TaskInfo(task.class_names, None, task.graph, task.prevalence)
    with pytest.raises(ValueError, match="label_embeddings.*use_prompt=false"):
        tiny("ldr", no_text)
    assert tiny("ldr", no_text, use_prompt=False).num_prompts == 0
    with pytest.raises(ValueError, match="label_embeddings"):
        tiny("proto_contrast", no_text)
    with pytest.raises(ValueError, match="graph.*lga_modulation=none"):
        tiny("proto_contrast", TaskInfo(task.class_names, task.label_embeddings, None))
    tiny("proto_contrast", TaskInfo(task.class_names, task.label_embeddings, None), lga_modulation="none")
    with pytest.raises(ValueError, match="prevalence"):
        tiny("chexfusion", TaskInfo(task.class_names, task.label_embeddings, task.graph))
    # one class without known train labels: weight 0 prevalence (its loss entries are masked anyway)
    prev = task.prevalence.clone()
    prev[2] = float("nan")
    model = tiny("chexfusion", TaskInfo(task.class_names, task.label_embeddings, task.graph, prev))
    assert model.prevalence[2].item() == 0.0 and model.prevalence[3].item() == pytest.approx(prev[3].item())


# -- forward, loss, masking, training (every model) ----------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_forward_shapes(name):
    model = tiny(name)
    assert type(model) is {"ldr": LDR, "chexfusion": CheXFusion, "proto_contrast": ProtoContrast}[name]
    x, _ = batch()
    out = model(x)
    assert isinstance(out, ModelOutput)
    assert out.scores.shape == (4, C) and out.logits.shape == (4, C)
    assert torch.allclose(out.scores, torch.sigmoid(out.logits)) and model.default_threshold == 0.5
    if name == "ldr":
        assert out.extras["class_features"].shape == (4, C, WIDTH)
    if name == "proto_contrast":
        assert out.extras["class_features"].shape == (4, C, 32) and out.extras["label_queries"].shape == (C, 32)
    assert model.eval()(x[:1]).scores.shape == (1, C)


@pytest.mark.parametrize("name", MODELS)
def test_bf16_autocast_forward_backward(name):
    model = tiny(name)
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    losses = model.loss(out, y, torch.ones_like(y, dtype=torch.bool))
    assert losses["total"].dtype == torch.float32 and torch.isfinite(losses["total"])
    losses["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _check_masked(model, out, y, mask, detach=("logits",)):
    """Unknown labels get no gradient on the logits (and class features) and their targets do not matter."""
    logits = out.logits.detach().requires_grad_(True)
    extras = {k: (v.detach().requires_grad_(True) if k in detach and torch.is_tensor(v) else v)
              for k, v in out.extras.items()}
    losses = model.loss(ModelOutput(torch.sigmoid(logits), logits, extras), y, mask)
    assert losses["total"].dim() == 0 and torch.isfinite(losses["total"])
    losses["total"].backward()
    assert torch.all(logits.grad[~mask] == 0) and torch.any(logits.grad[mask] != 0)
    for k in detach:
        if k in extras and extras[k].grad is not None:
            assert torch.all(extras[k].grad[~mask] == 0)
    y2 = torch.where(mask, y, 1 - y)
    with torch.no_grad():
        a = model.loss(out, y, mask)["total"]
        b = model.loss(out, y2, mask)["total"]
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_loss_honours_mask(name):
    model = tiny(name).eval()
    x, y = batch()
    mask = torch.rand(4, C, generator=torch.Generator().manual_seed(2)) < 0.6
    mask[0, 0] = mask[1, 0] = True
    if name == "proto_contrast":
        # prototypes that exist, so that the contrastive term has anchors
        model.train()
        model.loss(model(x), y, None)
        model.eval()
        assert bool((model.prototype_updates > 0).any())
    _check_masked(model, model(x), y, mask, detach=("logits", "class_features"))


def test_ldr_stage2_loss_honours_mask():
    model = to_stage2(tiny("ldr")).train()
    x, y = batch()
    mask = torch.rand(4, C, generator=torch.Generator().manual_seed(2)) < 0.6
    mask[0, 0] = mask[1, 0] = True
    torch.manual_seed(3)
    out = model(x)
    assert set(out.extras) == {"class_features", "virtual_logits", "virtual_targets", "real_m_logits"}
    _check_masked(model, out, y, mask, detach=("logits", "real_m_logits"))


@pytest.mark.parametrize("name", MODELS)
def test_few_steps_lower_the_loss(name):
    model = tiny(name)
    x, y = batch(B=6, seed=5)
    key = {"ldr": "bce", "chexfusion": "weighted_asl", "proto_contrast": "bce"}[name]
    _assert_training_lowers(model, lambda: model.loss(model(x), y, None), key)


def _assert_training_lowers(model, step_losses, key, steps=12, lr=1e-3):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    first = last = None
    for _ in range(steps):
        losses = step_losses()
        first = losses[key].item() if first is None else first
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        last = losses[key].item()
    assert last < first, (first, last)
    return first, last


@pytest.mark.parametrize("name", MODELS)
def test_spec_round_trip_rebuilds_the_same_model(name):
    model = tiny(name)
    if name != "proto_contrast":
        to_stage2(model)
    else:
        model.train()
        model.loss(model(batch()[0]), batch()[1], None)  # moves the EMA prototypes
    model.eval()
    x, _ = batch()
    again = model_from_spec(model_spec(model), model.state_dict()).eval()
    torch.testing.assert_close(again(x).logits, model(x).logits)
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


# -- LDR -------------------------------------------------------------------------------------------------------
def test_ldr_query_embedding_and_class_features_follow_eq_2_to_5():
    for use_prompt in (True, False):
        model = tiny("ldr", use_prompt=use_prompt).eval()
        x, _ = batch()
        with torch.no_grad():
            parts = [model.label_queries + model.label_indicator]
            if use_prompt:
                w = model.prompt_mlp[2](torch.relu(model.prompt_mlp[0](model.task.label_embeddings)))
                parts.insert(0, w + model.word_indicator)
            q = torch.cat(parts) + model.position                                   # Eq. 2
            assert q.shape == ((2 if use_prompt else 1) * C, WIDTH)
            tokens = model.backbone(x).flatten(2).transpose(1, 2)                  # Eq. 3
            seq = torch.cat([q.expand(4, -1, -1), tokens], 1)
            for layer in model.encoder:
                seq = layer(seq)                                                   # Eq. 4
            m = C if use_prompt else 0
            expect = seq[:, m:m + C]                                               # Eq. 5
            torch.testing.assert_close(model.class_features(x), expect)
            logits = (expect * model.classifier.weight).sum(-1) + model.classifier.bias   # Eq. 6
            torch.testing.assert_close(model(x).logits, logits)


def test_reverse_sampling_probabilities_eq_12():
    pos = torch.tensor([100.0, 10.0, 1.0, 0.0, 5.0])
    neg = torch.tensor([50.0, 90.0, 99.0, 100.0, 0.0])
    # across the classes, as Eq. 12 prints it
    p = reverse_sampling_probabilities(pos, neg, alpha=0.9, eps=1e-9, normalisation="across_classes")
    w = [(1 / (f + 1e-9)) ** 0.9 for f in (100.0, 10.0, 1.0, 5.0)]
    expect = [w[0] / sum(w), w[1] / sum(w), w[2] / sum(w), 0.0, 1.0]  # no positive: 0; no negative: 1
    np.testing.assert_allclose(p.numpy(), expect, rtol=1e-6)
    # α = 0: uniform over the classes with a positive
    p0 = reverse_sampling_probabilities(pos[:3], neg[:3], alpha=0.0, eps=1e-9, normalisation="across_classes")
    np.testing.assert_allclose(p0.numpy(), [1 / 3] * 3, rtol=1e-6)
    # per class (the default): each class's two labels, the rarer one favoured
    p = reverse_sampling_probabilities(pos, neg, alpha=0.9, eps=1e-9)
    ratio = [(1 / f1) ** 0.9 / ((1 / f1) ** 0.9 + (1 / f0) ** 0.9) for f1, f0 in ((100, 50), (10, 90), (1, 99))]
    np.testing.assert_allclose(p.numpy(), ratio + [0.0, 1.0], rtol=1e-6)
    assert p[0] < 0.5 < p[1] < p[2]
    np.testing.assert_allclose(reverse_sampling_probabilities(pos[:3], neg[:3], 0.0, 1e-9).numpy(), [0.5] * 3)
    # α = 1: the rarer label is drawn as often as the other one occurs
    np.testing.assert_allclose(reverse_sampling_probabilities(pos[:3], neg[:3], 1.0, 1e-9).numpy(),
                               [50 / 150, 90 / 100, 99 / 100], rtol=1e-6)
    with pytest.raises(ValueError, match="normalisation"):
        reverse_sampling_probabilities(pos, neg, 0.9, 1e-9, "per_sample")


def test_per_class_sampling_draws_every_class_positive_at_least_at_its_rate():
    """On the bundled benchmark's training labels, Eq. 12 across classes draws the common classes
    positive far less often than they occur; per class, every class at least as often."""
    from fact_fast.data import SyntheticBenchmark

    y = SyntheticBenchmark("train", image_size=32, seed=0).labels
    pos, neg = torch.tensor((y == 1).sum(0)), torch.tensor((y == 0).sum(0))
    prevalence = (pos / (pos + neg)).numpy()
    across = reverse_sampling_probabilities(pos, neg, 0.9, 1e-9, "across_classes").numpy()
    per = reverse_sampling_probabilities(pos, neg, 0.9, 1e-9, "per_class").numpy()
    head = prevalence > 0.1
    assert head.sum() >= 1 and np.all(across[head] < 0.2 * prevalence[head])
    assert np.all(per >= prevalence) and np.all(per[head] > 0.5)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_ldr_gaussians_match_class_statistics(covariance):
    model = tiny("ldr", covariance=covariance)
    x1, y1 = batch(B=6, seed=21)
    x2, y2 = batch(B=5, seed=22)
    y1[0, 2] = y2[3, 1] = float("nan")  # unknown labels belong to neither Gaussian
    y2[:, 4] = 1.0                      # class 4: label 1 on 9 of 11 images
    views = torch.stack([x2[:2], x2[2:4]], 1)  # a multi-view batch: each view is a sample of its item
    view_mask = torch.tensor([[True, True], [True, False]])
    loader = [(x1, y1), None, (views, y2[:2], view_mask)]
    model.estimate_gaussians(loader)
    assert model.training  # the estimation pass leaves the mode as it found it
    model.eval()
    with torch.no_grad():
        feats = torch.cat([model.class_features(x1), model.class_features(views[view_mask])]).double().numpy()
    labels = torch.cat([y1, y2[:2].unsqueeze(1).expand(2, 2, C)[view_mask]]).numpy()
    counts = np.zeros((2, C), int)
    for j in (0, 1):
        for c in range(C):
            rows = feats[labels[:, c] == j, c]
            counts[j, c] = len(rows)
            if not len(rows):
                assert torch.all(model.gaussian_mean[j, c] == 0)
                continue
            np.testing.assert_allclose(model.gaussian_mean[j, c].double().numpy(), rows.mean(0), rtol=1e-5, atol=1e-5)
            cov = np.cov(rows, rowvar=False, ddof=1) if len(rows) > 1 else np.zeros((WIDTH, WIDTH))
            scale = model.gaussian_scale[j, c].double().numpy()
            got = scale ** 2 if covariance == "diagonal" else scale @ scale.T
            want = np.diag(cov) if covariance == "diagonal" else cov
            # the spread of these features is small (~1e-7): tolerances relative to it
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max() + 1e-30)
    np.testing.assert_array_equal(model.gaussian_count.numpy(), counts)
    expect_p = reverse_sampling_probabilities(torch.tensor(counts[1]), torch.tensor(counts[0]), 0.9, 1e-9)
    torch.testing.assert_close(model.sample_prob, expect_p)


def test_ldr_virtual_features_follow_the_gaussians():
    model = tiny("ldr")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.gaussian_mean.copy_(torch.randn(2, C, WIDTH, generator=g))
        model.gaussian_scale.copy_(torch.rand(2, C, WIDTH, generator=g) + 0.5)
        model.sample_prob.copy_(torch.tensor([0.05, 0.2, 0.5, 0.0, 1.0]))
    torch.manual_seed(1)
    n = 20000
    x, label = model.sample_virtual(n)
    assert x.shape == (n, C, WIDTH) and label.shape == (n, C)
    freq = label.mean(0)
    np.testing.assert_allclose(freq.numpy(), model.sample_prob.numpy(), atol=0.012)
    for c in (1, 2):
        for j in (0, 1):
            rows = x[label[:, c] == j, c]
            mu, sd = model.gaussian_mean[j, c], model.gaussian_scale[j, c]
            assert torch.all((rows.mean(0) - mu).abs() < 5 * sd / math.sqrt(len(rows)))
            torch.testing.assert_close(rows.std(0), sd, rtol=0.08, atol=0.0)
    # full covariance: x = μ + Σ^{1/2} z gives covariance Σ (two strongly correlated dimensions)
    full = tiny("ldr", covariance="full")
    s = torch.eye(WIDTH)
    s[0, 1] = s[1, 0] = 0.9
    with torch.no_grad():
        full.gaussian_scale[1, 0].copy_(s)
        full.sample_prob.fill_(1.0)
    xf, _ = full.sample_virtual(20000)
    emp = torch.cov(xf[:, 0, :3].T)
    torch.testing.assert_close(emp, (s @ s.T)[:3, :3], atol=0.06, rtol=0.0)


def test_ldr_em_step_gradients_are_separated():
    """M-step: only the classifier learns, from the virtual features (BCE); E-step: only the
    encoder and backbone learn, from the real images through the fixed classifier (GCE)."""
    model = to_stage2(tiny("ldr")).train()
    assert bool(model.reconstructing)
    x, y = batch()
    mask = torch.ones_like(y, dtype=torch.bool)
    mask[2, 3] = False
    torch.manual_seed(4)
    out = model(x)
    # the M-step fits the classifier on the virtual and the (detached) real features
    torch.testing.assert_close(out.extras["real_m_logits"], out.logits)
    m_step = bce_loss(out.extras["virtual_logits"], out.extras["virtual_targets"]) + \
        bce_loss(out.extras["real_m_logits"], y, mask)
    e_step = generalized_cross_entropy_loss(out.logits, y, mask, q=1 - 0.8)  # the paper's q = 0.8
    losses = model.loss(out, y, mask)
    assert losses["total"].item() == pytest.approx((m_step + e_step).item(), rel=1e-6)
    assert losses["m_step_bce"].item() == pytest.approx(m_step.item(), rel=1e-6)
    classifier = list(model.classifier.parameters())
    rest = [p for n, p in model.named_parameters() if not n.startswith("classifier.")]
    assert all(g is None for g in torch.autograd.grad(e_step, classifier, retain_graph=True, allow_unused=True))
    assert all(g is None for g in torch.autograd.grad(m_step, rest, retain_graph=True, allow_unused=True))
    assert all(g is not None and torch.any(g != 0)
               for g in torch.autograd.grad(m_step, classifier, retain_graph=True))
    enc = torch.autograd.grad(e_step, [model.label_queries, model.encoder[0].ff[0].weight], retain_graph=True)
    assert all(torch.any(g != 0) for g in enc)
    # virtual batch size, and back to stage 1: plain BCE on the real images
    model.config.virtual_batch = 7
    assert model(x).extras["virtual_logits"].shape == (7, C)
    model.begin_stage(stage(model, "decouple"), None)
    assert not bool(model.reconstructing) and set(model.loss(model(x), y)) == {"total", "bce"}
    with pytest.raises(ValueError, match="StageContext"):
        model.begin_stage(stage(model, "reconstruct"), None)


def test_ldr_e_step_loss_follows_the_papers_q():
    """Sec. 3.4: q = 1 is BCE; the paper's q = 0.8 is GCE with exponent 0.2, which still pushes a
    confidently wrong positive, where the GCE paper's q = 0.8 (close to MAE) barely does."""
    x, y = batch()
    logits = torch.randn(*y.shape, generator=torch.Generator().manual_seed(3)) * 3
    paper = tiny("ldr")
    one = tiny("ldr", gce_q=1.0)
    torch.testing.assert_close(one.e_step_loss(logits, y, None), bce_loss(logits, y))
    torch.testing.assert_close(paper.e_step_loss(logits, y, None), generalized_cross_entropy_loss(logits, y, q=0.2))
    reference = tiny("ldr", gce_form="reference")
    torch.testing.assert_close(reference.e_step_loss(logits, y, None), generalized_cross_entropy_loss(logits, y, q=0.8))
    z = torch.tensor([[-6.0]], requires_grad=True)     # a positive scored at σ(−6) ≈ 0.0025
    target = torch.ones(1, 1)
    g_paper, = torch.autograd.grad(paper.e_step_loss(z, target, None), z)
    g_ref, = torch.autograd.grad(reference.e_step_loss(z, target, None), z)
    assert g_paper.abs().item() > 0.2 and g_ref.abs().item() < 0.01


def test_ldr_learning_rate_scales():
    model = tiny("ldr")
    assert [s.lr_scale for s in model.stages()] == [1.0, 0.1]
    groups = model.param_groups(lr=1.0, weight_decay=0.0)
    lr = {n: g["lr"] for g in groups for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    slow = ("label_queries", "label_indicator", "position", "word_indicator", "encoder.", "prompt_mlp.")
    for n, value in lr.items():
        assert value == pytest.approx(0.1 if n.startswith(slow) else 1.0), n
    assert lr["classifier.weight"] == 1.0 and any(n.startswith("backbone.") for n in lr)
    assert tiny("ldr", reconstruct_lr_scale=1.0).stages()[1].lr_scale == 1.0


def test_chexfusion_and_proto_contrast_learning_rate_scales():
    cf = tiny("chexfusion")
    assert [s.lr_scale for s in cf.stages()] == [1.0, 1.0]
    assert tiny("chexfusion", fusion_lr_scale=0.5).stages()[1].lr_scale == 0.5
    for model, slow in ((cf, ("head.",)), (tiny("proto_contrast"), ("label_proj.", "lga.", "lad."))):
        for g in model.param_groups(lr=1.0, weight_decay=0.0):
            for p in g["params"]:
                n = next(k for k, q in model.named_parameters() if q is p)
                assert g["lr"] == pytest.approx(0.1 if n.startswith(slow) else 1.0), n
    cf.begin_stage(stage(cf, "fusion"), None)
    names = {n for g in cf.param_groups(1.0, 0.0) for n, q in cf.named_parameters() for p in g["params"] if p is q}
    assert names and all(n.startswith(("fusion_proj.", "segment", "fusion_encoder.", "fusion_head.")) for n in names)
    lrs = {n: g["lr"] for g in cf.param_groups(1.0, 0.0) for n, q in cf.named_parameters() for p in g["params"]
           if p is q}
    assert lrs["fusion_proj.weight"] == 1.0 and lrs["segment"] == 1.0
    assert all(v == pytest.approx(0.1) for n, v in lrs.items() if n.startswith(("fusion_encoder.", "fusion_head.")))


def test_ldr_stage2_training_lowers_both_terms():
    model = to_stage2(tiny("ldr"))
    x, y = batch(B=6, seed=5)
    torch.manual_seed(0)
    _assert_training_lowers(model, lambda: model.loss(model(x), y, None), "e_step_gce", steps=15)
    torch.manual_seed(0)
    _assert_training_lowers(model, lambda: model.loss(model(x), y, None), "m_step_bce", steps=25, lr=1e-2)
    mean = model.gaussian_mean.clone()
    assert torch.equal(model.gaussian_mean, mean)  # the Gaussians are fixed in stage 2


# -- CheXFusion ----------------------------------------------------------------------------------------------
def test_ml_decoder_matches_torch_formulation():
    torch.manual_seed(0)
    dec = MLDecoder(in_dim=6, num_classes=5, dim=8, heads=2, ff_dim=16, dropout=0.1, layers=1, max_groups=2).eval()
    assert dec.queries.shape == (2, 8) and dec.group_weight.shape == (2, 8, 3) and dec.group_bias.shape == (5,)
    assert not any(n == "queries" for n, _ in dec.named_parameters())  # fixed, not learned
    layer = dec.layers[0]
    ref = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    with torch.no_grad():
        a = layer.cross.attn
        ref.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
        ref.out_proj.load_state_dict(a.out_proj.state_dict())
    x = torch.randn(3, 6, 2, 2)
    pad = torch.tensor([[False] * 4, [False, False, True, True], [False, True, False, False]])
    with torch.no_grad():
        memory = torch.relu(x.flatten(2).transpose(1, 2) @ dec.embed.weight.t() + dec.embed.bias)
        q = layer.query_norm(2 * dec.queries).expand(3, -1, -1)  # q + Dropout(q) in eval mode
        q = layer.cross.norm1(q + ref(q, memory, memory, key_padding_mask=pad, need_weights=False)[0])
        q = layer.cross.norm2(q + layer.cross.ff(q))
        expect = torch.zeros(3, 5)
        for g in range(2):
            for j in range(3):
                if g * 3 + j < 5:
                    expect[:, g * 3 + j] = q[:, g] @ dec.group_weight[g, :, j] + dec.group_bias[g * 3 + j]
        torch.testing.assert_close(dec(x, key_padding_mask=pad), expect, rtol=1e-5, atol=1e-5)
        # masked tokens do not matter; tokens [B, L, D] are accepted as well as maps
        x2 = x.flatten(2).transpose(1, 2).clone()
        x2[1, 2:] = 1e3
        torch.testing.assert_close(dec(x2, key_padding_mask=pad), expect, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="MLDecoder"):
        dec(torch.randn(2, 5, 7))


def test_sinusoidal_position_2d_values():
    pe = sinusoidal_position_2d(3, 4, 8)
    assert pe.shape == (12, 8)
    r, c = 2, 3
    row = pe[r * 4 + c]
    # channels 0..3 encode the row, 4..7 the column; frequencies 1 and 1/10000^(1/2)
    expect = [math.sin(r), math.cos(r), math.sin(r / 100), math.cos(r / 100),
              math.sin(c), math.cos(c), math.sin(c / 100), math.cos(c / 100)]
    np.testing.assert_allclose(row.numpy(), expect, rtol=1e-6, atol=1e-7)
    assert len({tuple(v) for v in pe.tolist()}) == 12  # every position has its own code
    with pytest.raises(ValueError, match="multiple of 4"):
        sinusoidal_position_2d(2, 2, 6)


def fusion_model():
    model = tiny("chexfusion")
    model.begin_stage(stage(model, "fusion"), None)
    return model


def test_fusion_of_views_by_hand_and_padding_masked():
    model = fusion_model().eval()
    g = torch.Generator().manual_seed(3)
    images = torch.randn(2, 3, 3, 32, 32, generator=g)
    images[0, 2] = 1e3  # a padded slot's content must not matter
    images[1, 1:] = -1e3
    view_mask = torch.tensor([[True, True, False], [True, False, False]])
    with torch.no_grad():
        out = model(images, view_mask).logits
        # by hand for study 0: frozen maps -> conv -> + positions + segment of the slot -> encoder -> head
        maps = model.fusion_proj(model.backbone(images[0, :2]))
        n, d, h, w = maps.shape
        tok = maps.flatten(2).transpose(1, 2) + sinusoidal_position_2d(h, w, d) + model.segment[:2, None, :]
        seq = tok.reshape(1, 2 * h * w, d)
        for layer in model.fusion_encoder:
            seq = layer(seq)
        torch.testing.assert_close(out[0], model.fusion_head(seq)[0], rtol=1e-5, atol=1e-5)
        # each study as if alone (batch composition does not matter), a single image = a one-view study
        torch.testing.assert_close(model(images[:1, :2]).logits[0], out[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(images[1:, :1], torch.ones(1, 1, dtype=torch.bool)).logits[0], out[1],
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(images[1, :1]).logits[0], out[1], rtol=1e-5, atol=1e-5)
        # the segment embedding tells the views apart: swapping them changes the prediction
        swapped = model(images[:1, [1, 0]]).logits[0]
        assert not torch.allclose(swapped, out[0], atol=1e-4)
    with pytest.raises(ValueError, match="max_views"):
        model(torch.randn(1, 5, 3, 32, 32))
    with pytest.raises(ValueError, match="at least one valid view"):
        model(images, torch.tensor([[True, False, False], [False, False, False]]))
    stage1 = tiny("chexfusion").eval()
    with pytest.raises(ValueError, match="fusion stage"):
        stage1(images, view_mask)


def test_fusion_stage_freezes_the_backbone_and_trains_the_fusion():
    model = tiny("chexfusion")
    named = dict(model.named_parameters())
    fusion_names = {n for n in named if n.startswith(("fusion_", "segment"))}
    stage1_names = {n for n in named if n.startswith(("backbone.", "head."))}
    assert fusion_names | stage1_names == set(named)
    # stage 1: the fusion modules are frozen (left out of the optimiser groups)
    model.begin_stage(stage(model, "backbone"), None)
    grouped = {id(p) for g in model.param_groups(1.0, 0.0) for p in g["params"]}
    assert grouped == {id(named[n]) for n in stage1_names}
    # stage 2: only the fusion modules train; the backbone stays in eval mode (BatchNorm statistics fixed)
    model.begin_stage(stage(model, "fusion"), None)
    grouped = {id(p) for g in model.param_groups(1.0, 0.0) for p in g["params"]}
    assert grouped == {id(named[n]) for n in fusion_names}
    model.train()
    assert not model.backbone.training and model.fusion_encoder.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(3, 2, 3, 32, 32)
    view_mask = torch.tensor([[True, True], [True, False], [True, True]])
    y = (torch.rand(3, C) < 0.5).float()
    first, last = _assert_training_lowers(model, lambda: model.loss(model(images, view_mask), y), "weighted_asl",
                                          steps=10)
    after = model.state_dict()
    for k, v in before.items():
        if k.startswith("backbone.") or k.startswith("head."):
            assert torch.equal(after[k], v), k  # weights and running statistics untouched
    assert not torch.equal(after["segment"], before["segment"])
    assert not torch.equal(after["fusion_proj.weight"], before["fusion_proj.weight"])
    # back to stage 1 (e.g. a new run in the same process)
    model.begin_stage(stage(model, "backbone"), None)
    model.train()
    assert model.backbone.training and not bool(model.fusion_active)


def test_chexfusion_loss_is_weighted_asl_with_train_prevalence():
    from fact_fast.nn import weighted_asymmetric_loss

    model = tiny("chexfusion")
    x, y = batch()
    out = model(x)
    expect = weighted_asymmetric_loss(out.logits, y, prevalence=ring_task().prevalence, gamma_neg=4.0,
                                      gamma_pos=1.0, clip=0.05)
    assert model.loss(out, y)["total"].item() == pytest.approx(expect.item(), rel=1e-6)


# -- proto_contrast --------------------------------------------------------------------------------------------
def test_label_prior_bias_from_the_graph():
    # 0-1 weight 2, 0-2 weight 1 (both directions), class 3 isolated
    graph = {"rowptr": torch.tensor([0, 2, 3, 4, 4]), "col": torch.tensor([1, 2, 0, 0]),
             "value": torch.tensor([2.0, 1.0, 2.0, 1.0]), "add_self_loops": True}
    a = np.array([[1, 2, 1, 0], [2, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
    with np.errstate(divide="ignore"):
        expect = np.log(a / a.sum(1, keepdims=True))
    np.testing.assert_allclose(label_prior_bias(graph, 4, "prior").numpy(), expect, rtol=1e-6)
    np.testing.assert_array_equal(label_prior_bias(graph, 4, "mask").numpy(), np.where(a > 0, 0.0, -np.inf))
    # explicit self loops (ML-GCN's re-weighted graph): none added, but an isolated class keeps itself
    graph["add_self_loops"] = False
    bias = label_prior_bias(graph, 4, "prior")
    assert bias[0, 0].item() == -math.inf and bias[3, 3].item() == 0.0


def test_label_graph_attention_follows_the_modulation():
    task = ring_task()  # class 0's neighbours: 1 and 4
    for modulation, isolated in (("prior", True), ("mask", True), ("none", False)):
        model = tiny("proto_contrast", task, lga_modulation=modulation, lga_layers=1).eval()
        with torch.no_grad():
            q = model.label_queries()
            model.label_text[2] += 5.0  # class 2 is not a neighbour of class 0
            q2 = model.label_queries()
        assert torch.allclose(q[0], q2[0]) == isolated, modulation
        assert not torch.allclose(q[2], q2[2])


def test_attention_bias_matches_torch_and_sigmoid_attention_matches_formula():
    torch.manual_seed(0)
    ours = MultiHeadAttention(8, 2)
    ref = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.load_state_dict(ours.out_proj.state_dict())
    x = torch.randn(2, 4, 8)
    bias = torch.randn(4, 4)
    bias[0, 2] = float("-inf")
    pad = torch.tensor([[False, False, False, True], [False] * 4])
    pad_bias = torch.zeros(2, 4).masked_fill(pad, float("-inf"))  # torch wants both masks of one type
    with torch.no_grad():
        torch.testing.assert_close(ours(x, attn_mask=bias), ref(x, x, x, attn_mask=bias, need_weights=False)[0],
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x, attn_mask=bias, key_padding_mask=pad),
                                   ref(x, x, x, attn_mask=bias, key_padding_mask=pad_bias, need_weights=False)[0],
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="attn_mask"):
        ours(x, attn_mask=torch.zeros(3, 4))
    # sigmoid: σ(q kᵀ/√d_h − log Lk) v per head, through ops.sigmoid_attention
    sig = MultiHeadAttention(8, 2, attention="sigmoid")
    q_in, kv = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    with torch.no_grad():
        q = sig.q_proj(q_in).view(2, 3, 2, 4).transpose(1, 2)
        k = sig.k_proj(kv).view(2, 5, 2, 4).transpose(1, 2)
        v = sig.v_proj(kv).view(2, 5, 2, 4).transpose(1, 2)
        gates = torch.sigmoid(q @ k.transpose(-1, -2) / 2.0 - math.log(5))
        expect = sig.out_proj((gates @ v).transpose(1, 2).reshape(2, 3, 8))
        torch.testing.assert_close(sig(q_in, kv), expect, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="sigmoid"):
        sig(q_in, kv, key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="attention"):
        MultiHeadAttention(8, 2, attention="relu")


def test_lad_attention_choice_changes_the_decoder():
    a = tiny("proto_contrast", lad_attention="sigmoid").eval()
    b = tiny("proto_contrast", lad_attention="softmax").eval()
    b.load_state_dict(a.state_dict())
    x, _ = batch()
    with torch.no_grad():
        assert not torch.allclose(a(x).logits, b(x).logits, atol=1e-4)
    assert a.lad[0].attn.attention == "sigmoid" and b.lad[0].attn.attention == "softmax"


def test_ema_prototypes_update_after_the_loss():
    model = tiny("proto_contrast").train()
    x, y = batch()
    y[:, 3] = 0.0  # class 3 has no positive in the batch
    mask = torch.ones_like(y, dtype=torch.bool)
    mask[0, 0] = False  # an unknown positive does not move the prototype
    out = model(x)
    losses = model.loss(out, y, mask)
    assert losses["apcl"].item() == 0.0  # no prototype existed yet
    f = F.normalize(out.extras["class_features"].detach(), dim=-1)
    pos = (y > 0.5) & mask
    first = torch.stack([f[pos[:, c], c].mean(0) if pos[:, c].any() else torch.zeros(32) for c in range(C)])
    torch.testing.assert_close(model.prototype_bank, first)
    assert model.prototype_updates.tolist() == [int(pos[:, c].any()) for c in range(C)]
    neg = (y < 0.5) & mask  # the absence prototypes: the same over the known negatives
    first_absent = torch.stack([f[neg[:, c], c].mean(0) for c in range(C)])
    torch.testing.assert_close(model.absent_bank, first_absent)
    # second batch: p ← 0.9 p + 0.1 mean; the loss used the prototypes from before this update
    x2, y2 = batch(seed=9)
    out2 = model(x2)
    from fact_fast.nn import prototype_contrastive_loss
    expect_apcl = prototype_contrastive_loss(out2.extras["class_features"], y2, None, first,
                                             model.prototype_updates > 0, temperature=1.0, class_negatives=False,
                                             absent_prototypes=first_absent, absent_mask=model.absent_updates > 0)
    losses2 = model.loss(out2, y2, None)
    assert losses2["apcl"].item() == pytest.approx(expect_apcl.item(), rel=1e-6) and losses2["apcl"].item() > 0
    f2 = F.normalize(out2.extras["class_features"].detach(), dim=-1)
    for c in range(C):
        if (y2[:, c] > 0.5).any():
            new = f2[y2[:, c] > 0.5, c].mean(0)
            expect = new if not pos[:, c].any() else 0.9 * first[c] + 0.1 * new
            torch.testing.assert_close(model.prototype_bank[c], expect)
    # evaluation does not move them; "label" prototypes are the LGA queries
    bank = model.prototype_bank.clone()
    model.eval()
    model.loss(model(x), y, None)
    assert torch.equal(model.prototype_bank, bank)
    with pytest.raises(ValueError, match="apcl_negatives='classes'"):
        tiny("proto_contrast", prototypes="label")
    lab = tiny("proto_contrast", prototypes="label", apcl_negatives="classes")
    assert not any("prototype" in k or "absent" in k for k in lab.state_dict())
    out = lab(x)
    expect = prototype_contrastive_loss(out.extras["class_features"], y, None, out.extras["label_queries"],
                                        temperature=1.0)
    assert lab.loss(out, y)["apcl"].item() == pytest.approx(expect.item(), rel=1e-6)


def test_absence_prototypes_are_the_negative_that_queries_cannot_separate():
    """Each class's features offset by its own far-apart vector (what distinct decoder queries
    do): the other classes' prototypes are then met by the offsets alone (loss ~0), the class's
    own absence prototype is not; there the loss falls only as a positive's feature moves from
    the absence prototype to the presence one."""
    from fact_fast.nn import prototype_contrastive_loss

    g = torch.Generator().manual_seed(5)
    B, d = 6, 16
    offset = 10.0 * torch.eye(C, d)
    evidence = torch.randn(B, C, d, generator=g)
    y = (torch.rand(B, C, generator=g) < 0.5).float()
    y[0] = 1.0
    y[1] = 0.0
    feats = offset + evidence
    fn = F.normalize
    present = torch.stack([fn(feats[y[:, c] > 0.5, c], dim=-1).mean(0) for c in range(C)])
    absent = torch.stack([fn(feats[y[:, c] < 0.5, c], dim=-1).mean(0) for c in range(C)])
    def classes(x, tau):
        return prototype_contrastive_loss(x, y, None, present, temperature=tau).item()

    def own(x):
        return prototype_contrastive_loss(x, y, None, present, temperature=1.0, absent_prototypes=absent,
                                          class_negatives=False).item()

    assert classes(feats, 0.1) < 5e-3 and own(feats) > 0.5
    # by hand: softplus(cos(f, a_c) − cos(f, p_c)) over the positive anchors, τ = 1
    f = fn(feats, dim=-1)
    gap = (f * fn(absent, dim=-1)).sum(-1) - (f * fn(present, dim=-1)).sum(-1)
    assert own(feats) == pytest.approx(F.softplus(gap)[y > 0.5].mean().item(), rel=1e-5)
    # moving the positives' evidence towards the presence side lowers it
    toward = feats + 20.0 * y[..., None] * (present - absent)[None]
    assert own(toward) < own(feats) - 0.03
    with pytest.raises(ValueError, match="absent_prototypes"):
        prototype_contrastive_loss(feats, y, None, present, class_negatives=False)


# -- through the engine ------------------------------------------------------------------------------------------
BASE_RUN = ["--backbone", "test_resnet", "--image-size", "32", "--dataset-kwargs", "num_samples=32",
            "--batch-size", "16", "--no-progress", "--threads", "1", "--warmup-epochs", "0.5"]
TINY_RUN = BASE_RUN + ["--epochs", "1"]
KWARGS = {name: [a for k, v in SMALL[name].items() for a in ("--model-kwargs", f"{k}={v}")] for name in SMALL}


def read_log(out):
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def weights_equal(a, b):
    assert set(a) == set(b)
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


@pytest.fixture(scope="module")
def ldr_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ldr")
    # with an EMA, best-decouple.pt (the EMA weights) differs from the weights in memory at the end
    # of stage 1, so only a stage 2 that loads it finds the statistics checked below
    # (timm's EMA copies the weights on its first two updates: 4 steps of batch 8 make it differ)
    assert train.main(["--model", "ldr", "--out", str(out)] + TINY_RUN + KWARGS["ldr"] +
                      ["--ema-decay", "0.5", "--batch-size", "8"]) == 0
    return str(out)


def test_ldr_runs_both_stages_from_one_command(ldr_run, tmp_path):
    files = set(os.listdir(ldr_run))
    assert {"best-decouple.pt", "best-reconstruct.pt", "best.pt", "last.pt", "metrics_test.json"} <= files
    log = read_log(ldr_run)
    assert [(r["stage"], r["epoch"]) for r in log] == [("decouple", 1), ("reconstruct", 1)]
    assert "train_bce" in log[0] and {"train_m_step_bce", "train_e_step_gce"} <= set(log[1])
    best = load_checkpoint(os.path.join(ldr_run, "best.pt"))
    with open(os.path.join(ldr_run, "stages.json")) as fh:
        selected = json.load(fh)["selected"]
    assert best.stage == selected and best.eval_views is False
    assert {"metrics_test-decouple.json", "metrics_test-reconstruct.json"} <= files
    # stage 2 started from stage 1's best weights: its Gaussians are the class statistics of the
    # best-decouple.pt model over the training set (eval transform), recomputed here
    stage1 = load_checkpoint(os.path.join(ldr_run, "best-decouple.pt"))
    assert stage1.stage == "decouple"
    model = model_from_spec(stage1.model_spec, stage1.model)
    ds = build_dataset("synthetic", "train", image_size=32, seed=0, train=False, num_samples=32)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, collate_fn=collate)
    model.estimate_gaussians(loader)
    last = load_checkpoint(os.path.join(ldr_run, "last.pt")).model
    for key in ("gaussian_mean", "gaussian_scale", "sample_prob"):
        torch.testing.assert_close(last[key], getattr(model, key), rtol=1e-4, atol=1e-5)
    assert torch.equal(last["gaussian_count"], model.gaussian_count) and bool(last["reconstructing"])
    # checkpoint -> evaluate round trip
    out_json = tmp_path / "val.json"
    assert evaluate.main([os.path.join(ldr_run, "best.pt"), "--split", "val", "--out", str(out_json),
                          "--no-progress"]) == 0
    metrics = json.loads(out_json.read_text())
    assert metrics["model"] == "ldr" and metrics["mAP"] == pytest.approx(best.metrics["val"]["mAP"], abs=1e-6)


def test_ldr_second_stage_alone_and_its_resume_are_exact(ldr_run, tmp_path, capsys):
    common = ["--model", "ldr", "--stage", "reconstruct", "--epochs", "2", "--no-eval-test"] + BASE_RUN + KWARGS["ldr"]
    # --stage reconstruct needs the previous stage's best weights in --out
    assert train.main(common + ["--out", str(tmp_path / "empty")]) == 2
    assert "run --stage decouple first" in capsys.readouterr().err
    dirs = {}
    for name in ("straight", "resumed"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        shutil.copy(os.path.join(ldr_run, "best-decouple.pt"), dirs[name] / "best-decouple.pt")
    assert train.main(common + ["--out", str(dirs["straight"])]) == 0
    # interrupted after epoch 1 of stage 2 (2 steps), then resumed: the Gaussians come from the
    # checkpoint (not re-estimated from the partly trained model), the sampling RNG is restored
    assert train.main(common + ["--out", str(dirs["resumed"]), "--max-steps", "2"]) == 0
    assert [r["epoch"] for r in read_log(str(dirs["resumed"]))] == [1]
    assert train.main(["--resume", str(dirs["resumed"] / "last.pt"), "--max-steps", "none", "--no-progress"]) == 0
    a = load_checkpoint(str(dirs["straight"] / "last.pt"))
    b = load_checkpoint(str(dirs["resumed"] / "last.pt"))
    # the stage started from the copied best-decouple.pt: the same Gaussians as the one-command run's
    one_command = load_checkpoint(os.path.join(ldr_run, "last.pt")).model
    for key in ("gaussian_mean", "gaussian_scale", "gaussian_count", "sample_prob"):
        torch.testing.assert_close(a.model[key], one_command[key], rtol=1e-5, atol=1e-6)
    assert (a.stage, a.epoch, a.step) == (b.stage, b.epoch, b.step) == ("reconstruct", 2, 4)
    weights_equal(a.model, b.model)
    assert [r["epoch"] for r in read_log(str(dirs["resumed"]))] == [1, 2]
    # a --stage run writes best.pt too
    assert os.path.isfile(dirs["straight"] / "best.pt") and os.path.isfile(dirs["straight"] / "best-reconstruct.pt")


def test_chexfusion_two_stages_on_single_image_studies(tmp_path):
    """The synthetic data has no study ids: each image is its own one-view study in stage 2."""
    out = tmp_path / "cf"
    assert train.main(["--model", "chexfusion", "--out", str(out)] + TINY_RUN + KWARGS["chexfusion"]) == 0
    assert {"best-backbone.pt", "best-fusion.pt", "best.pt"} <= set(os.listdir(out))
    assert [r["stage"] for r in read_log(str(out))] == ["backbone", "fusion"]
    best = load_checkpoint(str(out / "best-fusion.pt"))
    assert best.stage == "fusion" and best.eval_views is True and bool(best.model["fusion_active"])
    # the fusion stage started from stage 1's best weights and never moved the backbone
    stage1 = load_checkpoint(str(out / "best-backbone.pt")).model
    for k, v in stage1.items():
        if k.startswith(("backbone.", "head.")):
            assert torch.equal(best.model[k], v), k
    out_json = tmp_path / "val.json"
    assert evaluate.main([str(out / "best-fusion.pt"), "--split", "val", "--out", str(out_json),
                          "--no-progress"]) == 0
    metrics = json.loads(out_json.read_text())
    assert metrics["num_samples"] == 32 and metrics["mAP"] == pytest.approx(best.metrics["val"]["mAP"], abs=1e-6)


def test_chexfusion_on_two_view_synthetic_studies(tmp_path):
    """--dataset-kwargs views=2: both stages see studies of two views; the backbone stage trains on
    single views and is scored per study (max over views), the fusion stage fuses them, so the
    validation scores that choose best.pt are both per study."""
    out = tmp_path / "mv"
    args = ["--model", "chexfusion", "--out", str(out), "--dataset-kwargs", "views=2"] + TINY_RUN + \
        KWARGS["chexfusion"]
    assert train.main(args) == 0
    log = read_log(str(out))
    # 32 studies of 2 views, batch 16: 2 steps in either stage
    assert [(r["stage"], r["step"]) for r in log] == [("backbone", 2), ("fusion", 2)]
    fusion = load_checkpoint(str(out / "best-fusion.pt"))
    assert fusion.eval_views is True and bool(fusion.model["fusion_active"])
    for name in ("backbone", "fusion"):
        with open(out / f"metrics_test-{name}.json") as fh:
            assert json.load(fh)["num_samples"] == 32
    # the fusion model scores a study from both views: dropping one changes its scores
    model = model_from_spec(fusion.model_spec, fusion.model).eval()
    ds = build_dataset("synthetic", "val", image_size=32, num_samples=4, views=2, train=False)
    images = torch.stack([ds[i][0] for i in range(4)])
    with torch.no_grad():
        both = model(images, torch.ones(4, 2, dtype=torch.bool)).scores
        first = model(images, torch.tensor([[True, False]] * 4)).scores
    assert not torch.allclose(both, first)


def test_chexfusion_fuses_the_views_of_cxr_lt_studies(tmp_path):
    """A CXR-LT fixture (MIMIC layout): studies of 1, 2 and 5 views. Stage 2 batches studies of up to
    4 views; evaluation groups the views the same way (the 5-view study is cut to 4, not refused)."""
    from tests.data.test_data_cxr_lt import TRAIN, make_tree

    root, _, _ = make_tree(tmp_path)
    out = tmp_path / "run"
    args = ["--model", "chexfusion", "--dataset", "cxr_lt", "--data-root", root, "--out", str(out),
            "--backbone", "test_resnet", "--image-size", "32", "--batch-size", "3", "--epochs", "1",
            "--no-progress", "--threads", "1", "--warmup-epochs", "0", "--no-eval-test"] + KWARGS["chexfusion"]
    assert train.main(args) == 0
    log = read_log(str(out))
    studies = len({r[1] for r in TRAIN})
    assert studies == 4 and len(TRAIN) == 9
    assert [(r["stage"], r["step"]) for r in log] == [("backbone", 3), ("fusion", 2)]  # 9 images, 4 studies
    out_json = tmp_path / "train.json"
    assert evaluate.main([str(out / "best.pt"), "--split", "train", "--out", str(out_json), "--no-progress"]) == 0
    assert json.loads(out_json.read_text())["num_samples"] == studies


def test_proto_contrast_train_then_evaluate_round_trip(tmp_path):
    out = tmp_path / "pc"
    assert train.main(["--model", "proto_contrast", "--out", str(out)] + TINY_RUN + KWARGS["proto_contrast"]) == 0
    row = read_log(str(out))[0]
    assert row["step"] == 2 and {"train_bce", "train_apcl"} <= set(row)
    best = load_checkpoint(str(out / "best.pt"))
    assert int(best.model["prototype_updates"].sum()) > 0
    out_json = tmp_path / "val.json"
    assert evaluate.main([str(out / "best.pt"), "--split", "val", "--out", str(out_json), "--no-progress"]) == 0
    assert json.loads(out_json.read_text())["mAP"] == pytest.approx(best.metrics["val"]["mAP"], abs=1e-6)


def test_paper_recipes_as_config_presets():
    cfg, _ = parse_config(["--config", os.path.join(ROOT, "configs", "ldr.yaml")])
    assert (cfg.model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.batch_size) == ("ldr", "adam", 1e-4, 1e-5, 32)
    assert (cfg.image_size, cfg.resize, cfg.crop, cfg.min_lr_ratio) == (448, 512, "random", 1.0)
    # one learning rate for the whole network and both stages, as the paper states it
    assert cfg.model_kwargs == {"transformer_lr_scale": 1.0, "reconstruct_lr_scale": 1.0}
    cfg, _ = parse_config(["--config", os.path.join(ROOT, "configs", "chexfusion.yaml"), "--epochs", "3"])
    assert (cfg.model, cfg.optimizer, cfg.lr, cfg.batch_size, cfg.image_size, cfg.epochs) == \
        ("chexfusion", "adamw", 3e-5, 8, 1024, 3)
    assert cfg.backbone == "convnext_small.fb_in22k_ft_in1k" and cfg.pretrained is True
    assert cfg.model_kwargs == {"transformer_lr_scale": 1.0, "fusion_lr_scale": 1.0}
    cfg, _ = parse_config(["--config", os.path.join(ROOT, "configs", "mlgcn_experts.yaml")])
    assert (cfg.optimizer, cfg.lr, cfg.adam_beta2, cfg.weight_decay, cfg.min_lr_ratio, cfg.sampler) == \
        ("adam", 1e-4, 0.99, 0.0, 1.0, "cycle")
    assert cfg.model_kwargs == {"transformer_lr_scale": 1.0}
