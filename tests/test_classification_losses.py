"""The baselines' losses against independent formulations: the papers' per-element equations written
out here in float64, hand-computed values, and other libraries' implementations (torch's
MultiLabelSoftMarginLoss, torchvision's sigmoid_focal_loss); masking, reductions and gradients."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fact_fast.nn import (CLASSIFICATION_LOSSES, asymmetric_loss, bce_loss, focal_loss, multilabel_soft_margin_loss,
                          ride_diversity_loss)

# hand-made logits: saturated, around the ASL clip point (σ(z) = 0.05 at z ≈ -2.944), zero, odd values
LOGITS = torch.tensor([[-30.0, -4.0, -2.9, -1.0, 0.0],
                       [0.3, 1.7, 3.0, 12.0, -0.5],
                       [2.2, -2.2, 0.0, 25.0, -9.0]], dtype=torch.float64)
TARGETS = torch.tensor([[0, 0, 0, 1, 1],
                        [1, 0, 1, 0, 0],
                        [0, 1, 1, 1, 0]], dtype=torch.float64)
MASK = torch.tensor([[True, True, False, True, True],
                     [True, False, True, True, True],
                     [False, False, False, False, False]])


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def asl_direct(z, y, gamma_neg=4.0, gamma_pos=0.0, clip=0.05):
    """ASL paper's loss element by element: p_m = max(p - m, 0), L+ = (1-p)^γ+ log p,
    L- = p_m^γ- log(1 - p_m), L = -y L+ - (1-y) L-."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64)
    out = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        p = sigmoid(z[idx])
        if y[idx] == 1:
            out[idx] = -((1 - p) ** gamma_pos) * math.log(p)
        else:
            pm = max(p - clip, 0.0)
            out[idx] = -(pm ** gamma_neg) * math.log(1 - pm)
    return out


