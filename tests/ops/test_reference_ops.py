"""The reference ops against independent formulations (explicit distance tables, dense matrices,
per-element loops), float64 gradchecks, and the bad-input errors of docs/design.md §3."""
import itertools
import math

import pytest
import torch

from fact_fast import ops

R = {"backend": "reference"}


# --- vq ------------------------------------------------------------------------------------------

def test_vq_nearest_matches_explicit_distance_table():
    z, cb = torch.randn(37, 5, dtype=torch.float64), torch.randn(11, 5, dtype=torch.float64)
    index, dist = ops.vq_nearest(z, cb, **R)
    for i in range(z.shape[0]):
        table = [float(((z[i] - cb[j]) ** 2).sum()) for j in range(cb.shape[0])]
        assert index[i].item() == min(range(len(table)), key=lambda j: (table[j], j))
        assert dist[i].item() == pytest.approx(min(table), rel=1e-12)
    assert index.dtype == torch.int64 and dist.dtype == z.dtype


def test_vq_nearest_ties_pick_lowest_index():
    cb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    index, _ = ops.vq_nearest(z, cb, **R)
    assert index.tolist() == [0, 1, 0]


def test_vq_nearest_empty_and_single():
    cb = torch.randn(3, 4)
    index, dist = ops.vq_nearest(torch.empty(0, 4), cb, **R)
    assert index.shape == (0,) and dist.shape == (0,)
    index, dist = ops.vq_nearest(cb[1:2].clone(), cb, **R)
    assert index.tolist() == [1] and dist.item() == 0.0


def test_vq_quantize_straight_through_and_commit_loss():
    z = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    cb = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    v, index, commit = ops.vq_quantize(z, cb, beta=0.25, **R)
    assert index.shape == (2, 3)
    torch.testing.assert_close(v, cb[index])  # forward value is the codeword
    zq = cb.detach()[index]
    expected = ((z.detach() - zq) ** 2).mean() * 1.25  # both terms have the same value
    torch.testing.assert_close(commit, expected)
    # straight-through: dv/dz = identity; commit: d/dz = 2β(z − zq)/numel, d/dcb = scatter of 2(zq − z)/numel
    (v.sum() + commit).backward()
    n = z.numel()
    torch.testing.assert_close(z.grad, torch.ones_like(z) + 2 * 0.25 * (z.detach() - zq) / n)
    expected_cb = torch.zeros_like(cb)
    expected_cb.index_add_(0, index.reshape(-1), (2 * (zq - z.detach()) / n).reshape(-1, 4))
    torch.testing.assert_close(cb.grad, expected_cb)


def test_vq_quantize_empty_gives_zero_loss():
    v, index, commit = ops.vq_quantize(torch.empty(0, 7, 4), torch.randn(3, 4), **R)
    assert v.shape == (0, 7, 4) and index.shape == (0, 7) and commit.item() == 0.0


def test_vq_nearest_gradcheck():
    z = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    cb = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.vq_nearest(a, b, **R)[1], (z, cb))


# --- gcn -----------------------------------------------------------------------------------------

def dense_gcn(x, rowptr, col, value, add_self_loops, normalize):
    n = x.shape[0]
    a = torch.zeros(n, n, dtype=torch.float64)
    w = value.double() if value is not None else torch.ones(col.numel(), dtype=torch.float64)
    for r in range(n):
        for e in range(int(rowptr[r]), int(rowptr[r + 1])):
            a[r, int(col[e])] += w[e]
    if add_self_loops:
        a = a + torch.eye(n, dtype=torch.float64)
    if normalize:
        deg = a.sum(1)
        dinv = torch.where(deg > 0, deg.clamp_min(1e-300) ** -0.5, torch.zeros_like(deg))
        a = dinv[:, None] * a * dinv[None, :]
    return a @ x.double()


def csr_from_edges(n, edges):
    edges = sorted(edges)
    rowptr = torch.zeros(n + 1, dtype=torch.int64)
    for r, _ in edges:
        rowptr[r + 1] += 1
    return rowptr.cumsum(0), torch.tensor([c for _, c in edges], dtype=torch.int64)


GRAPHS = {
    # asymmetric, a duplicate edge (0→1 twice), an existing self loop (2→2), a zero-degree row (3)
    "mixed": (4, [(0, 1), (0, 1), (0, 2), (1, 0), (2, 2), (2, 0)]),
    "empty": (3, []),
    "chain": (5, [(i, i + 1) for i in range(4)]),
}


