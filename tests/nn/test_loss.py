"""FACT objective (docs/design.md §2.7): hand-computed formula, edge cases, BCE ablation."""
import math

import pytest
import torch

from fact_fast import ops
from fact_fast.models import ModelOutput
from fact_fast.nn import FACTLoss, fuzzy_loss_from_membership


def Out(mu, embeddings, anchors, tau, commit_loss, codes=None, kernel="gaussian"):
    """FACT's ModelOutput: scores = μ, the loss inputs in extras."""
    return ModelOutput(mu, None, {"embeddings": embeddings, "anchors": anchors, "tau": tau,
                                  "commit_loss": commit_loss, "codes": codes, "kernel": kernel})


def hand_loss(e, s, y, tau, alpha=1.0, lam=10.0, delta=0.5, eps=1.0, logit="scaled"):
    """The point + set loss written out with Python floats, one sample at a time."""
    B, C, d = len(e), len(s), len(s[0])
    total = 0.0
    for b in range(B):
        mu = [math.exp(-sum((e[b][c][k] - s[c][k]) ** 2 for k in range(d)) / tau) for c in range(C)]
        if logit == "scaled":
            f = [lam * (m - delta) for m in mu]
        else:  # λ·log(μ/δ), from the squared distance itself
            f = [lam * (-sum((e[b][c][k] - s[c][k]) ** 2 for k in range(d)) / tau - math.log(delta))
                 for c in range(C)]
        neg = sum(math.exp(f[c]) for c in range(C) if y[b][c] == 0)
        pos = sum(math.exp(-f[c]) for c in range(C) if y[b][c] == 1)
        l_point = math.log(1 + neg) + math.log(1 + pos)
        inter = sum(y[b][c] * mu[c] for c in range(C))
        union = sum(y[b][c] + (1 - y[b][c]) * mu[c] for c in range(C))
        jac = (inter + eps) / (union + eps)
        total += l_point + alpha * (1 - jac)
    return total / B


def make(B=3, C=4, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(B, C, d, generator=g, dtype=torch.float64) * 0.6
    s = torch.randn(C, d, generator=g, dtype=torch.float64) * 0.6
    tau = torch.tensor(2.5, dtype=torch.float64)
    return e, s, tau


def output(e, s, tau, commit=0.0, kernel="gaussian"):
    mu = ops.fuzzy_membership(e, s, tau, kernel=kernel)
    return Out(mu, e, s, tau, torch.tensor(commit, dtype=e.dtype), None, kernel)


@pytest.mark.parametrize("y", [
    [[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 1]],   # mixed
    [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],   # no positive label at all
    [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]],   # all positive
])
def test_fuzzy_loss_matches_hand_formula(y):
    e, s, tau = make()
    yt = torch.tensor(y, dtype=torch.float64)
    expected = hand_loss(e.tolist(), s.tolist(), y, float(tau), alpha=0.7)
    out = output(e, s, tau, commit=0.3)
    loss = FACTLoss("fuzzy", alpha=0.7, gamma=2.0)(out, yt)
    assert set(loss) == {"total", "fuzzy", "commit"}
    assert torch.isfinite(loss["total"])
    assert float(loss["fuzzy"]) == pytest.approx(expected, rel=1e-5)
    assert float(loss["total"]) == pytest.approx(expected + 2.0 * 0.3, rel=1e-5)
    # the non-fused path (memberships given) computes the same number
    mu = ops.fuzzy_membership(e, s, tau)
    assert float(fuzzy_loss_from_membership(mu, yt, alpha=0.7)) == pytest.approx(expected, rel=1e-6)


def test_no_positive_label_is_well_defined():
    # All memberships 0 and no positive label: L_point = log(1 + C e^{-5}), J = (0+1)/(0+1) = 1.
    mu = torch.zeros(2, 3)
    y = torch.zeros(2, 3)
    loss = fuzzy_loss_from_membership(mu, y)
    assert float(loss) == pytest.approx(math.log(1 + 3 * math.exp(-5.0)), rel=1e-6)
    # perfect memberships on all-positive images: L_set = 0, L_point = log(1 + C e^{-5})
    loss = fuzzy_loss_from_membership(torch.ones(2, 3), torch.ones(2, 3))
    assert float(loss) == pytest.approx(math.log(1 + 3 * math.exp(-5.0)), rel=1e-6)


def test_loss_gradients_reach_e_s_tau_and_decrease():
    e, s, tau = make(seed=1)
    e, s = e.float().requires_grad_(), s.float().requires_grad_()
    log_tau = torch.tensor(math.log(2.5), requires_grad=True)
    y = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 1]], dtype=torch.float32)
    fn = FACTLoss()
    opt = torch.optim.SGD([e, s, log_tau], lr=0.05)
    first = None
    for _ in range(30):
        out = output(e, s, log_tau.exp())
        loss = fn(out, y)["total"]
        opt.zero_grad()
        loss.backward()
        assert e.grad.abs().sum() > 0 and s.grad.abs().sum() > 0 and log_tau.grad is not None
        opt.step()
        first = float(loss.detach()) if first is None else first
    assert float(loss.detach()) < 0.7 * first


