"""The baselines' losses against independent formulations: the papers' per-element equations written
out here in float64, hand-computed values, and other libraries' implementations (torch's
MultiLabelSoftMarginLoss, torchvision's sigmoid_focal_loss, CheXFusion's weighted ASL as its code
computes it); masking, reductions and gradients."""
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fact_fast.nn import (CLASSIFICATION_LOSSES, asymmetric_loss, bce_loss, focal_loss, generalized_cross_entropy_loss,
                          multilabel_soft_margin_loss, prototype_contrastive_loss, ride_diversity_loss,
                          weighted_asymmetric_loss)
from tests.helpers.model_utils import single_thread


_one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


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
PREVALENCE = torch.tensor([0.5, 0.02, 0.3, 0.9, 0.0], dtype=torch.float64)
# what a registered loss needs besides its defaults
REQUIRED = {"weighted_asl": {"prevalence": PREVALENCE}}
MASKED_LOSSES = [(name, functools.partial(fn, **REQUIRED.get(name, {}))) for name, fn in CLASSIFICATION_LOSSES.items()] + \
    [("soft_margin", multilabel_soft_margin_loss)]


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
    """Eq. 3 of "Enhancing Multi-Label Long-Tailed Classification on Chest X-Rays through ML-GCN
    Augmentation" (ICCV Workshops 2023), element by element: −1/(n−1) Σ_i KL(p̄ ‖ p_i), batch mean."""
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


# -- weighted ASL (CheXFusion) ------------------------------------------------------------------------------
def wasl_direct(z, y, prevalence, gamma_neg=4.0, gamma_pos=1.0, clip=0.05):
    """CheXFusion's poster equation element by element: −w (y (1−p)^γ+ log p + (1−y) p_m^γ− log(1−p_m)),
    w = exp(1 − p_c) for a positive, exp(p_c) for a negative."""
    asl = asl_direct(z, y, gamma_neg, gamma_pos, clip)
    prev = np.asarray(prevalence, dtype=np.float64)[None, :]
    w = np.where(np.asarray(y) == 1, np.exp(1 - prev), np.exp(prev))
    return w * asl


def wasl_as_chexfusion_code(z, y, prevalence, gamma_neg=4.0, gamma_pos=1.0, clip=0.05):
    """Per-element loss as CheXFusion's released ``ASLwithClassWeight`` computes it (in torch, so
    that its gradient can be compared): clipped negative probability, weighted log terms, then the
    one-sided focusing weight (1 − p_t)^γ, differentiated."""
    weight = y * torch.exp(1 - prevalence) + (1 - y) * torch.exp(prevalence)
    xs_pos = torch.sigmoid(z)
    xs_neg = (1.0 - xs_pos + clip).clamp(max=1)
    loss = (y * torch.log(xs_pos) + (1 - y) * torch.log(xs_neg)) * weight
    pt = xs_pos * y + xs_neg * (1 - y)
    return -(loss * torch.pow(1 - pt, gamma_pos * y + gamma_neg * (1 - y)))


def test_weighted_asl_hand_computed_values():
    z = torch.tensor([[0.0, 0.0]])
    y = torch.tensor([[1.0, 0.0]])
    per = weighted_asymmetric_loss(z, y, reduction="none", prevalence=torch.tensor([0.25, 0.25]))
    # positive, p = 0.5, γ+ = 1: e^{0.75} · 0.5 · log 2; negative: e^{0.25} · 0.45^4 · (−log 0.55)
    assert per[0, 0].item() == pytest.approx(math.exp(0.75) * 0.5 * math.log(2.0), rel=1e-6)
    assert per[0, 1].item() == pytest.approx(math.exp(0.25) * 0.45 ** 4 * -math.log(0.55), rel=1e-6)


@pytest.mark.parametrize("gamma_neg,gamma_pos,clip", [(4.0, 1.0, 0.05), (4.0, 0.0, 0.05), (2.0, 2.0, 0.0)])
@pytest.mark.parametrize("masked", [False, True])
def test_weighted_asl_matches_poster_formula(gamma_neg, gamma_pos, clip, masked):
    mask = MASK if masked else None
    expect = wasl_direct(LOGITS.numpy(), TARGETS.numpy(), PREVALENCE.numpy(), gamma_neg, gamma_pos, clip)
    kw = dict(prevalence=PREVALENCE, gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)
    none = weighted_asymmetric_loss(LOGITS, TARGETS, mask, reduction="none", **kw).numpy()
    keep = np.ones_like(expect, dtype=bool) if mask is None else MASK.numpy()
    np.testing.assert_allclose(none[keep], expect[keep], rtol=1e-5, atol=1e-7)
    for red in ("mean", "sum"):
        got = weighted_asymmetric_loss(LOGITS, TARGETS, mask, reduction=red, **kw).item()
        assert got == pytest.approx(masked_reduce(expect, mask, red), rel=1e-5, abs=1e-8)


