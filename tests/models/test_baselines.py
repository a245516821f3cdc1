"""The baselines (resnet50_bce/asl/focal, mlgcn, mlgcn_experts) and their building blocks: shapes,
paper defaults, masked losses, a few training steps, the label-GCN classifier against a dense
formula, pooling and attention against independent formulations, the class-balanced samplers,
and train -> evaluate round trips through the command-line engine."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fact_fast import evaluate, train
from fact_fast.engine.data import ClassAwareSampler
from fact_fast.models import (ModelOutput, TaskInfo, create_model,
                              get_model_config, list_models, model_from_spec, model_spec)
from fact_fast.nn import (Backbone, MultiHeadAttention, TransformerEncoderLayer, global_pool, split_last_stage)
from fact_fast.utils.checkpoint import load_checkpoint
from tests.helpers.model_utils import ring_task as shared_ring_task, single_thread
from tests.helpers import REPO_ROOT as ROOT

BASELINES = ("resnet50_bce", "resnet50_asl", "resnet50_focal", "mlgcn", "mlgcn_experts")
C = 5


_one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


def ring_task(n=C, emb_dim=16, value=None, add_self_loops=True):
    return shared_ring_task(n, emb_dim, value, add_self_loops, prevalence=None, seed=7)


def tiny(name, task=None, **over):
    torch.manual_seed(0)
    over.setdefault("backbone", "test_resnet")
    if name == "mlgcn_experts":
        over.setdefault("attention_ff_dim", 64)
        over.setdefault("gcn_hidden", 32)
    elif name == "mlgcn":
        over.setdefault("gcn_hidden", 32)
    return create_model(name, task or ring_task(), **over)


def batch(B=4, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, size, size, generator=g)
    y = (torch.rand(B, C, generator=g) < 0.4).float()
    y[0, 0] = 1.0  # at least one positive
    return x, y


# -- registry and defaults ---------------------------------------------------------------------------
def test_registered_names_and_paper_defaults():
    assert set(BASELINES) <= set(list_models())
    for name in BASELINES:
        cfg = get_model_config(name)
        assert cfg.backbone == "resnet50" and cfg.pretrained is False and cfg.pretrained_file is None
    assert [get_model_config(n).criterion for n in BASELINES[:3]] == ["bce", "asl", "focal"]
    asl = get_model_config("resnet50_asl")
    assert (asl.asl_gamma_neg, asl.asl_gamma_pos, asl.asl_clip) == (4.0, 0.0, 0.05)
    focal = get_model_config("resnet50_focal")
    assert (focal.focal_gamma, focal.focal_alpha) == (2.0, 0.25)
    g = get_model_config("mlgcn")
    assert (g.gcn_hidden, g.gcn_negative_slope, g.pooling) == (1024, 0.2, "max")
    e = get_model_config("mlgcn_experts")
    assert (e.num_experts, e.lse_gamma, e.diversity_weight, e.gcn_hidden, e.attention_heads) == (4, 0.5, 0.2, 1024, 8)
    assert (e.diversity, e.scaled_logits, e.transformer_lr_scale) == ("jensen_shannon", True, 0.1)


@pytest.mark.parametrize("name,bad,match", [
    ("resnet50_asl", {"criterion": "hinge"}, "criterion"),
    ("resnet50_asl", {"asl_clip": 1.5}, "asl_clip"),
    ("resnet50_focal", {"focal_alpha": -0.1}, "focal_alpha"),
    ("resnet50_bce", {"reduction": "none"}, "reduction"),
    ("mlgcn", {"gcn_hidden": 0}, "gcn_hidden"),
    ("mlgcn", {"pooling": "median"}, "pooling"),
    ("mlgcn_experts", {"num_experts": 1}, "num_experts"),
    ("mlgcn_experts", {"label_attention": "none"}, "label_attention"),
    ("mlgcn_experts", {"expert_init": "zeros"}, "expert_init"),
    ("mlgcn_experts", {"attention_heads": 7}, "attention_heads"),
    ("mlgcn", {"dim": 3}, "dim"),
    ("resnet50_focal", {"focal_alpha": "none"}, "focal_alpha.*null"),
    ("mlgcn_experts", {"num_experts": 2.5}, "num_experts.*integer"),
    ("mlgcn_experts", {"attention_dropout": 1.0}, "attention_dropout"),
    ("mlgcn_experts", {"diversity": "kl"}, "diversity"),
    ("mlgcn_experts", {"scaled_logits": "yes"}, "scaled_logits"),
    ("mlgcn_experts", {"transformer_lr_scale": 0}, "transformer_lr_scale"),
])
def test_bad_options_raise_naming_them(name, bad, match):
    with pytest.raises(ValueError, match=match):
        tiny(name, **bad)


def test_graph_models_need_embeddings_and_graph():
    task = ring_task()
    for name in ("mlgcn", "mlgcn_experts"):
        with pytest.raises(ValueError, match="label_embeddings"):
            tiny(name, TaskInfo(task.class_names, None, task.graph))
        with pytest.raises(ValueError, match="graph"):
            tiny(name, TaskInfo(task.class_names, task.label_embeddings, None))


# -- forward, loss, masking, training -------------------------------------------------------------------
@pytest.mark.parametrize("name", BASELINES)
def test_forward_shapes(name):
    model = tiny(name)
    x, _ = batch()
    out = model(x)
    assert isinstance(out, ModelOutput)
    assert out.scores.shape == (4, C) and out.logits.shape == (4, C)
    assert torch.allclose(out.scores, torch.sigmoid(out.logits))
    assert model.default_threshold == 0.5
    if name == "mlgcn_experts":
        assert out.extras["expert_logits"].shape == (4, 4, C)
        assert torch.allclose(out.logits, out.extras["expert_logits"].mean(0))
    else:
        assert out.extras["features"].shape == (4, 96)  # test_resnet's feature width
    if name == "mlgcn":
        assert out.extras["classifiers"].shape == (C, 96)
    one = model.eval()(x[:1])
    assert one.scores.shape == (1, C)


@pytest.mark.parametrize("name", BASELINES)
def test_bf16_autocast_forward_backward(name):
    model = tiny(name)
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    losses = model.loss(out, y, torch.ones_like(y, dtype=torch.bool))
    assert losses["total"].dtype == torch.float32 and torch.isfinite(losses["total"])
    losses["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", BASELINES)
def test_loss_honours_mask(name):
    model = tiny(name)
    x, y = batch()
    mask = torch.rand(4, C, generator=torch.Generator().manual_seed(2)) < 0.6
    mask[0, 0] = True
    out = model(x)
    logits = out.logits.detach().requires_grad_(True)
    extras = dict(out.extras)
    if name == "mlgcn_experts":
        extras["expert_logits"] = extras["expert_logits"].detach().requires_grad_(True)
    losses = model.loss(ModelOutput(torch.sigmoid(logits), logits, extras), y, mask)
    assert "total" in losses and losses["total"].dim() == 0 and torch.isfinite(losses["total"])
    losses["total"].backward()
    grad = extras["expert_logits"].grad if name == "mlgcn_experts" else logits.grad
    if name == "mlgcn_experts":
        # the diversity term has no labels: compare with λ = 0 for the classification part alone
        model.config.diversity_weight = 0.0
        ex = extras["expert_logits"].detach().requires_grad_(True)
        model.loss(ModelOutput(torch.sigmoid(logits), logits, {"expert_logits": ex}), y, mask)["total"].backward()
        grad = ex.grad
        assert torch.all(grad[:, ~mask] == 0) and torch.any(grad[:, mask] != 0)
    else:
        assert torch.all(grad[~mask] == 0) and torch.any(grad[mask] != 0)
    # flipping the unknown targets changes nothing
    y2 = torch.where(mask, y, 1 - y)
    with torch.no_grad():
        a = model.loss(out, y, mask)["total"]
        b = model.loss(out, y2, mask)["total"]
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


@pytest.mark.parametrize("name", BASELINES)
def test_few_steps_lower_the_loss(name):
    model = tiny(name)
    x, y = batch(B=6, seed=5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    first = last = None
    for _ in range(12):
        losses = model.loss(model(x), y, None)
        key = "bce" if name == "mlgcn_experts" else "total"
        if first is None:
            first = losses[key].item()
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        last = losses[key].item()
    model.eval()
    with torch.no_grad():
        final = float(model.loss(model(x), y, None)["bce" if name == "mlgcn_experts" else "total"])
    assert last < first and final < first, (first, last, final)


# the modules each model trains at transformer_lr_scale (default 0.1) x --lr
TRANSFORMER_PARTS = {"mlgcn_experts": ("encoder.",)}


@pytest.mark.parametrize("name", BASELINES)
def test_param_groups_split_backbone_and_head(name):
    model = tiny(name)
    groups = model.param_groups(lr=1.0, weight_decay=0.1, backbone_lr_scale=0.1)
    named = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for g in groups:
        for p in g["params"]:
            n = named[id(p)]
            trunk = n.startswith(model.backbone_prefixes)
            attention = n.startswith(TRANSFORMER_PARTS.get(name, ()))
            assert g["lr"] == pytest.approx((0.1 if trunk else 1.0) * (0.1 if attention else 1.0)), n
            assert g["name"].startswith("backbone" if trunk else "head"), n
            assert g["name"].endswith("_x0.1") == attention, (n, g["name"])
            seen.add(id(p))
    assert seen == set(named)
    assert any(n.startswith(model.backbone_prefixes) for n in named.values())
    assert any(not n.startswith(model.backbone_prefixes) for n in named.values())
    if name == "mlgcn_experts":
        assert {n.split(".")[0] for n in named.values() if n.startswith(model.backbone_prefixes)} == \
            {"trunk", "expert_stages"}


@pytest.mark.parametrize("name", BASELINES)
def test_spec_round_trip_rebuilds_the_same_model(name):
    model = tiny(name).eval()
    x, _ = batch()
    again = model_from_spec(model_spec(model), model.state_dict()).eval()
    torch.testing.assert_close(again(x).logits, model(x).logits)


# -- ML-GCN against a dense formula ----------------------------------------------------------------------
def dense_gcn(task, model_gcn, slope):
    """S = Â LeakyReLU(Â E W0) W1 with Â = D^{-1/2} (A [+ I]) D^{-1/2}, D the row sums (ML-GCN Eq. 2)."""
    g = task.graph
    n = task.num_classes
    a = np.zeros((n, n))
    rows = np.repeat(np.arange(n), np.diff(g["rowptr"].numpy()))
    vals = np.ones(len(rows)) if g["value"] is None else g["value"].numpy().astype(np.float64)
    np.add.at(a, (rows, g["col"].numpy()), vals)
    if g["add_self_loops"]:
        a = a + np.eye(n)
    d = a.sum(1) ** -0.5
    a_hat = d[:, None] * a * d[None, :]
    e = task.label_embeddings.double().numpy()
    w0 = model_gcn.layer1.weight.detach().double().numpy()
    w1 = model_gcn.layer2.weight.detach().double().numpy()
    h = a_hat @ e @ w0
    h = np.where(h > 0, h, slope * h)
    return a_hat @ h @ w1


@pytest.mark.parametrize("weighted", [False, True])
def test_mlgcn_logits_match_dense_formula(weighted):
    if weighted:
        # an ML-GCN-style re-weighted graph carrying its own self loops: p / deg off-diagonal, 1 - p on it
        n, p = C, 0.2
        rowptr = torch.arange(n + 1) * 3
        col = torch.stack([(torch.arange(n) - 1) % n, torch.arange(n), (torch.arange(n) + 1) % n], 1).flatten()
        value = torch.tensor([p / 2, 1 - p, p / 2] * n)
        base = ring_task()
        task = TaskInfo(base.class_names, base.label_embeddings,
                        {"rowptr": rowptr, "col": col, "value": value, "add_self_loops": False})
    else:
        task = ring_task()
    model = tiny("mlgcn", task).eval()
    x, _ = batch()
    out = model(x)
    s = dense_gcn(task, model.gcn, 0.2)
    feats = global_pool(model.backbone(x), "max").detach().double().numpy()
    np.testing.assert_allclose(out.extras["classifiers"].detach().double().numpy(), s, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.logits.detach().double().numpy(), feats @ s.T, rtol=1e-4, atol=1e-4)


# -- ML-GCN experts ---------------------------------------------------------------------------------------
def test_split_last_stage_recomposes_the_backbone():
    torch.manual_seed(0)
    bb = Backbone("test_resnet").eval()
    shared, last = split_last_stage(bb)
    x, _ = batch()
    torch.testing.assert_close(last(shared(x)), bb(x))
    assert list(last._modules) == ["layer4"]
    # an earlier out_index: the returned stage is the one split off
    bb3 = Backbone("test_resnet", out_index=3).eval()
    shared, last = split_last_stage(bb3)
    torch.testing.assert_close(last(shared(x)), bb3(x))
    assert list(last._modules) == ["layer3"] and "layer2" in shared._modules
    with pytest.raises(ValueError, match="no feature stage before it"):
        split_last_stage(Backbone("test_resnet", out_index=0))
    with pytest.raises(ValueError, match="FeatureListNet|sequence"):
        split_last_stage(Backbone("test_vit"))


def test_experts_copy_or_reinitialise_the_last_stage():
    copy_model = tiny("mlgcn_experts")
    ref = copy_model.expert_stages[0].state_dict()
    for stage in copy_model.expert_stages[1:]:
        for k, v in stage.state_dict().items():
            assert torch.equal(v, ref[k])
    assert copy_model.expert_stages[0].layer4 is not copy_model.expert_stages[1].layer4
    rand = tiny("mlgcn_experts", expert_init="random")
    w0 = rand.expert_stages[0].state_dict()
    w1 = rand.expert_stages[1].state_dict()
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if k.endswith("conv1.weight"))
    # the experts' GCNs are independent
    g = copy_model.expert_gcns
    assert not torch.equal(g[0].layer1.weight, g[1].layer1.weight)


def test_experts_forward_composition_and_label_attention_modes():
    """Recompute one expert's logits by hand from the model's parts (LSE pooling written out)."""
    for mode in ("across_labels", "per_label"):
        model = tiny("mlgcn_experts", label_attention=mode).eval()
        x, _ = batch()
        with torch.no_grad():
            z = model.expert_logits(x)
            f = model.expert_stages[2](model.trunk(x)).flatten(2)
            u = torch.log(torch.exp(0.5 * f).mean(-1)) / 0.5  # Eq. 5
            u = model.encoder(u[:, None, :])[:, 0]
            a = model.expert_gcns[2]()
            if mode == "across_labels":
                a = model.encoder(a[None])[0]
            else:
                a = torch.stack([model.encoder(a[c][None, None])[0, 0] for c in range(C)])
        torch.testing.assert_close(z[2], u @ a.t() / math.sqrt(96), rtol=1e-4, atol=1e-4)
    # across labels, one label's classifier depends on the others; per label it does not
    a = torch.randn(C, 96)
    b = a.clone()
    b[1:] += 1.0
    enc = model.encoder.eval()
    with torch.no_grad():
        assert not torch.allclose(enc(a[None])[0, 0], enc(b[None])[0, 0])
        torch.testing.assert_close(enc(a[:, None])[0, 0], enc(b[:, None])[0, 0])


def js_diversity_by_hand(z):
    """−1/(n−1) Σ_i KL(p_i ‖ p̄) per sample, averaged, in float64 numpy."""
    z = z.double().numpy()
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    pbar = p.mean(0)
    kl = (p * (np.log(p) - np.log(pbar))).sum(-1)
    return -kl.sum(0).mean() / (z.shape[0] - 1)


@pytest.mark.parametrize("diversity", ["jensen_shannon", "ride"])
def test_experts_loss_is_sum_of_expert_bce_plus_weighted_diversity(diversity):
    from fact_fast.nn import bce_loss, ride_diversity_loss

    model = tiny("mlgcn_experts", diversity=diversity)
    x, y = batch()
    out = model(x)
    losses = model.loss(out, y)
    z = out.extras["expert_logits"].detach()
    bce = sum(bce_loss(z[e], y).item() for e in range(4))
    div = js_diversity_by_hand(z) if diversity == "jensen_shannon" else ride_diversity_loss(z).item()
    assert losses["bce"].item() == pytest.approx(bce, rel=1e-5)
    assert losses["diversity"].item() == pytest.approx(div, rel=1e-5) and div < 0
    assert losses["total"].item() == pytest.approx(bce + 0.2 * div, rel=1e-5)


def test_jensen_shannon_diversity_is_bounded_where_ride_is_not():
    from fact_fast.nn import jensen_shannon_diversity_loss, ride_diversity_loss

    n, C = 4, 6
    # each expert puts all its mass on its own class, more sharply as the scale grows
    base = torch.full((n, 2, C), -1.0)
    for e in range(n):
        base[e, :, e] = 1.0
    bound = -n * math.log(n) / (n - 1)
    js = [jensen_shannon_diversity_loss(s * base).item() for s in (0.5, 1.5, 100.0)]
    ride = [ride_diversity_loss(s * base).item() for s in (0.5, 1.5, 100.0)]
    assert js[0] > js[1] > js[2] >= bound - 1e-6 and js[2] == pytest.approx(bound, rel=1e-6)
    assert ride[2] < 10 * bound and ride[0] > ride[1] > ride[2]
    # identical experts: no diversity at all
    assert jensen_shannon_diversity_loss(base[:1].expand(n, 2, C)).item() == pytest.approx(0.0, abs=1e-7)
    np.testing.assert_allclose(jensen_shannon_diversity_loss(base * 3).item(), js_diversity_by_hand(base * 3),
                               rtol=1e-6)
    # the gradient reaches every expert's logits
    z = (3 * base).requires_grad_()
    jensen_shannon_diversity_loss(z).backward()
    assert all(z.grad[e].abs().sum() > 0 for e in range(n))
    with pytest.raises(ValueError, match="at least 2 experts"):
        jensen_shannon_diversity_loss(base[:1])


def test_experts_logits_start_unsaturated():
    """The encoder's unit-variance outputs make u'·a' of order √D; scaled by 1/√D the logits start
    of order 1 (without the scale, most sigmoids are saturated)."""
    task = ring_task()
    x, _ = batch(B=8)
    with torch.no_grad():
        scaled = tiny("mlgcn_experts", task).eval()(x).extras["expert_logits"]
        raw = tiny("mlgcn_experts", task, scaled_logits=False).eval()(x).extras["expert_logits"]
    torch.testing.assert_close(scaled * math.sqrt(96), raw, rtol=1e-4, atol=1e-4)
    assert 0.2 < scaled.std().item() < 3.0 < raw.std().item()


# -- pooling and attention --------------------------------------------------------------------------------
def test_global_pooling_modes():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(global_pool(x, "avg"), F.adaptive_avg_pool2d(x, 1).flatten(1))
    torch.testing.assert_close(global_pool(x, "max"), F.adaptive_max_pool2d(x, 1).flatten(1))
    lse = np.array([[math.log(np.mean(np.exp(0.5 * v.ravel()))) / 0.5 for v in img] for img in x.numpy()])
    np.testing.assert_allclose(global_pool(x, "lse", 0.5).numpy(), lse, rtol=1e-12)
    # LSE moves from the mean (γ → 0) to the max (γ → ∞), and is stable for large activations
    torch.testing.assert_close(global_pool(x, "lse", 1e-6), global_pool(x, "avg"), rtol=1e-5, atol=1e-5)
    assert torch.all(global_pool(x, "lse", 1e3) <= global_pool(x, "max") + 1e-12)
    assert torch.all(global_pool(x, "lse", 1e3) > global_pool(x, "max") - 0.02)
    big = torch.full((1, 1, 2, 2), 500.0)
    assert global_pool(big, "lse", 0.5).item() == pytest.approx(500.0)
    assert global_pool(x.to(torch.bfloat16), "lse").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="mode"):
        global_pool(x, "median")
    with pytest.raises(ValueError, match="lse_gamma"):
        global_pool(x, "lse", 0.0)


def _load_torch_encoder(ours: TransformerEncoderLayer, ref: torch.nn.TransformerEncoderLayer) -> None:
    d = ours.attn.dim
    w, b = ref.self_attn.in_proj_weight, ref.self_attn.in_proj_bias
    with torch.no_grad():
        for i, proj in enumerate((ours.attn.q_proj, ours.attn.k_proj, ours.attn.v_proj)):
            proj.weight.copy_(w[i * d:(i + 1) * d])
            proj.bias.copy_(b[i * d:(i + 1) * d])
        ours.attn.out_proj.load_state_dict(ref.self_attn.out_proj.state_dict())
        ours.ff[0].load_state_dict(ref.linear1.state_dict())
        ours.ff[3].load_state_dict(ref.linear2.state_dict())
        ours.norm1.load_state_dict(ref.norm1.state_dict())
        ours.norm2.load_state_dict(ref.norm2.state_dict())


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_torch(norm_first):
    torch.manual_seed(0)
    ref = torch.nn.TransformerEncoderLayer(16, 4, dim_feedforward=24, dropout=0.1, batch_first=True,
                                           norm_first=norm_first).eval()
    ours = TransformerEncoderLayer(16, 4, 24, 0.1, norm_first=norm_first).eval()
    _load_torch_encoder(ours, ref)
    x = torch.randn(3, 7, 16)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 5:] = True
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x, key_padding_mask=pad)[:, :5], ref(x, src_key_padding_mask=pad)[:, :5],
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x[:, :1]), ref(x[:, :1]), rtol=1e-5, atol=1e-5)  # one token


def test_cross_attention_matches_torch_and_gradients_flow():
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    ours = MultiHeadAttention(8, 2)
    with torch.no_grad():
        w, b = ref.in_proj_weight, ref.in_proj_bias
        for i, proj in enumerate((ours.q_proj, ours.k_proj, ours.v_proj)):
            proj.weight.copy_(w[i * 8:(i + 1) * 8])
            proj.bias.copy_(b[i * 8:(i + 1) * 8])
        ours.out_proj.load_state_dict(ref.out_proj.state_dict())
    q, kv = torch.randn(2, 3, 8, requires_grad=True), torch.randn(2, 5, 8)
    out = ours(q, kv)
    torch.testing.assert_close(out, ref(q, kv, kv, need_weights=False)[0], rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    with pytest.raises(ValueError, match="multiple of heads"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="key_padding_mask"):
        ours(q, kv, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))


# -- class-balanced samplers ------------------------------------------------------------------------------
def sampler_labels():
    y = np.zeros((40, 4), dtype=np.float32)
    y[:30, 0] = 1          # head class
    y[30:36, 1] = 1
    y[36:39, 2] = 1
    y[39, 3] = 1           # one-sample tail class
    y[5, 1] = np.nan       # unknown labels are not positives
    return y


def test_cycle_sampler_visits_classes_in_turn():
    y = sampler_labels()
    s = ClassAwareSampler(y, seed=0, class_order="cycle")
    idx = list(s)
    assert len(idx) == 40
    owners = [next(c for c in range(4) if y[i, c] == 1) for i in idx]
    assert owners == [k % 4 for k in range(40)]
    # the cycle continues into the next epoch (40 draws = 10 full cycles, so it restarts at class 0)
    s.set_epoch(1)
    assert [next(c for c in range(4) if y[i, c] == 1) for i in s][:4] == [0, 1, 2, 3]
    # DDP: the ranks share one cycle, dealt round-robin
    r0 = list(ClassAwareSampler(y, seed=0, rank=0, world_size=2, class_order="cycle"))
    r1 = list(ClassAwareSampler(y, seed=0, rank=1, world_size=2, class_order="cycle"))
    assert [next(c for c in range(4) if y[i, c] == 1) for i in r0] == [0, 2] * 10
    assert [next(c for c in range(4) if y[i, c] == 1) for i in r1] == [1, 3] * 10
    # deterministic given (seed, epoch, rank); another seed draws other images of the same classes
    assert list(ClassAwareSampler(y, seed=0, class_order="cycle")) == idx
    assert list(ClassAwareSampler(y, seed=1, class_order="cycle")) != idx


def test_class_aware_sampler_draws_classes_at_random():
    y = sampler_labels()
    idx = list(ClassAwareSampler(y, seed=0, num_samples=4000))
    owners = np.array([next(c for c in range(4) if y[i, c] == 1) for i in idx])
    counts = np.bincount(owners, minlength=4) / len(owners)
    np.testing.assert_allclose(counts, 0.25, atol=0.03)
    assert [o for o in owners[:12]] != [k % 4 for k in range(12)]  # not the cycle
    with pytest.raises(ValueError, match="class_order"):
        ClassAwareSampler(y, class_order="least_sampled")


# -- through the engine -----------------------------------------------------------------------------------
TINY_RUN = ["--backbone", "test_resnet", "--image-size", "32", "--dataset-kwargs", "num_samples=32",
            "--batch-size", "16", "--epochs", "1", "--no-progress", "--threads", "1", "--warmup-epochs", "0.5"]
EXTRA = {"mlgcn": ["--model-kwargs", "gcn_hidden=32"],
         "mlgcn_experts": ["--model-kwargs", "gcn_hidden=32", "--sampler", "cycle",
                           "--model-kwargs", "attention_ff_dim=64"]}


@pytest.mark.parametrize("name", BASELINES)
def test_train_then_evaluate_round_trip(name, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--model", name, "--out", str(out)] + TINY_RUN + EXTRA.get(name, [])) == 0
    assert {"best.pt", "last.pt", "metrics.jsonl", "metrics_test.json"} <= set(os.listdir(out))
    with open(out / "metrics.jsonl") as fh:
        row = json.loads(fh.readline())
    assert row["step"] == 2 and math.isfinite(row["train_total"])
    best = load_checkpoint(str(out / "best.pt"))
    assert best.model_spec["name"] == name and best.model_spec["config"]["backbone"] == "test_resnet"
    out_json = tmp_path / "val.json"
    assert evaluate.main([str(out / "best.pt"), "--split", "val", "--out", str(out_json), "--no-progress"]) == 0
    metrics = json.loads(out_json.read_text())
    assert metrics["model"] == name and metrics["num_samples"] == 32
    assert metrics["mAP"] == pytest.approx(best.metrics["val"]["mAP"], abs=1e-6)


def test_list_models_and_model_option_errors(tmp_path, capsys):
    assert train.main(["--list-models"]) == 0
    listed = capsys.readouterr().out
    for name in BASELINES:
        assert name in listed
    # a FACT-only option on a baseline is refused with the option's name and the model's options
    bad = ["--model", "mlgcn", "--model-kwargs", "loss=bce", "--out", str(tmp_path / "bad")]
    assert train.main(bad + TINY_RUN) == 2
    err = capsys.readouterr().err
    assert "has no option(s) ['loss']" in err and "gcn_hidden" in err
    assert not (tmp_path / "bad").exists()


def test_python_m_train_trains_a_baseline(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-m", "fact_fast.train", "--model", "resnet50_asl", "--out",
                          str(tmp_path / "asl")] + TINY_RUN + ["--sampler", "class_aware"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert os.path.isfile(tmp_path / "asl" / "best.pt") and "resnet50_asl" in run.stdout