@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("add_self_loops,normalize", list(itertools.product([True, False], [True, False])))
@pytest.mark.parametrize("weighted", [False, True])
def test_gcn_matches_dense(graph, add_self_loops, normalize, weighted):
    n, edges = GRAPHS[graph]
    rowptr, col = csr_from_edges(n, edges)
    value = torch.rand(col.numel(), dtype=torch.float64) + 0.5 if weighted else None
    x = torch.randn(n, 3, dtype=torch.float64)
    out = ops.gcn_propagate(x, rowptr, col, value, add_self_loops, normalize, **R)
    torch.testing.assert_close(out, dense_gcn(x, rowptr, col, value, add_self_loops, normalize))


def test_gcn_zero_degree_row_without_self_loops_is_zero():
    rowptr, col = csr_from_edges(3, [(0, 1), (1, 0)])
    out = ops.gcn_propagate(torch.randn(3, 2), rowptr, col, add_self_loops=False, **R)
    assert torch.all(out[2] == 0)


def test_gcn_empty_graph_and_int32_indices():
    x = torch.randn(0, 4)
    out = ops.gcn_propagate(x, torch.zeros(1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), **R)
    assert out.shape == (0, 4)
    rowptr, col = csr_from_edges(4, GRAPHS["mixed"][1])
    x = torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(ops.gcn_propagate(x, rowptr.int(), col.int(), **R),
                               ops.gcn_propagate(x, rowptr, col, **R))


def test_gcn_gradcheck_x_and_value():
    rowptr, col = csr_from_edges(4, GRAPHS["mixed"][1])
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    value = (torch.rand(col.numel(), dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, w: ops.gcn_propagate(a, rowptr, col, w, **R), (x, value))


# --- attention -----------------------------------------------------------------------------------

def test_sigmoid_attention_matches_loops():
    q, k, v = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 5, 4, dtype=torch.float64), \
        torch.randn(2, 5, 6, dtype=torch.float64)
    out = ops.sigmoid_attention(q, k, v, bias=-0.3, **R)
    expected = torch.zeros(2, 3, 6, dtype=torch.float64)
    for b, i, j in itertools.product(range(2), range(3), range(5)):
        p = 1 / (1 + math.exp(-(float(q[b, i] @ k[b, j]) / 2.0 - 0.3)))
        expected[b, i] += p * v[b, j]
    torch.testing.assert_close(out, expected)


def test_sigmoid_attention_broadcasts_leading_dims():
    q = torch.randn(3, 4, dtype=torch.float64)
    k = torch.randn(2, 5, 4, dtype=torch.float64)
    v = torch.randn(2, 5, 4, dtype=torch.float64)
    out = ops.sigmoid_attention(q, k, v, scale=0.7, **R)
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out[1], ops.sigmoid_attention(q, k[1], v[1], scale=0.7, **R))


def test_sigmoid_interface_is_residual_attention_with_keys_equal_values():
    q = torch.randn(4, 8, dtype=torch.float64)
    v = torch.randn(3, 5, 8, dtype=torch.float64)
    e = ops.sigmoid_interface(q, v, bias=-math.log(5), **R)
    expected = q + torch.sigmoid(q @ v.transpose(1, 2) / math.sqrt(8) - math.log(5)) @ v
    torch.testing.assert_close(e, expected)
    assert ops.sigmoid_interface(q.expand(3, 4, 8), v, **R).shape == (3, 4, 8)


def test_attention_gradcheck():
    q = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: ops.sigmoid_attention(a, b, c, bias=0.2, **R), (q, k, v))
    qi = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    vi = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.sigmoid_interface(a, b, **R), (qi, vi))


# --- fuzzy ---------------------------------------------------------------------------------------

def loop_fuzzy_loss(e, s, y, tau, alpha, lam, delta, eps):
    """docs/design.md §2.7 written out per sample with Python sums."""
    losses = []
    for b in range(e.shape[0]):
        mu = [math.exp(-float(((e[b, c] - s[c]) ** 2).sum()) / tau) for c in range(e.shape[1])]
        f = [lam * (m - delta) for m in mu]
        yb = [int(t) for t in y[b]]
        point = math.log(1 + sum(math.exp(fc) for fc, t in zip(f, yb) if t == 0)) + \
            math.log(1 + sum(math.exp(-fc) for fc, t in zip(f, yb) if t == 1))
        jac = (sum(t * m for t, m in zip(yb, mu)) + eps) / (sum(t + (1 - t) * m for t, m in zip(yb, mu)) + eps)
        losses.append(point + alpha * (1 - jac))
    return losses


