"""The 1×1 projection's initialisations (fact_fast.nn.projection_1x1)."""
import pytest
import torch

from fact_fast.nn import PROJECTION_INITS, projection_1x1


@pytest.mark.parametrize("out_channels", [128, 48])
def test_orthogonal_projection_starts_with_orthonormal_rows_and_no_bias(out_channels):
    torch.manual_seed(0)
    conv = projection_1x1(128, out_channels, "orthogonal")
    w = conv.weight.detach().reshape(out_channels, 128)
    torch.testing.assert_close(w @ w.T, torch.eye(out_channels), atol=1e-5, rtol=0)
    assert torch.count_nonzero(conv.bias) == 0


def test_square_orthogonal_projection_keeps_every_position_norm():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 3, 5)
    y = projection_1x1(64, 64, "orthogonal")(x)
    torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1), atol=1e-4, rtol=1e-5)


def test_default_projection_is_pytorchs_and_shrinks_features():
    torch.manual_seed(0)
    conv = projection_1x1(256, 256)
    bound = 1 / 256 ** 0.5
    assert conv.weight.abs().max() <= bound and conv.bias.abs().max() <= bound
    x = torch.randn(8, 256, 4, 4)
    ratio = (conv(x).norm() / x.norm()).item()
    assert 0.45 < ratio < 0.7     # ≈ 1/√3 for U(−1/√D, 1/√D)


def test_identity_projection_returns_its_input_and_needs_equal_widths():
    x = torch.randn(2, 16, 3, 3)
    torch.testing.assert_close(projection_1x1(16, 16, "identity")(x), x)
    with pytest.raises(ValueError, match="identity"):
        projection_1x1(16, 8, "identity")


def test_unknown_init_is_refused():
    assert PROJECTION_INITS == ("default", "orthogonal", "identity")
    with pytest.raises(ValueError, match="projection init"):
        projection_1x1(8, 8, "xavier")