def test_bce_ablation_matches_formula():
    e, s, tau = make(seed=2)
    y = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    out = output(e, s, tau, commit=0.5)
    loss = FACTLoss("bce", gamma=0.5, logit_scale=4.0, threshold=0.3)(out, y)
    assert set(loss) == {"total", "bce", "commit"}
    f = 4.0 * (out.scores - 0.3)
    p = torch.sigmoid(f)
    expected = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    assert float(loss["bce"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(loss["total"]) == pytest.approx(float(expected) + 0.25, rel=1e-5)


@pytest.mark.parametrize("kernel", ["linear", "cosine", "laplacian", "polynomial"])
def test_other_kernels_use_memberships(kernel):
    e, s, tau = make(seed=3)
    y = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 1]], dtype=torch.float64)
    out = output(e, s, tau, kernel=kernel)
    got = FACTLoss()(out, y)["fuzzy"]
    assert float(got) == pytest.approx(float(fuzzy_loss_from_membership(out.scores, y)), rel=1e-6)


def test_empty_batch_and_bad_name():
    out = Out(torch.zeros(0, 4), torch.zeros(0, 4, 5), torch.zeros(4, 5), torch.tensor(1.0), torch.tensor(0.0))
    for kind in ("fuzzy", "bce"):
        loss = FACTLoss(kind)(out, torch.zeros(0, 4))
        assert float(loss["total"]) == 0.0
    with pytest.raises(ValueError, match="loss"):
        FACTLoss("focal")


@pytest.mark.parametrize("lam,delta", [(1.0, 0.5), (10.0, 0.3)])
def test_log_logit_matches_hand_formula(lam, delta):
    e, s, tau = make(seed=3)
    y = [[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1]]
    yt = torch.tensor(y, dtype=torch.float64)
    expected = hand_loss(e.tolist(), s.tolist(), y, float(tau), alpha=0.5, lam=lam, delta=delta, logit="log")
    out = output(e, s, tau)
    loss = FACTLoss("fuzzy", alpha=0.5, logit_scale=lam, threshold=delta, logit="log")(out, yt)
    assert float(loss["fuzzy"]) == pytest.approx(expected, rel=1e-10)
    # the op itself, and the same loss from μ (the path of the other kernels)
    got, mu = ops.fuzzy_loss(e, s, yt, tau, alpha=0.5, logit_scale=lam, threshold=delta, logit="log")
    assert float(got) == pytest.approx(expected, rel=1e-10)
    # (in float32: that path computes on μ.float())
    assert float(fuzzy_loss_from_membership(mu, yt, alpha=0.5, logit_scale=lam, threshold=delta,
                                            logit="log")) == pytest.approx(expected, rel=1e-6)


def test_log_logit_keeps_its_gradient_where_mu_underflows():
    """log μ = −‖e − s‖²/τ is computed without the exp: a negative far from its anchor still
    has a finite logit and gradient though μ is exactly 0 in float32."""
    e = torch.zeros(1, 2, 3)
    e[0, 1] = 30.0
    e.requires_grad_(True)
    s = torch.zeros(2, 3)
    y = torch.tensor([[1.0, 0.0]])
    loss, mu = ops.fuzzy_loss(e, s, y, 1.0, logit="log")
    assert mu[0, 1].item() == 0.0
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(e.grad).all()
    # the negative's logit λ(−2700 + ln 2) is far below 0: its point-loss gradient is ~0, not NaN
    assert float(e.grad[0, 1].abs().max()) < 1e-6


def test_log_logit_bias_shifts_the_logit():
    e, s, tau = make(seed=4)
    y = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 1]], dtype=torch.float64)
    bias = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    out = output(e, s, tau)
    plain = FACTLoss("fuzzy", logit="log")(out, y)["fuzzy"]
    extras = dict(out.extras, logit_bias=bias)
    shifted = FACTLoss("fuzzy", logit="log")(ModelOutput(out.scores, None, extras), y)["fuzzy"]
    # by hand: the point loss with f + b, the set loss unchanged
    f = 10.0 * (-(e - s).pow(2).sum(-1) / tau - math.log(0.5)) + bias
    neg = torch.logsumexp(torch.cat([torch.zeros(3, 1, dtype=f.dtype), f.masked_fill(y > 0, -math.inf)], 1), 1)
    pos = torch.logsumexp(torch.cat([torch.zeros(3, 1, dtype=f.dtype), (-f).masked_fill(y < 1, -math.inf)], 1), 1)
    mu = out.scores
    jac = ((y * mu).sum(1) + 1) / ((y + (1 - y) * mu).sum(1) + 1)
    assert float(shifted) == pytest.approx(float((neg + pos + 1 - jac).mean()), rel=1e-10)
    assert float(shifted) != pytest.approx(float(plain), rel=1e-3)


def test_logit_option_is_checked():
    e, s, tau = make()
    y = torch.zeros(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="logit"):
        ops.fuzzy_loss(e, s, y, tau, logit="linear")
    with pytest.raises(ValueError, match="threshold"):
        ops.fuzzy_loss(e, s, y, tau, logit="log", threshold=0.0)
    with pytest.raises(ValueError, match="logit"):
        FACTLoss("fuzzy", logit="nope")