def focal_direct(z, y, gamma=2.0, alpha=0.25):
    """Lin et al. Eq. 5 element by element: -α_t (1 - p_t)^γ log p_t."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64)
    out = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        p = sigmoid(z[idx])
        pt = p if y[idx] == 1 else 1 - p
        at = 1.0 if alpha is None else (alpha if y[idx] == 1 else 1 - alpha)
        out[idx] = -at * (1 - pt) ** gamma * math.log(pt)
    return out


def masked_reduce(per, mask, reduction):
    per = np.asarray(per)
    m = np.ones_like(per, dtype=bool) if mask is None else np.asarray(mask)
    if reduction == "sum":
        return per[m].sum()
    return per[m].mean() if m.any() else 0.0


# -- ASL ----------------------------------------------------------------------------------------------
def test_asl_hand_computed_values():
    z = torch.tensor([[0.0, 0.0, -4.0]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    per = asymmetric_loss(z, y, reduction="none")
    # positive at p = 0.5 with γ+ = 0: −log 0.5; negative at p = 0.5: p_m = 0.45, 0.45^4 · (−log 0.55)
    assert per[0, 0].item() == pytest.approx(math.log(2.0), rel=1e-6)
    assert per[0, 1].item() == pytest.approx(0.04100625 * 0.5978370007556204, rel=1e-6)
    # σ(−4) = 0.018 < m: the shifted probability is 0, the negative is discarded (hard threshold)
    assert per[0, 2].item() == 0.0


@pytest.mark.parametrize("gamma_neg,gamma_pos,clip", [(4.0, 0.0, 0.05), (4.0, 1.0, 0.05), (2.0, 0.0, 0.0),
                                                      (0.0, 0.0, 0.0), (3.0, 2.0, 0.2)])
@pytest.mark.parametrize("masked", [False, True])
def test_asl_matches_paper_formula(gamma_neg, gamma_pos, clip, masked):
    mask = MASK if masked else None
    expect = asl_direct(LOGITS.numpy(), TARGETS.numpy(), gamma_neg, gamma_pos, clip)
    kw = dict(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)
    none = asymmetric_loss(LOGITS, TARGETS, mask, reduction="none", **kw).numpy()
    keep = np.ones_like(expect, dtype=bool) if mask is None else MASK.numpy()
    np.testing.assert_allclose(none[keep], expect[keep], rtol=1e-5, atol=1e-7)
    assert np.all(none[~keep] == 0)
    for red in ("mean", "sum"):
        got = asymmetric_loss(LOGITS, TARGETS, mask, reduction=red, **kw).item()
        assert got == pytest.approx(masked_reduce(expect, mask, red), rel=1e-5, abs=1e-8)


def test_asl_with_zero_gammas_and_clip_is_bce():
    got = asymmetric_loss(LOGITS, TARGETS, gamma_neg=0.0, gamma_pos=0.0, clip=0.0)
    ref = F.binary_cross_entropy(torch.sigmoid(LOGITS), TARGETS)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)


def asl_grad_direct(z, y, gamma_neg, gamma_pos, clip, detach):
    """dL/dz from the ASL paper's gradient analysis: for a negative with p > m,
    dL−/dz = p_m^γ [1/(1−p_m) − γ log(1−p_m)/p_m] p(1−p) (without the γ term when the focusing weight
    is a constant); 0 for p ≤ m. For a positive: [γ+ (1−p)^(γ+−1) log p − (1−p)^γ+ / p] p(1−p)."""
    out = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        p = sigmoid(z[idx])
        dp = p * (1 - p)
        if y[idx] == 1:
            g = -((1 - p) ** gamma_pos) / p
            if not detach and gamma_pos > 0:
                g += gamma_pos * (1 - p) ** (gamma_pos - 1) * math.log(p)
        else:
            pm = p - clip
            if pm <= 0:
                out[idx] = 0.0
                continue
            g = pm ** gamma_neg / (1 - pm)
            if not detach:
                g -= gamma_neg * pm ** (gamma_neg - 1) * math.log(1 - pm)
        out[idx] = g * dp
    return out


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("gamma_pos", [0.0, 1.0])
def test_asl_gradient_matches_paper_derivative(detach, gamma_pos):
    z = LOGITS.clone().clamp(-20, 20).requires_grad_(True)  # keep p(1-p) representable for the formula
    asymmetric_loss(z, TARGETS, reduction="sum", gamma_neg=4.0, gamma_pos=gamma_pos, clip=0.05,
                    detach_focusing=detach).backward()
    expect = asl_grad_direct(z.detach().numpy(), TARGETS.numpy(), 4.0, gamma_pos, 0.05, detach)
    np.testing.assert_allclose(z.grad.numpy(), expect, rtol=1e-6, atol=1e-12)


def test_asl_gradcheck_and_saturated_logits_are_finite():
    z = (torch.randn(4, 6, dtype=torch.float64) * 3).requires_grad_(True)
    y = (torch.rand(4, 6) < 0.4).double()
    # the true derivative of the loss (with detached focusing weights the gradient is, by design, not it)
    assert torch.autograd.gradcheck(lambda t: asymmetric_loss(t, y, detach_focusing=False), (z,))
    big = torch.tensor([[80.0, -80.0, 80.0, -80.0]], requires_grad=True)
    yy = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    for detach in (True, False):
        big.grad = None
        loss = asymmetric_loss(big, yy, reduction="sum", detach_focusing=detach)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(big.grad).all()
        assert loss.item() == pytest.approx(80.0 + 0.95 ** 4 * -math.log(0.05), rel=1e-4)


# -- focal ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (0.0, 0.25), (1.5, None), (2.0, 0.9)])
@pytest.mark.parametrize("masked", [False, True])
def test_focal_matches_paper_formula_and_torchvision(gamma, alpha, masked):
    from torchvision.ops import sigmoid_focal_loss

    mask = MASK if masked else None
    expect = focal_direct(LOGITS.numpy(), TARGETS.numpy(), gamma, alpha)
    tv = sigmoid_focal_loss(LOGITS, TARGETS, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="none")
    np.testing.assert_allclose(tv.numpy(), expect, rtol=1e-6, atol=1e-12)  # the two references agree
    for red in ("mean", "sum"):
        got = focal_loss(LOGITS, TARGETS, mask, reduction=red, gamma=gamma, alpha=alpha).item()
        assert got == pytest.approx(masked_reduce(expect, mask, red), rel=1e-5, abs=1e-10)


def test_focal_gradient_matches_torchvision():
    from torchvision.ops import sigmoid_focal_loss

    z1 = LOGITS.clone().requires_grad_(True)
    z2 = LOGITS.clone().requires_grad_(True)
    w = torch.rand(LOGITS.shape, dtype=torch.float64)  # a non-uniform upstream gradient
    (focal_loss(z1, TARGETS, reduction="none") * w).sum().backward()
    (sigmoid_focal_loss(z2, TARGETS, alpha=0.25, gamma=2.0, reduction="none") * w).sum().backward()
    np.testing.assert_allclose(z1.grad.numpy(), z2.grad.numpy(), rtol=1e-6, atol=1e-12)


def test_focal_gamma_zero_alpha_none_is_bce():
    got = focal_loss(LOGITS, TARGETS, gamma=0.0, alpha=None)
    assert got.item() == pytest.approx(F.binary_cross_entropy(torch.sigmoid(LOGITS), TARGETS).item(), rel=1e-6)


# -- BCE and multi-label soft margin ----------------------------------------------------------------------
def test_bce_matches_probability_form_with_mask():
    per = F.binary_cross_entropy(torch.sigmoid(LOGITS), TARGETS, reduction="none").numpy()
    for red in ("mean", "sum"):
        assert bce_loss(LOGITS, TARGETS, MASK, red).item() == pytest.approx(masked_reduce(per, MASK, red), rel=1e-6)


def test_soft_margin_matches_torch_without_mask():
    ref = torch.nn.MultiLabelSoftMarginLoss()(LOGITS, TARGETS)
    assert multilabel_soft_margin_loss(LOGITS, TARGETS).item() == pytest.approx(ref.item(), rel=1e-7)


def test_soft_margin_masked_is_mean_of_per_sample_means():
    # sample 0 knows 4 labels, sample 1 knows 4, sample 2 none (dropped): each known sample weighs 1/2
    def term(z, y):
        return -(y * math.log(sigmoid(z)) + (1 - y) * math.log(sigmoid(-z)))

    z, y, m = LOGITS.numpy(), TARGETS.numpy(), MASK.numpy()
    per_sample = [np.mean([term(z[b, c], y[b, c]) for c in range(5) if m[b, c]]) for b in range(2)]
    got = multilabel_soft_margin_loss(LOGITS, TARGETS, MASK)
    assert got.item() == pytest.approx(np.mean(per_sample), rel=1e-7)
    # a sample with one known label keeps the weight of a fully-labelled one
    m1 = torch.zeros_like(MASK)
    m1[0, 3] = True
    m1[1] = True
    expect = 0.5 * (term(z[0, 3], y[0, 3]) + np.mean([term(z[1, c], y[1, c]) for c in range(5)]))
    assert multilabel_soft_margin_loss(LOGITS, TARGETS, m1).item() == pytest.approx(expect, rel=1e-7)


# -- every masked loss: unknown entries contribute nothing --------------------------------------------------
MASKED_LOSSES = [(name, fn) for name, fn in CLASSIFICATION_LOSSES.items()] + [("soft_margin",
                                                                               multilabel_soft_margin_loss)]


@pytest.mark.parametrize("name,fn", MASKED_LOSSES, ids=[n for n, _ in MASKED_LOSSES])
def test_unknown_labels_contribute_nothing(name, fn):
    z = LOGITS.clone().requires_grad_(True)
    base = fn(z, TARGETS, MASK)
    base.backward()
    assert torch.all(z.grad[~MASK] == 0) and torch.any(z.grad[MASK] != 0)
    # changing the logits and targets of unknown entries changes nothing
    z2 = torch.where(MASK, LOGITS, torch.full_like(LOGITS, 1e4))
    y2 = torch.where(MASK, TARGETS, 1 - TARGETS)
    assert fn(z2, y2, MASK).item() == pytest.approx(base.item(), rel=1e-12)
    # nothing known: 0, with a gradient path
    zero = fn(z, TARGETS, torch.zeros_like(MASK))
    assert zero.item() == 0.0 and zero.requires_grad


@pytest.mark.parametrize("name,fn", MASKED_LOSSES, ids=[n for n, _ in MASKED_LOSSES])
def test_losses_low_precision_inputs_and_bad_arguments(name, fn):
    z = LOGITS.to(torch.bfloat16)
    out = fn(z, TARGETS.float(), MASK)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(fn(z.double(), TARGETS, MASK).item(), rel=1e-5)
    with pytest.raises(ValueError, match="targets"):
        fn(LOGITS, TARGETS[:, :3])
    with pytest.raises(ValueError, match="mask"):
        fn(LOGITS, TARGETS, MASK.double())
    with pytest.raises(ValueError, match="logits"):
        fn(LOGITS[0], TARGETS[0])


def test_reduction_and_hyper_parameter_errors():
    with pytest.raises(ValueError, match="reduction"):
        bce_loss(LOGITS, TARGETS, reduction="avg")
    with pytest.raises(ValueError, match="clip"):
        asymmetric_loss(LOGITS, TARGETS, clip=1.0)
    with pytest.raises(ValueError, match="alpha"):
        focal_loss(LOGITS, TARGETS, alpha=1.5)


# -- RIDE diversity ---------------------------------------------------------------------------------------
def ride_direct(z):
    """Seed 002 Eq. 3 element by element: −1/(n−1) Σ_i KL(p̄ ‖ p_i), batch mean."""
    z = np.asarray(z, dtype=np.float64)
    n, B, C = z.shape
    total = 0.0
    for b in range(B):
        p = [np.exp(z[i, b] - z[i, b].max()) / np.exp(z[i, b] - z[i, b].max()).sum() for i in range(n)]
        p_bar = sum(p) / n
        for i in range(n):
            total += sum(p_bar[c] * math.log(p_bar[c] / p[i][c]) for c in range(C))
    return -total / (n - 1) / B


def test_ride_diversity_matches_formula():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(4, 3, 6, generator=g, dtype=torch.float64) * 2
    assert ride_diversity_loss(z).item() == pytest.approx(ride_direct(z.numpy()), rel=1e-9)
    z2 = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    assert ride_diversity_loss(z2).item() == pytest.approx(ride_direct(z2.numpy()), rel=1e-9)
    # hand-computed: two experts, two classes, p1 = (1, 0)-ish vs p2 uniform
    z3 = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]], dtype=torch.float64)  # p = (.5,.5), (.75,.25)
    p_bar = np.array([0.625, 0.375])
    kl1 = np.sum(p_bar * np.log(p_bar / np.array([0.5, 0.5])))
    kl2 = np.sum(p_bar * np.log(p_bar / np.array([0.75, 0.25])))
    assert ride_diversity_loss(z3).item() == pytest.approx(-(kl1 + kl2), rel=1e-9)


def test_ride_diversity_gradient_treats_mean_as_constant():
    g = torch.Generator().manual_seed(4)
    z = (torch.randn(3, 2, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    ride_diversity_loss(z).backward()
    # d/dz_i of −1/(n−1) KL(p̄ ‖ softmax(z_i)) with p̄ fixed = −1/(n−1) (softmax(z_i) − p̄) / B
    p = torch.softmax(z.detach(), dim=-1)
    expect = -(p - p.mean(dim=0, keepdim=True)) / (3 - 1) / 2
    torch.testing.assert_close(z.grad, expect, rtol=1e-9, atol=1e-12)


def test_ride_diversity_identical_experts_and_errors():
    z = torch.randn(1, 4, 7).expand(3, 4, 7).clone().requires_grad_(True)
    loss = ride_diversity_loss(z)
    loss.backward()
    assert abs(loss.item()) < 1e-6 and z.grad.abs().max().item() < 1e-6
    # extreme logits stay finite (p̄ underflows to 0 for some classes)
    wild = torch.tensor([[[200.0, -200.0, 0.0]], [[-200.0, 200.0, 0.0]]])
    assert torch.isfinite(ride_diversity_loss(wild))
    assert ride_diversity_loss(torch.zeros(2, 0, 3)).item() == 0.0
    with pytest.raises(ValueError, match="at least 2 experts"):
        ride_diversity_loss(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="n_experts, B, C"):
        ride_diversity_loss(torch.zeros(2, 3))