@pytest.mark.parametrize("labels", ["random", "no_positive", "all_positive"])
def test_fuzzy_loss_matches_formula(labels):
    e = torch.randn(4, 3, 5, dtype=torch.float64) * 0.3
    s = torch.randn(3, 5, dtype=torch.float64) * 0.3
    y = {"random": torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]]),
         "no_positive": torch.zeros(4, 3), "all_positive": torch.ones(4, 3)}[labels].double()
    loss, mu = ops.fuzzy_loss(e, s, y, 1.7, alpha=0.5, logit_scale=8.0, threshold=0.4, smooth=1.0,
                              reduction="none", **R)
    expected = loop_fuzzy_loss(e, s, y, 1.7, 0.5, 8.0, 0.4, 1.0)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(mu, torch.exp(-((e - s) ** 2).sum(-1) / 1.7))
    mean, _ = ops.fuzzy_loss(e, s, y, 1.7, alpha=0.5, logit_scale=8.0, threshold=0.4, **R)
    assert mean.item() == pytest.approx(sum(expected) / 4, rel=1e-12)


def test_fuzzy_loss_stable_at_large_logit_scale_and_saturated_mu():
    e = torch.zeros(2, 3, 4, dtype=torch.float32)
    s = torch.full((3, 4), 100.0)  # μ underflows to 0
    y = torch.tensor([[1.0, 0, 0], [0, 1, 1]])
    loss, mu = ops.fuzzy_loss(e, s, y, 0.01, logit_scale=64.0, **R)
    assert torch.isfinite(loss) and torch.all(mu == 0)


def test_fuzzy_loss_empty_batch_and_gradcheck():
    loss, mu = ops.fuzzy_loss(torch.empty(0, 3, 2), torch.randn(3, 2), torch.empty(0, 3), 1.0, **R)
    assert loss.item() == 0.0 and mu.shape == (0, 3)
    e = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    s = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    tau = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, t: ops.fuzzy_loss(a, b, y, t, **R)[0], (e, s, tau))


@pytest.mark.parametrize("kernel", ["gaussian", "linear", "cosine", "laplacian", "polynomial"])
def test_membership_kernels_in_unit_interval_and_gradcheck(kernel):
    e = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    s = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    mu = ops.fuzzy_membership(e, s, 2.0, kernel=kernel, **R)
    assert mu.shape == (2, 3) and bool(((mu >= 0) & (mu <= 1)).all())
    assert torch.autograd.gradcheck(lambda a, b: ops.fuzzy_membership(a, b, 2.0, kernel=kernel, **R), (e, s))
    # identical embedding and anchor: maximal membership for the distance kernels
    if kernel in ("gaussian", "laplacian", "cosine", "polynomial"):
        same = ops.fuzzy_membership(s.detach().unsqueeze(0), s.detach(), 2.0, kernel=kernel, **R)
        torch.testing.assert_close(same, torch.ones_like(same), atol=1e-5, rtol=0)  # laplacian: the ε in its sqrt


# --- bad input -----------------------------------------------------------------------------------

