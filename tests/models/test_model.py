"""FACT model: shapes, ablation switches, VQ statistics, τ initialisation, paper budget."""
import math

import pytest
import torch
import torch.nn.functional as F

from fact_fast import ops
from fact_fast.models import (FACTConfig, ModelOutput, create_model, get_model_config, list_models,
                              model_from_spec, model_spec)
from fact_fast.nn import FuzzyMembership, LabelGCN, SemanticInterface, VectorQuantizer
from tests.helpers.model_utils import ring_task

C = 5


def tiny(**over):
    torch.manual_seed(0)
    return create_model("fact_test", ring_task(C), **over)


def batch(B=3, size=64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, 3, size, size, generator=g)
    y = (torch.rand(B, C, generator=g) < 0.4).float()
    return x, y


def test_registry():
    assert {"fact_resnet50", "fact_tiny", "fact_test"} <= set(list_models())
    assert get_model_config("fact_resnet50") == FACTConfig()
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope", ring_task(C))
    with pytest.raises(ValueError, match="not_an_option"):
        tiny(not_an_option=1)
    with pytest.raises(ValueError, match="membership"):
        tiny(membership="rbf")


def test_forward_backward_shapes():
    model = tiny()
    x, y = batch()
    out = model(x)
    assert isinstance(out, ModelOutput)
    d = model.config.dim
    M = (64 // 32) ** 2
    ex = out.extras
    assert out.scores.shape == (3, C) and ex["embeddings"].shape == (3, C, d) and ex["anchors"].shape == (C, d)
    assert ex["codes"].shape == (3, M) and ex["codes"].dtype == torch.int64 and ex["feature_hw"] == (2, 2)
    assert ex["commit_loss"].dim() == 0 and ex["tau"].dim() == 0
    assert ((out.scores >= 0) & (out.scores <= 1)).all()
    losses = model.loss(out, y)
    losses["total"].backward()
    named = dict(model.named_parameters())
    for name in ("backbone.body.conv1.0.weight", "proj.weight", "vq.codebook", "interface.queries",
                 "gcn.layer1.weight", "gcn.layer2.weight", "membership.log_tau"):
        assert named[name].grad is not None and named[name].grad.abs().sum() > 0, name


@pytest.mark.parametrize("over", [
    dict(use_vq=False), dict(use_gcn=False), dict(use_vq=False, use_gcn=False), dict(loss="bce"),
    dict(membership="linear"), dict(membership="cosine"), dict(membership="laplacian"),
    dict(membership="polynomial"), dict(interface_bias="neg_log_m"),
])
def test_ablation_switches_run(over):
    model = tiny(**over)
    x, y = batch()
    out = model(x)
    losses = model.loss(out, y)
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    assert model.proj.weight.grad is not None and torch.isfinite(model.proj.weight.grad).all()
    if over.get("use_vq") is False:
        assert model.vq is None and out.extras["codes"] is None and float(out.extras["commit_loss"]) == 0.0
    if over.get("use_gcn") is False:
        assert model.gcn is None and model.free_anchors.grad is not None
        assert not any(k.startswith("gcn.") for k in model.state_dict())
    if "loss" in over:
        assert "bce" in losses


def test_vq_codebook_stats_and_data_init():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4)
    z = torch.randn(2, 10, 4) * 5 + 3
    vq.train()
    v, idx, commit = vq(z)
    assert bool(vq.initialized)
    # codes were drawn from the batch: every code lies near some feature vector, far from the default init
    dmin = torch.cdist(vq.codebook.detach(), z.reshape(-1, 4)).min(1).values
    assert (dmin < 3.0).all()
    counts = torch.bincount(idx.flatten(), minlength=16).double()
    stats = vq.codebook_stats()
    p = counts / counts.sum()
    ppl = math.exp(-(p[p > 0] * p[p > 0].log()).sum())
    assert stats["num_tokens"] == 20
    assert stats["perplexity"] == pytest.approx(ppl)
    assert stats["usage"] == pytest.approx(float((counts > 0).sum()) / 16)
    vq(z)  # accumulates
    assert vq.codebook_stats(reset=True)["num_tokens"] == 40
    assert vq.codebook_stats()["num_tokens"] == 0
    vq.eval()
    vq(z)  # evaluation does not count
    assert vq.codebook_stats()["num_tokens"] == 0
    # straight-through: forward value is the code, gradient reaches z unchanged
    zz = z.clone().requires_grad_()
    vq.train()
    v, idx, _ = vq(zz)
    assert torch.allclose(v, vq.codebook.detach()[idx])
    v.sum().backward()
    assert torch.allclose(zz.grad, torch.ones_like(zz))


