"""Fused fuzzy_loss / fuzzy_membership backends against the reference, both point-loss logits."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fact_fast import _extension, ops
from fact_fast.ops import fuzzy as fuzzy_ops
from fact_fast.ops import reference, tolerances
from tests.helpers.op_utils import assert_close, fresh_inductor, fused_backends, non_contiguous

# (dtype, atol, rtol) for loss / μ / gradients: fact_fast.ops.tolerances.FUZZY
DTYPES = [(dtype, *tol) for dtype, tol in tolerances.FUZZY.items()]
LOGITS = fuzzy_ops.LOGITS  # f = λ(μ − δ), f = λ·log(μ/δ)


def _backends(op, e, *rest):
    found = fused_backends(op, e, *rest)
    if e.dtype == torch.float64:
        found = [b for b in found if b == "cpu"]
    return found


def _inputs(b, c, d, dtype=torch.float32, pos_rate=0.3, spread=0.3, tau=None, device="cpu"):
    """Anchors and embeddings near them, so μ spans (0, 1) rather than saturating."""
    s = torch.randn(c, d, dtype=torch.float64)
    e = s + spread * torch.randn(b, c, d, dtype=torch.float64)
    y = (torch.rand(b, c) < pos_rate).float()
    tau = torch.tensor(float(tau if tau is not None else max(2 * spread ** 2 * d, 1e-3)))
    return e.to(device, dtype), s.to(device, dtype), y.to(device), tau.to(device)


def _run(fn, e, s, y, tau, grads=True, mu_weight=None, **kw):
    """Loss and μ, plus gradients of e, s, τ through (loss + Σ w·μ) when asked."""
    e = e.detach().clone().requires_grad_(grads)
    s = s.detach().clone().requires_grad_(grads)
    tau = tau.detach().clone().requires_grad_(grads) if isinstance(tau, torch.Tensor) else tau
    loss, mu = fn(e, s, y, tau, **kw)
    out = {"loss": loss.detach(), "mu": mu.detach()}
    if grads:
        total = loss.float().sum()
        if mu_weight is not None:
            total = total + (mu.float() * mu_weight).sum()
        total.backward()
        out.update(de=e.grad, ds=s.grad)
        if isinstance(tau, torch.Tensor):
            out["dtau"] = tau.grad
    return out


def _compare(backend, e, s, y, tau, atol, rtol, grads=True, mu_weight=None, **kw):
    got = _run(lambda *a, **k: ops.fuzzy_loss(*a, **k, backend=backend), e, s, y, tau, grads, mu_weight, **kw)
    want = _run(reference.fuzzy_loss, e, s, y, tau, grads, mu_weight, **kw)
    assert got["loss"].dtype == want["loss"].dtype and got["mu"].dtype == want["mu"].dtype
    assert got["loss"].shape == want["loss"].shape
    for key in want:
        assert_close(got[key], want[key], atol, rtol, f"{backend} {key}")
    return got


CASES = {  # name -> (B, C, d, extra kwargs of _inputs, extra kwargs of the loss)
    "random": ((6, 9, 37), {}, {}),
    "one_row": ((1, 5, 16), {}, {}),
    "single_class": ((5, 1, 12), {}, {}),
    "no_positive": ((4, 7, 20), {"pos_rate": 0.0}, {}),
    "all_positive": ((4, 7, 20), {"pos_rate": 1.1}, {}),
    "huge_tau": ((4, 6, 16), {"tau": 1e6}, {}),
    "tiny_tau": ((4, 6, 16), {"tau": 1e-2, "spread": 0.05}, {}),
    "logit_scale_64": ((5, 8, 24), {}, {"logit_scale": 64.0, "alpha": 0.5, "threshold": 0.3}),
    "saturated_mu": ((4, 6, 16), {"spread": 3.0, "tau": 1.0}, {"logit_scale": 64.0}),
    # dist/τ ≈ 1000: μ is exactly 0 in float32, the log logit ≈ −10⁴ stays finite
    "mu_underflow": ((4, 6, 16), {"spread": 4.0, "tau": 0.5, "pos_rate": 0.5}, {"threshold": 0.2}),
}


@pytest.mark.parametrize("logit", LOGITS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_matches_reference_fp32(case, reduction, logit):
    (b, c, d), make_kw, loss_kw = CASES[case]
    e, s, y, tau = _inputs(b, c, d, **make_kw)
    mu_weight = torch.randn(b, c)
    backends = _backends(fuzzy_ops.OP_LOSS, e, s, y, tau)
    if reduction != "mean":  # the Triton interpreter is slow: one reduction covers its edge cases
        backends = [x for x in backends if x != "triton" or case == "random"]
    for backend in backends:
        _compare(backend, e, s, y, tau, 1e-5, 1e-4, mu_weight=mu_weight, reduction=reduction, logit=logit,
                 **loss_kw)


def test_log_logit_moves_positives_whose_mu_underflowed():
    """With f = λ·log(μ/δ) the point loss pulls a positive towards its anchor however far it is:
    de is finite and non-zero where μ == 0 (it would vanish if the kernels scaled it by μ, as the
    scaled logit's gradient is), and matches the reference; dτ too. One positive per row: of
    several far positives the log-sum-exp weights only the farthest."""
    (b, c, d), make_kw, loss_kw = CASES["mu_underflow"]
    e, s, _, tau = _inputs(b, c, d, **make_kw)
    y = torch.zeros(b, c)
    y[torch.arange(b), torch.arange(b) % c] = 1.0
    for backend in _backends(fuzzy_ops.OP_LOSS, e, s, y, tau):
        got = _compare(backend, e, s, y, tau, 1e-5, 1e-4, logit="log", **loss_kw)
        assert (got["mu"] == 0).all()
        far_positive = got["de"][y > 0.5]
        assert torch.isfinite(far_positive).all() and (far_positive.abs().sum(-1) > 0).all(), backend
        assert torch.isfinite(got["dtau"]) and got["dtau"] != 0
        scaled = _run(lambda *a, **k: ops.fuzzy_loss(*a, **k, backend=backend), e, s, y, tau, logit="scaled",
                      **loss_kw)
        assert torch.count_nonzero(scaled["de"]) == 0  # the scaled logit's gradient carries μ = 0


class _CalledOps(TorchDispatchMode):
    """Records the name of every operator that reaches the dispatcher's Python mode."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_auto_runs_a_fused_backend_for_both_logits_but_the_reference_for_a_mask():
    e, s, y, tau = _inputs(3, 4, 5)
    fused = _backends(fuzzy_ops.OP_LOSS, e, s, y, tau)
    if "cpu" not in fused:
        pytest.skip("compiled cpu backend not built")
    mask = torch.ones(3, 4, dtype=torch.bool)
    args = (e, s, y, tau, 1.0, 10.0, 0.5, 1.0, "mean")
    for logit in LOGITS:
        assert _backends(fuzzy_ops.OP_LOSS, *args, None, logit) == fused, logit
        assert fuzzy_ops.resolve(fuzzy_ops.OP_LOSS, None, e.device, *args, None, logit)[0] == "cpu", logit
        assert fuzzy_ops.resolve(fuzzy_ops.OP_LOSS, None, e.device, *args, mask, logit)[0] == "reference", logit
        for with_mask in (False, True):
            with _CalledOps() as called:
                ops.fuzzy_loss(e.clone().requires_grad_(), s, y, tau, logit=logit,
                               mask=mask if with_mask else None)[0].backward()
            fused_calls = {n for n in called.names if n.startswith("fact_fast.")}
            want = set() if with_mask else {"fact_fast.fuzzy_loss.default", "fact_fast.fuzzy_backward.default"}
            assert fused_calls == want, (logit, with_mask, called.names)


@pytest.mark.parametrize("logit", LOGITS)
@pytest.mark.parametrize("dtype,atol,rtol", DTYPES)
def test_dtypes(dtype, atol, rtol, logit):
    e, s, y, tau = _inputs(5, 7, 33, dtype)
    for backend in _backends(fuzzy_ops.OP_LOSS, e, s, y, tau):
        _compare(backend, e, s, y, tau, atol, rtol, mu_weight=torch.randn(5, 7), logit=logit)
        mu = ops.fuzzy_membership(e, s, tau, backend=backend)
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        want = reference.fuzzy_membership(e.to(acc), s.to(acc), tau.to(acc)).to(dtype)
        assert_close(mu, want, atol, rtol, backend)


@pytest.mark.parametrize("logit", LOGITS)
def test_empty_batch(logit):
    e, s, y, tau = _inputs(0, 5, 8)
    for backend in _backends(fuzzy_ops.OP_LOSS, e, s, y, tau):
        for reduction in ("mean", "sum", "none"):
            got = _compare(backend, e, s, y, tau, 0, 0, reduction=reduction, logit=logit)
            assert got["de"].shape == (0, 5, 8)
            assert torch.equal(got["ds"], torch.zeros(5, 8)) and got["dtau"].item() == 0
        assert ops.fuzzy_loss(e, s, y, tau, logit=logit, backend=backend)[0].item() == 0.0


@pytest.mark.parametrize("logit", LOGITS)
def test_non_contiguous_inputs_and_label_dtypes(logit):
    e, s, y, tau = _inputs(4, 6, 10)
    e_nc, s_nc = non_contiguous(e), non_contiguous(s)
    y_nc = non_contiguous(y)
    for backend in _backends(fuzzy_ops.OP_LOSS, e, s, y, tau):
        _compare(backend, e_nc, s_nc, y_nc, tau, 1e-5, 1e-4, logit=logit)
        want = ops.fuzzy_loss(e, s, y, tau, logit=logit, backend="reference")[0]
        for labels in (y.bool(), y.to(torch.int64), y.to(torch.uint8), y.double()):
            assert_close(ops.fuzzy_loss(e, s, labels, tau, logit=logit, backend=backend)[0], want, 1e-5, 1e-4,
                         f"{backend} y {labels.dtype}")


@pytest.mark.parametrize("logit", LOGITS)
def test_tau_as_python_float_and_one_element_tensor(logit):
    e, s, y, _ = _inputs(3, 4, 8)
    for backend in _backends(fuzzy_ops.OP_LOSS, e, s, y, 1.5):
        _compare(backend, e, s, y, 1.5, 1e-5, 1e-4, logit=logit)
        got = _compare(backend, e, s, y, torch.tensor([1.5]), 1e-5, 1e-4, logit=logit)
        assert got["dtau"].shape == (1,)


@pytest.mark.parametrize("logit", LOGITS)
def test_only_mu_used_and_only_loss_used(logit):
    """Backward with one output's gradient missing (None) still matches the reference."""
    e, s, y, tau = _inputs(4, 5, 12)
    w = torch.randn(4, 5)
    for backend in _backends(fuzzy_ops.OP_LOSS, e, s, y, tau):
        for use_loss in (True, False):
            grads = []
            for fn in (lambda *a: ops.fuzzy_loss(*a, logit=logit, backend=backend),
                       lambda *a: reference.fuzzy_loss(*a, logit=logit)):
                ee, ss, tt = (t.clone().requires_grad_() for t in (e, s, tau))
                loss, mu = fn(ee, ss, y, tt)
                (loss if use_loss else (mu * w).sum()).backward()
                grads.append((ee.grad, ss.grad, tt.grad))
            for g, r in zip(*grads):
                assert_close(g, r, 1e-5, 1e-4, f"{backend} use_loss={use_loss}")


@pytest.mark.parametrize("kernel", fuzzy_ops.KERNELS)
def test_membership(kernel):
    e, s, _, tau = _inputs(3, 5, 9)
    want_e, want_s, want_t = (t.clone().requires_grad_() for t in (e, s, tau))
    want = reference.fuzzy_membership(want_e, want_s, want_t, kernel)
    w = torch.randn_like(want)
    (want * w).sum().backward()
    for backend in _backends(fuzzy_ops.OP_MEMBERSHIP, e, s, tau, kernel):
        assert kernel == "gaussian"
        ee, ss, tt = (t.clone().requires_grad_() for t in (e, s, tau))
        got = ops.fuzzy_membership(ee, ss, tt, kernel, backend=backend)
        (got * w).sum().backward()
        assert_close(got, want, 1e-6, 1e-5, backend)
        for g, r in ((ee.grad, want_e.grad), (ss.grad, want_s.grad), (tt.grad, want_t.grad)):
            assert_close(g, r, 1e-5, 1e-4, f"{backend} grad")
    # auto always answers, through the reference where no fused kernel exists
    assert_close(ops.fuzzy_membership(e, s, tau, kernel), want, 1e-6, 1e-5, "auto")


def test_forced_fused_backend_rejects_unfused_kernel():
    e, s, _, tau = _inputs(2, 3, 4)
    registered = [b for b in ops.available_backends(fuzzy_ops.OP_MEMBERSHIP) if b != "reference"]
    assert "triton" in registered
    for backend in registered:
        with pytest.raises(ops.BackendUnavailableError, match="gaussian"):
            ops.fuzzy_membership(e, s, tau, "cosine", backend=backend)


@pytest.mark.parametrize("logit", LOGITS)
def test_gradcheck_cpu_float64(logit):
    if "cpu" not in fused_backends(fuzzy_ops.OP_LOSS, *_inputs(1, 1, 1)):
        pytest.skip("compiled cpu backend not built")
    e, s, y, tau = _inputs(3, 4, 5, torch.float64)
    y[0] = 0.0
    y[1] = 1.0
    e, s, tau = (t.double().requires_grad_() for t in (e, s, tau))
    w = torch.randn(3, 4, dtype=torch.float64)
    for reduction in ("mean", "none"):
        def f(e, s, tau):
            loss, mu = ops.fuzzy_loss(e, s, y, tau, logit_scale=20.0, threshold=0.3, reduction=reduction,
                                      logit=logit, backend="cpu")
            return loss, mu * w
        assert torch.autograd.gradcheck(f, (e, s, tau))
    assert torch.autograd.gradcheck(lambda e, s, t: ops.fuzzy_membership(e, s, t, backend="cpu"), (e, s, tau))


def test_deterministic_and_batch_order_independent():
    e, s, y, tau = _inputs(9, 6, 20)
    perm = torch.randperm(9)
    for backend in _backends(fuzzy_ops.OP_LOSS, e, s, y, tau):
        runs = [_run(lambda *a: ops.fuzzy_loss(*a, reduction="sum", backend=backend), e, s, y, tau)
                for _ in range(2)]
        for key in runs[0]:
            assert torch.equal(runs[0][key], runs[1][key]), f"{backend} {key} differs between runs"
        permuted = _run(lambda *a: ops.fuzzy_loss(*a, reduction="sum", backend=backend), e[perm], s, y[perm], tau)
        assert_close(permuted["loss"], runs[0]["loss"], 1e-5, 1e-6, backend)
        assert_close(permuted["ds"], runs[0]["ds"], 1e-5, 1e-5, backend)


def test_bad_inputs_raise():
    e, s, y, tau = _inputs(2, 3, 4)
    with pytest.raises(ValueError, match="y must be binary"):
        ops.fuzzy_loss(e, s, y * 0.5, tau)
    with pytest.raises(ValueError, match="y must be binary"):
        ops.fuzzy_loss(e, s, y.long() - 1, tau, backend="cpu")
    with pytest.raises(TypeError, match="y must be a real"):
        ops.fuzzy_loss(e, s, y.to(torch.complex64), tau)
    with pytest.raises(ValueError, match="y must have shape"):
        ops.fuzzy_loss(e, s, y[:, :2], tau)
    with pytest.raises(ValueError, match="s must have shape"):
        ops.fuzzy_loss(e, s[:, :3], y, tau)
    with pytest.raises(ValueError, match="e must have 3"):
        ops.fuzzy_loss(e[0], s, y, tau)
    with pytest.raises(TypeError, match="s has dtype"):
        ops.fuzzy_loss(e, s.double(), y, tau)
    with pytest.raises(ValueError, match="s is on meta"):
        ops.fuzzy_loss(e, s.to("meta"), y, tau)
    with pytest.raises(ValueError, match="y is on meta"):
        ops.fuzzy_loss(e, s, y.to("meta"), tau)
    with pytest.raises(ValueError, match="tau must be a scalar"):
        ops.fuzzy_loss(e, s, y, torch.ones(2))
    with pytest.raises(ValueError, match="tau must be a positive"):
        ops.fuzzy_loss(e, s, y, -1.0)
    with pytest.raises(ValueError, match="reduction"):
        ops.fuzzy_loss(e, s, y, tau, reduction="max")
    with pytest.raises(TypeError, match="logit_scale"):
        ops.fuzzy_loss(e, s, y, tau, logit_scale=torch.tensor(3.0))
    with pytest.raises(ValueError, match="kernel"):
        ops.fuzzy_membership(e, s, tau, "rbf")


@pytest.mark.skipif(not _extension.has_kernel("fuzzy_loss", "cpu"), reason="compiled cpu backend not built")
@pytest.mark.parametrize("logit", LOGITS)
def test_opcheck_compiled(logit):
    e, s, y, tau = _inputs(3, 4, 6)
    e.requires_grad_()
    s.requires_grad_()
    tau.requires_grad_()
    for reduction in ("mean", "none"):
        torch.library.opcheck(torch.ops.fact_fast.fuzzy_loss.default,
                              (e, s, y, tau, 1.0, 10.0, 0.5, 1.0, reduction, logit))
    torch.library.opcheck(torch.ops.fact_fast.fuzzy_membership.default, (e, s, tau))
    stats = torch.ops.fact_fast.fuzzy_loss(e, s, y, tau, 1.0, 10.0, 0.5, 1.0, "mean", logit)[2]
    torch.library.opcheck(torch.ops.fact_fast.fuzzy_backward.default,
                          (torch.tensor(1.0), torch.randn(3, 4), e.detach(), s.detach(), y, tau.detach(),
                           stats.detach(), 1.0, 10.0, 0.5, "mean", logit))


def test_opcheck_triton():
    e, s, y, tau = _inputs(2, 3, 5)
    if "triton" not in fused_backends(fuzzy_ops.OP_LOSS, e, s, y, tau):
        pytest.skip("triton cannot run here")
    e.requires_grad_()
    s.requires_grad_()
    tau.requires_grad_()
    # test_aot_dispatch_dynamic retraces with several shapes: too slow in the interpreter.
    utils = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_static")
    for logit in LOGITS:
        torch.library.opcheck(torch.ops.fact_fast.fuzzy_loss_triton.default,
                              (e, s, y, tau, 1.0, 10.0, 0.5, 1.0, "mean", logit), test_utils=utils)
    torch.library.opcheck(torch.ops.fact_fast.fuzzy_membership_triton.default, (e, s, tau), test_utils=utils)
    stats = torch.ops.fact_fast.fuzzy_loss_triton(e, s, y, tau, 1.0, 10.0, 0.5, 1.0, "none", "log")[2]
    torch.library.opcheck(torch.ops.fact_fast.fuzzy_backward_triton.default,
                          (torch.ones(2), None, e.detach(), s.detach(), y, tau.detach(), stats.detach(), 1.0, 10.0,
                           0.5, "none", "log"), test_utils=("test_schema", "test_faketensor"))


def test_fused_ops_reject_a_bad_logit_or_threshold():
    """Called directly (not through ops.fuzzy_loss, which checks first), each fused op still names
    the bad argument."""
    e, s, y, tau = _inputs(2, 3, 4)
    backends = _backends(fuzzy_ops.OP_LOSS, e, s, y, tau)
    if not backends:
        pytest.skip("no fused backend runs here")
    for backend in backends:
        op = torch.ops.fact_fast.fuzzy_loss_triton if backend == "triton" else torch.ops.fact_fast.fuzzy_loss
        with pytest.raises(ValueError, match="logit must be"):
            op(e, s, y, tau, 1.0, 10.0, 0.5, 1.0, "mean", "linear")
        with pytest.raises(ValueError, match="threshold must be > 0 for logit='log'"):
            op(e, s, y, tau, 1.0, 10.0, 0.0, 1.0, "mean", "log")
    with pytest.raises(ValueError, match="threshold must be > 0"):  # the front-end, before any backend
        ops.fuzzy_loss(e, s, y, tau, threshold=-1.0, logit="log")


@pytest.mark.parametrize("logit", LOGITS)
def test_torch_compile_fullgraph(logit):
    e, s, y, tau = _inputs(3, 4, 8)
    fn = torch.compile(lambda e, s, y, tau: ops.fuzzy_loss(e, s, y, tau, logit=logit), fullgraph=True,
                       backend="aot_eager")
    ee, ss, tt = (t.clone().requires_grad_() for t in (e, s, tau))
    loss, _ = fn(ee, ss, y, tt)
    loss.backward()
    want = _run(reference.fuzzy_loss, e, s, y, tau, logit=logit)
    assert_close(loss.detach(), want["loss"], 1e-5, 1e-4, "compiled loss")
    assert_close(ee.grad, want["de"], 1e-5, 1e-4, "compiled de")
    assert_close(tt.grad, want["dtau"], 1e-5, 1e-4, "compiled dtau")


@pytest.mark.cuda
@pytest.mark.parametrize("logit", LOGITS)
@pytest.mark.parametrize("dtype,atol,rtol", DTYPES[:3])
@pytest.mark.parametrize("case", ["random", "no_positive", "all_positive", "single_class", "logit_scale_64",
                                  "tiny_tau", "huge_tau", "mu_underflow"])
def test_cuda_backends(case, dtype, atol, rtol, logit):
    (b, c, d), make_kw, loss_kw = CASES[case]
    e, s, y, tau = _inputs(b, c, d, dtype, device="cuda", **make_kw)
    backends = fused_backends(fuzzy_ops.OP_LOSS, e, s, y, tau)
    assert backends, "no fused backend ran on CUDA"
    atol, rtol = tolerances.fuzzy(dtype, "cuda")  # reduction order across thread blocks
    for backend in backends:
        for reduction in ("mean", "none"):
            _compare(backend, e, s, y, tau, atol, rtol, mu_weight=torch.randn(b, c, device="cuda"),
                     reduction=reduction, logit=logit, **loss_kw)


@pytest.mark.cuda
@pytest.mark.parametrize("logit", LOGITS)
def test_cuda_large_and_deterministic(logit):
    e, s, y, tau = _inputs(300, 70, 200, device="cuda")
    for backend in fused_backends(fuzzy_ops.OP_LOSS, e, s, y, tau):
        a = _compare(backend, e, s, y, tau, 1e-5, 2e-4, logit=logit)
        b = _run(lambda *x: ops.fuzzy_loss(*x, logit=logit, backend=backend), e, s, y, tau)
        for key in a:
            assert torch.equal(a[key], b[key]), f"{backend} {key} not deterministic"
        e0, s0, y0, tau0 = _inputs(0, 5, 8, device="cuda")
        _compare(backend, e0, s0, y0, tau0, 0, 0)


# --- mask (labels that are not observed: NaN in the data) -----------------------------------------

def _masked_inputs(b=5, c=7, d=9, dtype=torch.float32):
    e, s, y, tau = _inputs(b, c, d, dtype)
    mask = torch.rand(b, c, generator=torch.Generator().manual_seed(3)) < 0.6
    mask[0] = False  # a row with nothing observed
    mask[1] = True
    y = y.masked_fill(~mask, float("nan"))  # unobserved labels are NaN, as the datasets give them
    return e, s, y, tau, mask


def _masked_loss_by_hand(mu, y, mask, alpha=1.0, logit_scale=10.0, threshold=0.5, smooth=1.0):
    """The point + set loss of each sample over its observed classes only, one sample at a time."""
    out = []
    for b in range(mu.shape[0]):
        keep = mask[b]
        m, t = mu[b][keep], y[b][keep]
        f = logit_scale * (m - threshold)
        point = torch.log1p(torch.exp(f[t == 0]).sum()) + torch.log1p(torch.exp(-f[t == 1]).sum())
        jaccard = ((t * m).sum() + smooth) / ((t + (1 - t) * m).sum() + smooth)
        out.append(point + alpha * (1 - jaccard) if keep.any() else mu.new_zeros(()))
    return torch.stack(out)


def test_mask_matches_the_loss_over_observed_classes():
    e, s, y, tau, mask = _masked_inputs(dtype=torch.float64)
    loss, mu = ops.fuzzy_loss(e, s, y, tau, reduction="none", mask=mask)
    want = _masked_loss_by_hand(reference.fuzzy_membership(e, s, tau), y, mask)
    torch.testing.assert_close(loss, want)
    assert loss[0].item() == 0.0  # nothing observed: no contribution
    assert not torch.isnan(loss).any()
    # an all-True mask is the unmasked loss; 'mean' divides by B
    y_full = torch.nan_to_num(y, nan=0.0)
    full = torch.ones_like(mask)
    torch.testing.assert_close(ops.fuzzy_loss(e, s, y_full, tau, mask=full)[0],
                               ops.fuzzy_loss(e, s, y_full, tau)[0])
    torch.testing.assert_close(ops.fuzzy_loss(e, s, y, tau, mask=mask)[0], want.sum() / e.shape[0])


def test_masked_entries_have_exactly_zero_gradient():
    e, s, y, tau, mask = _masked_inputs()
    e.requires_grad_(True)
    for smooth in (1.0, 0.0):  # smooth = 0: the all-masked row must not divide 0 by 0
        loss, _ = ops.fuzzy_loss(e, s, y, tau, smooth=smooth, mask=mask)
        (de,) = torch.autograd.grad(loss, e)
        assert torch.isfinite(de).all()
        assert torch.count_nonzero(de[~mask]) == 0
        assert torch.count_nonzero(de[mask].abs().sum(-1)) == mask.sum()  # every observed entry moves


def test_mask_gradcheck_float64():
    e, s, y, tau, mask = _masked_inputs(4, 5, 3, torch.float64)
    e, s, tau = (t.double().clone().requires_grad_(True) for t in (e, s, tau))
    for reduction in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda e, s, t: ops.fuzzy_loss(e, s, y, t, logit_scale=20.0, reduction=reduction, mask=mask)[0],
            (e, s, tau))