def test_weighted_asl_value_and_gradient_match_chexfusion_code():
    # logits in [-10, 10]: the code's 1e-8 clamp of the logs is inactive there
    z = LOGITS.clamp(-10, 10)
    z1, z2 = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    ours = weighted_asymmetric_loss(z1, TARGETS, reduction="none", prevalence=PREVALENCE)
    ref = wasl_as_chexfusion_code(z2, TARGETS, PREVALENCE)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    ours.mean().backward()
    ref.mean().backward()  # the code's reduction: -loss.mean()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-7, atol=1e-12)
    # detached focusing weights: the gradient of the weighted log terms alone
    z3 = z.clone().requires_grad_(True)
    weighted_asymmetric_loss(z3, TARGETS, reduction="sum", prevalence=PREVALENCE, detach_focusing=True).backward()
    w = (TARGETS * torch.exp(1 - PREVALENCE) + (1 - TARGETS) * torch.exp(PREVALENCE)).numpy()
    expect = w * asl_grad_direct(z.numpy(), TARGETS.numpy(), 4.0, 1.0, 0.05, detach=True)
    np.testing.assert_allclose(z3.grad.numpy(), expect, rtol=1e-6, atol=1e-12)


def test_weighted_asl_weights_rare_positives_up_and_checks_prevalence():
    z, y = torch.zeros(1, 2), torch.ones(1, 2)
    per = weighted_asymmetric_loss(z, y, reduction="none", prevalence=torch.tensor([0.01, 0.9]))
    assert per[0, 0].item() / per[0, 1].item() == pytest.approx(math.exp(0.99 - 0.1), rel=1e-6)
    for bad in (torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.1, float("nan")]), torch.tensor([0.1, 1.5])):
        with pytest.raises(ValueError, match="prevalence"):
            weighted_asymmetric_loss(z, y, prevalence=bad)