def test_vq_dead_code_restart():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 3, data_init=False, restart_every=1)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0, 0]] + [[100.0, 100, 100]] * 7))
    z = torch.randn(4, 3) * 0.1
    vq.train()
    vq(z)                   # all tokens pick code 0; codes 1..7 are dead in this window
    assert vq.num_restarted == 0
    vq(z)                   # restart happens before quantising
    assert vq.num_restarted == 7
    assert (vq.codebook.detach()[1:].abs() < 5).all()


def test_tau_initialised_from_first_batch_median():
    model = tiny()
    x, _ = batch(B=4)
    model.train()
    assert not bool(model.membership.tau_initialized)
    out = model(x)
    d2 = (out.extras["embeddings"] - out.extras["anchors"]).pow(2).sum(-1).detach()
    assert float(out.extras["tau"].detach()) == pytest.approx(float(d2.median()) / math.log(2), rel=1e-5)
    # not saturated: μ straddles the threshold 0.5 (half above, half below)
    mu = out.scores.detach()
    frac = float((mu > 0.5).float().mean())
    assert 0.3 <= frac <= 0.7
    assert float((mu - 0.5).abs().min()) < 1e-4
    tau0 = float(out.extras["tau"].detach())
    model(x * 3)
    assert float(model.tau.detach()) == pytest.approx(tau0)  # only once
    # a model rebuilt from the state dict keeps τ and does not re-initialise
    clone = tiny()
    clone.load_state_dict(model.state_dict())
    clone.train()
    clone(x * 3)
    assert float(clone.tau.detach()) == pytest.approx(tau0)
    # fixed init and τ-free kernels
    assert float(FuzzyMembership(init_tau=3.0).tau.detach()) == pytest.approx(3.0)
    assert not FuzzyMembership("cosine").log_tau.requires_grad


def test_eval_mode_before_training_is_deterministic():
    model = tiny().eval()
    x, _ = batch()
    with torch.no_grad():
        a, b = model(x).scores, model(x).scores
    assert torch.equal(a, b)


def test_label_gcn_matches_dense_formula():
    torch.manual_seed(0)
    n = 6
    rowptr = torch.tensor([0, 2, 3, 3, 5, 6, 6])
    col = torch.tensor([1, 3, 0, 0, 4, 3])
    s0 = torch.randn(n, 7)
    gcn = LabelGCN(s0, rowptr, col, hidden_dim=9, out_dim=4, negative_slope=0.2)
    A = torch.zeros(n, n)
    for i in range(n):
        for j in col[rowptr[i]:rowptr[i + 1]]:
            A[i, j] += 1
    At = A + torch.eye(n)
    dinv = At.sum(1).rsqrt()
    Ahat = dinv[:, None] * At * dinv[None, :]
    W0, W1 = gcn.layer1.weight.detach(), gcn.layer2.weight.detach()
    expected = Ahat @ F.leaky_relu(Ahat @ s0 @ W0, 0.2) @ W1
    assert torch.allclose(gcn(), expected, atol=1e-5)
    assert sum(p.numel() for p in gcn.parameters()) == 7 * 9 + 9 * 4  # no bias
    assert {"label_embeddings", "rowptr", "col"} <= {k for k, _ in gcn.named_buffers()}