def test_mask_runs_the_reference_and_fused_backends_refuse_it():
    e, s, y, tau, mask = _masked_inputs()
    fused = _backends(fuzzy_ops.OP_LOSS, e, s, y.nan_to_num(0.0), tau)
    for backend in fused:
        with pytest.raises(ops.BackendUnavailableError, match="mask"):
            ops.fuzzy_loss(e, s, y, tau, mask=mask, backend=backend)
    assert ops.available_backends(fuzzy_ops.OP_LOSS, e, s, y, tau, 1.0, 10.0, 0.5, 1.0, "mean", mask) == ["reference"]
    torch.testing.assert_close(ops.fuzzy_loss(e, s, y, tau, mask=mask)[0],
                               ops.fuzzy_loss(e, s, y, tau, mask=mask, backend="reference")[0])


def test_mask_bad_inputs_raise():
    e, s, y, tau, mask = _masked_inputs()
    with pytest.raises(TypeError, match="mask must have dtype"):
        ops.fuzzy_loss(e, s, y, tau, mask=mask.float())
    with pytest.raises(ValueError, match="mask must have shape"):
        ops.fuzzy_loss(e, s, y, tau, mask=mask[:, :3])
    with pytest.raises(ValueError, match="mask is on meta"):
        ops.fuzzy_loss(e, s, y, tau, mask=mask.to("meta"))
    with pytest.raises(ValueError, match="y must be binary"):  # NaN where the mask says observed
        ops.fuzzy_loss(e, s, y, tau, mask=torch.ones_like(mask))
    y_bad = y.nan_to_num(0.0)
    y_bad[~mask] = 0.5  # junk where unobserved is fine ...
    ops.fuzzy_loss(e, s, y_bad, tau, mask=mask)
    y_bad[1, 0] = 0.5  # ... but not where observed
    with pytest.raises(ValueError, match="y must be binary"):
        ops.fuzzy_loss(e, s, y_bad, tau, mask=mask)