# -- generalized cross-entropy (LDRNet's E-step) -------------------------------------------------------------
def gce_direct(z, y, q):
    """Zhang & Sabuncu's L_q = (1 − p_t^q)/q per binary label, p_t the probability of the true value."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64)
    out = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        p = sigmoid(z[idx])
        pt = p if y[idx] == 1 else 1 - p
        out[idx] = (1 - pt ** q) / q
    return out


@pytest.mark.parametrize("q", [0.8, 0.3, 1.0])
@pytest.mark.parametrize("masked", [False, True])
def test_gce_matches_formula(q, masked):
    z = LOGITS.clamp(-20, 20)  # the direct formula loses 1 − p in float64 beyond
    mask = MASK if masked else None
    expect = gce_direct(z.numpy(), TARGETS.numpy(), q)
    for red in ("mean", "sum"):
        got = generalized_cross_entropy_loss(z, TARGETS, mask, reduction=red, q=q).item()
        assert got == pytest.approx(masked_reduce(expect, mask, red), rel=1e-9, abs=1e-12)


def test_gce_limits_hand_values_and_gradient():
    p = torch.sigmoid(LOGITS)
    # q = 1: the mean absolute error |y − p|; q → 0: binary cross-entropy
    mae = generalized_cross_entropy_loss(LOGITS, TARGETS, reduction="none", q=1.0)
    torch.testing.assert_close(mae, (TARGETS - p).abs(), rtol=1e-9, atol=1e-12)
    near0 = generalized_cross_entropy_loss(LOGITS.clamp(-20, 20), TARGETS, q=1e-7).item()
    assert near0 == pytest.approx(bce_loss(LOGITS.clamp(-20, 20), TARGETS).item(), rel=1e-5)
    # hand value: positive at p = 0.5, q = 0.8: (1 − 0.5^0.8) / 0.8
    one = generalized_cross_entropy_loss(torch.zeros(1, 1), torch.ones(1, 1), q=0.8).item()
    assert one == pytest.approx((1 - 0.5 ** 0.8) / 0.8, rel=1e-6)
    # dL/dz = −p^q (1 − p) for a positive, (1 − p)^q p for a negative
    z = LOGITS.clamp(-30, 30).clone().requires_grad_(True)
    generalized_cross_entropy_loss(z, TARGETS, reduction="sum", q=0.8).backward()
    pz = torch.sigmoid(z.detach())
    expect = torch.where(TARGETS == 1, -pz ** 0.8 * (1 - pz), (1 - pz) ** 0.8 * pz)
    torch.testing.assert_close(z.grad, expect, rtol=1e-9, atol=1e-15)
    zz = (torch.randn(3, 4, dtype=torch.float64) * 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: generalized_cross_entropy_loss(t, TARGETS[:, :4], q=0.8), (zz,))
    big = torch.tensor([[90.0, -90.0, 90.0, -90.0]], requires_grad=True)
    loss = generalized_cross_entropy_loss(big, torch.tensor([[1.0, 1.0, 0.0, 0.0]]), reduction="sum")
    loss.backward()
    assert torch.isfinite(big.grad).all() and loss.item() == pytest.approx(2 / 0.8, rel=1e-6)
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="q must be"):
            generalized_cross_entropy_loss(LOGITS, TARGETS, q=bad)


# -- adaptive prototype contrastive loss (proto_contrast) -----------------------------------------------------
def apcl_direct(f, y, mask, protos, valid, tau, weighting):
    """Per anchor (b, c) (known positive, valid prototype): −s_c + log(e^{s_c} + Σ_{k≠c, valid} w_ck e^{s_k}),
    s_k = cos(f_bc, p_k)/τ, w_ck = n_c · softmax over the valid k ≠ c of cos(p_c, p_k)/τ (or 1). Mean over anchors."""
    f, protos = np.asarray(f, dtype=np.float64), np.asarray(protos, dtype=np.float64)
    B, C, _ = f.shape
    valid = np.ones(C, bool) if valid is None else np.asarray(valid)
    mask = np.ones((B, C), bool) if mask is None else np.asarray(mask)

    def cos(a, b):
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))

    losses = []
    for b in range(B):
        for c in range(C):
            if not (y[b, c] == 1 and mask[b, c] and valid[c]):
                continue
            negs = [k for k in range(C) if k != c and valid[k]]
            s = {k: cos(f[b, c], protos[k]) / tau for k in [c] + negs}
            if weighting == "similarity" and negs:
                e = np.array([math.exp(cos(protos[c], protos[k]) / tau) for k in negs])
                w = dict(zip(negs, len(negs) * e / e.sum()))
            else:
                w = {k: 1.0 for k in negs}
            losses.append(-s[c] + math.log(math.exp(s[c]) + sum(w[k] * math.exp(s[k]) for k in negs)))
    return float(np.mean(losses)) if losses else 0.0


def apcl_inputs(seed=0, B=3, C=4, d=6):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(B, C, d, generator=g, dtype=torch.float64)
    protos = torch.randn(C, d, generator=g, dtype=torch.float64)
    y = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float64)[:B, :C]
    mask = torch.tensor([[True, True, True, False], [True, False, True, True], [True, True, True, True]])[:B, :C]
    return f, y, mask, protos


@pytest.mark.parametrize("weighting", ["similarity", "uniform"])
@pytest.mark.parametrize("tau", [0.1, 0.7])
def test_apcl_matches_formula(weighting, tau):
    f, y, mask, protos = apcl_inputs()
    for m, valid in ((None, None), (mask, None), (mask, torch.tensor([True, False, True, True]))):
        got = prototype_contrastive_loss(f, y, m, protos, valid, temperature=tau, negative_weighting=weighting)
        expect = apcl_direct(f.numpy(), y.numpy(), None if m is None else m.numpy(), protos.numpy(),
                             None if valid is None else valid.numpy(), tau, weighting)
        assert got.item() == pytest.approx(expect, rel=1e-9)
    total = prototype_contrastive_loss(f, y, mask, protos, temperature=tau, negative_weighting=weighting,
                                       reduction="sum")
    anchors = int(((y == 1) & mask).sum())
    assert total.item() == pytest.approx(anchors * apcl_direct(f.numpy(), y.numpy(), mask.numpy(), protos.numpy(),
                                                               None, tau, weighting), rel=1e-9)


def test_apcl_hand_values_and_adaptive_weights():
    # one anchor of class 0, feature equal to prototype 0; prototypes at 0°, 60° and 90° from it
    protos = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.0, 1.0]], dtype=torch.float64)
    f = protos.clone().unsqueeze(0)  # [1, 3, 2]
    y = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    tau = 0.5
    s = [1 / tau, 0.5 / tau, 0.0]
    uniform = -s[0] + math.log(math.exp(s[0]) + math.exp(s[1]) + math.exp(s[2]))
    got = prototype_contrastive_loss(f, y, None, protos, temperature=tau, negative_weighting="uniform")
    assert got.item() == pytest.approx(uniform, rel=1e-12)
    # adaptive: the 60° prototype (more similar to p_0) gets weight 2·e^{1}/(e^{1} + e^{0}) > 1
    w1 = 2 * math.exp(1.0) / (math.exp(1.0) + 1.0)
    w2 = 2 * 1.0 / (math.exp(1.0) + 1.0)
    adaptive = -s[0] + math.log(math.exp(s[0]) + w1 * math.exp(s[1]) + w2 * math.exp(s[2]))
    got = prototype_contrastive_loss(f, y, None, protos, temperature=tau, negative_weighting="similarity")
    assert got.item() == pytest.approx(adaptive, rel=1e-12) and adaptive > uniform
    # equally similar prototypes: adaptive = uniform
    sym = torch.eye(3, dtype=torch.float64)
    a = prototype_contrastive_loss(sym[None] + 0.1, y, None, sym, negative_weighting="similarity")
    b = prototype_contrastive_loss(sym[None] + 0.1, y, None, sym, negative_weighting="uniform")
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


def test_apcl_masking_gradients_and_edge_cases():
    f, y, mask, protos = apcl_inputs(seed=1)
    f = f.clone().requires_grad_(True)
    loss = prototype_contrastive_loss(f, y, mask, protos)
    loss.backward()
    anchors = (y == 1) & mask
    # only anchors' features get a gradient; flipping unknown targets changes nothing
    assert torch.all(f.grad[~anchors] == 0) and torch.all(f.grad[anchors].abs().sum(-1) > 0)
    y2 = torch.where(mask, y, 1 - y)
    assert prototype_contrastive_loss(f, y2, mask, protos).item() == pytest.approx(loss.item(), rel=1e-12)
    # the exact derivative with respect to the features (the weights depend on the prototypes only)
    assert torch.autograd.gradcheck(lambda t: prototype_contrastive_loss(t, y, mask, protos), (f.detach().clone()
                                                                                              .requires_grad_(True),))
    # with respect to the prototypes the adaptive weights are constants: compare with them held fixed
    p1 = protos.clone().requires_grad_(True)
    prototype_contrastive_loss(f.detach(), y, mask, p1).backward()
    p2 = protos.clone().requires_grad_(True)
    fn, pn = F.normalize(f.detach(), dim=-1), F.normalize(p2, dim=-1)
    with torch.no_grad():
        sim = pn @ pn.t() / 0.1
        sim.fill_diagonal_(float("-inf"))
        log_w = torch.log_softmax(sim, 1) + math.log(3)
        log_w.fill_diagonal_(0.0)
    s = torch.einsum("bcd,kd->bck", fn, pn) / 0.1
    per = torch.logsumexp(s + log_w, -1) - s.diagonal(dim1=1, dim2=2)
    per[anchors].mean().backward()
    torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-9, atol=1e-12)
    # no anchor: 0 with a gradient path; one class: no negatives, loss 0; "none" reduction shape
    zero = prototype_contrastive_loss(f, torch.zeros_like(y), mask, protos)
    assert zero.item() == 0.0 and zero.requires_grad
    assert prototype_contrastive_loss(f[:, :1], y[:, :1], None, protos[:1]).item() == pytest.approx(0.0, abs=1e-12)
    assert prototype_contrastive_loss(f, y, mask, protos, reduction="none").shape == (3, 4)
    # bf16 features are computed in float32
    assert prototype_contrastive_loss(f.detach().bfloat16(), y, mask, protos.bfloat16()).dtype == torch.float32


def test_apcl_bad_arguments():
    f, y, mask, protos = apcl_inputs()
    with pytest.raises(ValueError, match="features"):
        prototype_contrastive_loss(f[0], y, mask, protos)
    with pytest.raises(ValueError, match="prototypes"):
        prototype_contrastive_loss(f, y, mask, protos[:2])
    with pytest.raises(ValueError, match="prototype_mask"):
        prototype_contrastive_loss(f, y, mask, protos, torch.ones(4))
    with pytest.raises(ValueError, match="targets"):
        prototype_contrastive_loss(f, y[:, :2], mask, protos)
    with pytest.raises(ValueError, match="temperature"):
        prototype_contrastive_loss(f, y, mask, protos, temperature=0.0)
    with pytest.raises(ValueError, match="negative_weighting"):
        prototype_contrastive_loss(f, y, mask, protos, negative_weighting="hard")