BAD_CALLS = [
    ("vq_nearest rank", lambda: ops.vq_nearest(torch.randn(3), torch.randn(2, 3)), ValueError, "z"),
    ("vq_nearest empty codebook", lambda: ops.vq_nearest(torch.randn(3, 2), torch.randn(0, 2)), ValueError,
     "codebook"),
    ("vq_nearest d mismatch", lambda: ops.vq_nearest(torch.randn(3, 2), torch.randn(4, 5)), ValueError, "codebook"),
    ("vq_nearest dtype mismatch", lambda: ops.vq_nearest(torch.randn(3, 2), torch.randn(4, 2).double()), TypeError,
     "codebook"),
    ("vq_nearest int z", lambda: ops.vq_nearest(torch.ones(3, 2, dtype=torch.int64), torch.randn(4, 2)), TypeError,
     "z"),
    ("vq_nearest not a tensor", lambda: ops.vq_nearest([[1.0]], torch.randn(1, 1)), TypeError, "z"),
    ("vq_quantize beta", lambda: ops.vq_quantize(torch.randn(3, 2), torch.randn(4, 2), beta=float("nan")),
     ValueError, "beta"),
    ("gcn rowptr length", lambda: ops.gcn_propagate(torch.randn(3, 2), torch.tensor([0, 1]), torch.tensor([0])),
     ValueError, "rowptr"),
    ("gcn decreasing rowptr", lambda: ops.gcn_propagate(torch.randn(2, 2), torch.tensor([0, 2, 1]),
                                                        torch.tensor([0])), ValueError, "rowptr"),
    ("gcn col out of range", lambda: ops.gcn_propagate(torch.randn(2, 2), torch.tensor([0, 1, 2]),
                                                       torch.tensor([0, 5])), ValueError, "col"),
    ("gcn negative col", lambda: ops.gcn_propagate(torch.randn(2, 2), torch.tensor([0, 1, 2]),
                                                   torch.tensor([0, -1])), ValueError, "col"),
    ("gcn float col", lambda: ops.gcn_propagate(torch.randn(2, 2), torch.tensor([0, 1, 2]),
                                                torch.tensor([0.0, 1.0])), TypeError, "col"),
    ("gcn value length", lambda: ops.gcn_propagate(torch.randn(2, 2), torch.tensor([0, 1, 2]), torch.tensor([0, 1]),
                                                   torch.ones(3)), ValueError, "value"),
    ("attention d mismatch", lambda: ops.sigmoid_attention(torch.randn(2, 3, 4), torch.randn(2, 5, 3),
                                                           torch.randn(2, 5, 4)), ValueError, "k"),
    ("attention Lk mismatch", lambda: ops.sigmoid_attention(torch.randn(2, 3, 4), torch.randn(2, 5, 4),
                                                            torch.randn(2, 6, 4)), ValueError, "v"),
    ("attention broadcast", lambda: ops.sigmoid_attention(torch.randn(3, 3, 4), torch.randn(2, 5, 4),
                                                          torch.randn(2, 5, 4)), ValueError, "broadcast"),
    ("interface batch", lambda: ops.sigmoid_interface(torch.randn(3, 4, 8), torch.randn(2, 5, 8)), ValueError, "q"),
    ("fuzzy s shape", lambda: ops.fuzzy_loss(torch.randn(2, 3, 4), torch.randn(4, 4), torch.zeros(2, 3), 1.0),
     ValueError, "s"),
    ("fuzzy y shape", lambda: ops.fuzzy_loss(torch.randn(2, 3, 4), torch.randn(3, 4), torch.zeros(2, 4), 1.0),
     ValueError, "y"),
    ("fuzzy y non-binary", lambda: ops.fuzzy_loss(torch.randn(2, 3, 4), torch.randn(3, 4),
                                                  torch.full((2, 3), 0.5), 1.0), ValueError, "binary"),
    ("fuzzy tau", lambda: ops.fuzzy_loss(torch.randn(2, 3, 4), torch.randn(3, 4), torch.zeros(2, 3), -1.0),
     ValueError, "tau"),
    ("fuzzy tau shape", lambda: ops.fuzzy_membership(torch.randn(2, 3, 4), torch.randn(3, 4), torch.ones(2)),
     ValueError, "tau"),
    ("fuzzy kernel", lambda: ops.fuzzy_membership(torch.randn(2, 3, 4), torch.randn(3, 4), 1.0, kernel="rbf"),
     ValueError, "kernel"),
    ("fuzzy reduction", lambda: ops.fuzzy_loss(torch.randn(2, 3, 4), torch.randn(3, 4), torch.zeros(2, 3), 1.0,
                                               reduction="avg"), ValueError, "reduction"),
]


@pytest.mark.parametrize("name,call,exc,match", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_clear_error(name, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="device mismatch needs a second device")
def test_device_mismatch_raises():
    with pytest.raises(ValueError, match="device"):
        ops.vq_nearest(torch.randn(3, 2, device="cuda"), torch.randn(4, 2))


def test_meta_device_mismatch_raises():
    with pytest.raises(ValueError, match="device"):
        ops.sigmoid_interface(torch.randn(3, 4, device="meta"), torch.randn(2, 5, 4))