# --- host syncs ----------------------------------------------------------------------------------

def test_label_check_never_syncs_off_the_cpu():
    """Off the CPU the binary check of a float y is a device-side assertion, never a host read.

    A meta tensor has no data, so any .item()/bool()/tolist() on it raises: running the op end to
    end on meta tensors proves that no such read happens (a CUDA tensor would take the same path).
    """
    e, s, y, tau = (t.to("meta") for t in _inputs(4, 5, 6))
    for labels in (y, y.long(), y.bool()):
        loss, mu = ops.fuzzy_loss(e, s, labels, tau, backend="reference")
        assert loss.device.type == "meta" and mu.shape == (4, 5)
    ops.fuzzy_loss(e, s, y, tau, mask=torch.ones(4, 5, dtype=torch.bool, device="meta"), backend="reference")


def test_bool_labels_run_no_check(monkeypatch):
    e, s, y, tau = _inputs(3, 4, 5)
    calls, real_bool = [], torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda self: calls.append(1) or real_bool(self))
    ops.fuzzy_loss(e, s, y.bool(), tau, backend="reference")
    assert calls == []
    ops.fuzzy_loss(e, s, y, tau, backend="reference")  # float labels on CPU: checked at once
    assert calls


# --- torch.compile with Inductor: the fake backward must return the real op's (contiguous) strides -