def test_interface_bias_modes():
    torch.manual_seed(0)
    v = torch.randn(2, 9, 8)
    zero = SemanticInterface(3, 8)
    neg = SemanticInterface(3, 8, bias="neg_log_m")
    neg.load_state_dict(zero.state_dict())
    q = zero.queries.detach()
    a = torch.sigmoid(q @ v.transpose(1, 2) / math.sqrt(8))
    assert torch.allclose(zero(v), q + a @ v, atol=1e-5)
    a = torch.sigmoid(q @ v.transpose(1, 2) / math.sqrt(8) - math.log(9))
    assert torch.allclose(neg(v), q + a @ v, atol=1e-5)
    with pytest.raises(ValueError):
        SemanticInterface(3, 8, bias="one")


def test_paper_parameter_and_mac_budget():
    """docs/design.md §2: fact_resnet50, C=40, 384-d label embeddings -> 25.87 M params, 4.21 GMACs at 224², ±2 %."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = create_model("fact_resnet50", ring_task(40, 384)).eval()
    params = sum(p.numel() for p in model.parameters())
    assert abs(params / 25.87e6 - 1) < 0.02, params
    parts = {k: sum(p.numel() for p in m.parameters()) for k, m in model.named_children()}
    assert parts["proj"] == 2048 * 512 + 512
    assert parts["vq"] == 1024 * 512
    assert parts["gcn"] == 384 * 1024 + 1024 * 512
    assert parts["interface"] == 40 * 512
    with ops.use_backend("reference"), FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    macs = fc.get_total_flops() / 2
    assert abs(macs / 4.21e9 - 1) < 0.02, macs


def test_masked_loss_ignores_unknown_labels():
    """Unknown labels (mask False) contribute nothing: flipping them leaves loss and gradient unchanged."""
    x, y = batch(B=4)
    mask = torch.rand(4, C, generator=torch.Generator().manual_seed(3)) < 0.7
    for over in (dict(), dict(loss="bce"), dict(membership="laplacian")):
        model = tiny(**over).train()
        model.initialize(x)
        out = model(x)
        a = model.loss(out, y, mask)["total"]
        b = model.loss(out, torch.where(mask, y, 1 - y), mask)["total"]
        assert torch.allclose(a, b, atol=1e-6), over
        full = model.loss(out, y)["total"]
        assert not torch.allclose(a, full), over  # the mask is not ignored


def test_model_spec_round_trip():
    model = tiny(use_gcn=True, interface_bias="neg_log_m")
    x, _ = batch()
    model.initialize(x)
    rebuilt = model_from_spec(model_spec(model), model.state_dict()).eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x).scores, rebuilt(x).scores)
    assert rebuilt.config == model.config and rebuilt.task.class_names == model.task.class_names


def test_fact_param_groups_split_codebook_tau_and_backbone():
    model = tiny(codebook_lr_scale=10.0, tau_lr_scale=3.0)
    groups = {g["name"]: g for g in model.param_groups(1e-3, 0.05, backbone_lr_scale=0.1)}
    assert groups["codebook"]["lr"] == pytest.approx(1e-2) and groups["codebook"]["weight_decay"] == 0
    assert groups["tau"]["lr"] == pytest.approx(3e-3)
    assert groups["backbone"]["lr"] == pytest.approx(1e-4) and groups["backbone"]["weight_decay"] == 0.05
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)
    named = dict(model.named_parameters())
    assert id(named["interface.queries"]) in {id(p) for p in groups["head_no_decay"]["params"]}


def test_embedding_norm_l2_bounds_the_distances():
    """embedding_norm="l2": E and S on the unit sphere, so ‖e − s‖² ≤ 4 and μ ≥ exp(−4/τ) however the
    features scale (the collapse mode of the unnormalised kernel: μ → 0 for every class)."""
    model = tiny(embedding_norm="l2")
    x, y = batch()
    model.initialize(x * 50)  # huge features
    out = model(x * 50)
    e, s = out.extras["embeddings"], out.extras["anchors"]
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(e.shape[:2]))
    torch.testing.assert_close(s.norm(dim=-1), torch.ones(s.shape[0]))
    tau = float(out.extras["tau"].detach())
    assert out.scores.min().item() >= math.exp(-4.0 / tau) - 1e-6
    model.loss(out, y)["total"].backward()
    assert model.proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="embedding_norm"):
        tiny(embedding_norm="layer")
