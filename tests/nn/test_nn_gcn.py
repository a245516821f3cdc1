"""LabelGCN: the two-layer GCN of docs/design.md §2.4 against a dense formulation, and its cached CSRGraph."""
import pytest
import torch
import torch.nn.functional as F

from fact_fast.nn import LabelGCN


def _graph():
    # 4 labels, asymmetric edges, label 3 isolated
    rowptr = torch.tensor([0, 2, 3, 4, 4])
    col = torch.tensor([1, 2, 0, 0])
    dense = torch.zeros(4, 4, dtype=torch.float64)
    dense[0, 1] = dense[0, 2] = dense[1, 0] = dense[2, 0] = 1
    a = dense + torch.eye(4, dtype=torch.float64)
    dinv = a.sum(1).rsqrt()
    return rowptr, col, dinv[:, None] * a * dinv[None, :]


def test_label_gcn_matches_dense_formula():
    rowptr, col, a_hat = _graph()
    s0 = torch.randn(4, 6)
    gcn = LabelGCN(s0, rowptr, col, hidden_dim=5, out_dim=3, negative_slope=0.2).double()
    s1 = F.leaky_relu(a_hat @ s0.double() @ gcn.layer1.weight, 0.2)
    expected = a_hat @ s1 @ gcn.layer2.weight
    torch.testing.assert_close(gcn(), expected)


def test_label_gcn_caches_graph_and_rebuilds_after_move():
    rowptr, col, _ = _graph()
    gcn = LabelGCN(torch.randn(4, 6), rowptr, col, hidden_dim=5, out_dim=3)
    first = gcn.graph()
    gcn()
    assert gcn.graph() is first
    gcn.double()
    assert gcn.graph() is not first and gcn.graph().rowptr is gcn.rowptr


def test_label_gcn_rejects_malformed_graph():
    with pytest.raises(ValueError, match="col"):
        LabelGCN(torch.randn(4, 6), torch.tensor([0, 2, 3, 4, 4]), torch.tensor([1, 9, 0, 0]))


def test_label_gcn_weighted_graph_with_explicit_self_loops():
    # ML-GCN's re-weighted adjacency: self loops are weighted edges, so the op must not add I
    rowptr = torch.tensor([0, 3, 5, 7, 8])
    col = torch.tensor([0, 1, 2, 0, 1, 0, 2, 3])
    value = torch.tensor([0.8, 0.1, 0.1, 0.2, 0.8, 0.2, 0.8, 0.8])
    a = torch.zeros(4, 4, dtype=torch.float64)
    a[torch.repeat_interleave(torch.arange(4), rowptr.diff()), col] = value.double()
    dinv = a.sum(1).rsqrt()
    a_hat = dinv[:, None] * a * dinv[None, :]
    s0 = torch.randn(4, 6)
    gcn = LabelGCN(s0, rowptr, col, hidden_dim=5, out_dim=3, value=value, add_self_loops=False).double()
    assert not gcn.layer1.add_self_loops and not gcn.layer2.add_self_loops
    s1 = F.leaky_relu(a_hat @ s0.double() @ gcn.layer1.weight, 0.2)
    torch.testing.assert_close(gcn(), a_hat @ s1 @ gcn.layer2.weight)
    # the default adds I on top of the explicit loops: a different operator
    added = LabelGCN(s0, rowptr, col, hidden_dim=5, out_dim=3, value=value).double()
    added.load_state_dict(gcn.state_dict())
    assert not torch.allclose(added(), gcn())