@pytest.mark.parametrize("logit", LOGITS)
@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_inductor_backward_on_transposed_e(backend, logit):
    """e is a transposed view made inside the compiled graph, so Inductor's generated backward reads
    de with the strides the fake kernel promised (the real kernels return contiguous gradients)."""
    e, s, y, tau = _inputs(3, 4, 8)
    if backend not in _backends(fuzzy_ops.OP_LOSS, e, s, y, tau):
        pytest.skip(f"{backend} cannot run here")
    x = e.transpose(0, 1).contiguous()  # [C, B, d]

    def loss_of(x, s, tau, backend):
        return ops.fuzzy_loss((x * 1.5).transpose(0, 1), s, y, tau, logit=logit, backend=backend)[0]

    fn = torch.compile(lambda x, s, tau: loss_of(x, s, tau, backend), fullgraph=True, backend="inductor")
    got = [t.clone().requires_grad_() for t in (x, s, tau)]
    want = [t.clone().requires_grad_() for t in (x, s, tau)]
    with fresh_inductor():
        loss = fn(*got)
        loss.backward()
    loss_of(*want, "reference").backward()
    assert_close(loss.detach(), loss_of(x, s, tau, "reference"), 1e-5, 1e-4, "compiled loss")
    for name, g, w in zip(("dx", "ds", "dtau"), got, want):
        assert_close(g.grad, w.grad, 1e-5, 1e-4, f"compiled {name}")


# --- Triton kernels: last-program counter, samples per program -----------------------------------

def _triton_runs_here():
    e, s, y, tau = _inputs(2, 3, 4)
    if "triton" not in fused_backends(fuzzy_ops.OP_LOSS, e, s, y, tau):
        pytest.skip("triton cannot run here")


class _AbortAfterwards:
    """Stands in for a Triton kernel: runs it, then leaves its counter non-zero as an aborted launch
    (or a CUDA-graph pool reused after capture) would."""

    def __init__(self, kernel, counter_arg: int):
        self.kernel, self.counter_arg, self.counts_at_launch = kernel, counter_arg, []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            counter = args[self.counter_arg]
            self.counts_at_launch.append(counter.item())
            self.kernel[grid](*args, **kwargs)
            counter.fill_(7)
        return run


def test_triton_counter_is_fresh_every_call(monkeypatch):
    """A counter left non-zero by one launch must not corrupt the next loss or dτ."""
    _triton_runs_here()
    from fact_fast.kernels import _launch
    from fact_fast.kernels import fuzzy as kernels
    fwd = _AbortAfterwards(kernels._fuzzy_fwd_kernel, counter_arg=8)
    bwd = _AbortAfterwards(kernels._fuzzy_bwd_kernel, counter_arg=10)
    # the launcher's interpreter check looks at the kernel object: show it the wrapped one
    check = _launch.check_interpreter
    monkeypatch.setattr(_launch, "check_interpreter", lambda kernel: check(getattr(kernel, "kernel", kernel)))
    monkeypatch.setattr(kernels, "_fuzzy_fwd_kernel", fwd)
    monkeypatch.setattr(kernels, "_fuzzy_bwd_kernel", bwd)
    e, s, y, tau = _inputs(5, 4, 8)
    for _ in range(3):
        _compare("triton", e, s, y, tau, 1e-5, 1e-4, reduction="sum")
    assert fwd.counts_at_launch == [0, 0, 0] and bwd.counts_at_launch == [0, 0, 0]


@pytest.mark.parametrize("logit", LOGITS)
@pytest.mark.parametrize("b", [1, 13, 32])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_triton_several_samples_per_program(monkeypatch, b, reduction, logit):
    """Few multiprocessors: each forward program shares its s tiles among up to 8 samples; a last
    program may hold fewer. Loss, μ and gradients match the reference."""
    _triton_runs_here()
    from fact_fast.kernels import fuzzy as kernels
    monkeypatch.setattr(kernels, "multiprocessors", lambda device: 1)
    samples, _ = kernels._forward_tiles(b, 6, 20, 1)
    assert samples == (1 if b == 1 else 8)
    e, s, y, tau = _inputs(b, 6, 20)
    _compare("triton", e, s, y, tau, 1e-5, 1e-4, mu_weight=torch.randn(b, 6), reduction=reduction, logit=logit)


@pytest.mark.cuda
def test_triton_loss_replays_in_a_cuda_graph():
    """Captured in a CUDA graph (torch.compile mode="reduce-overhead" does this), the loss is right
    on every replay, for new inputs copied into the captured buffers."""
    e, s, y, tau = _inputs(16, 10, 64, device="cuda")
    if "triton" not in fused_backends(fuzzy_ops.OP_LOSS, e, s, y, tau):
        pytest.skip("triton cannot run here")
    y = y.bool()  # binary by type: the front-end's value check of float labels would synchronize
    e_in, s_in = e.clone(), s.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        ops.fuzzy_loss(e_in, s_in, y, tau, backend="triton")  # warm-up: compiles outside capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss, mu = ops.fuzzy_loss(e_in, s_in, y, tau, backend="triton")
    for seed in range(3):
        g = torch.Generator(device="cuda").manual_seed(seed)
        e_in.copy_(s + 0.3 * torch.randn(e.shape, device="cuda", generator=g))
        graph.replay()
        want, _ = reference.fuzzy_loss(e_in, s_in, y, tau)
        torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-4)
