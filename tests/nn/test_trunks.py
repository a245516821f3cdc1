"""fact_fast.nn.trunks: the small CPU ResNets are timm models like any other."""
import pytest
import torch

from fact_fast.nn import TRUNKS, Backbone, register_trunks, split_last_stage


def test_fact_resnet_tiny_shapes_and_size():
    bb = Backbone("fact_resnet_tiny", out_index=3)
    y = bb(torch.randn(2, 3, 64, 64))
    # the stage fact_tiny reads: stride 16, so 4 x 4 = 16 positions at 64 px, 128 channels
    assert y.shape == (2, 128, 4, 4) and bb.out_channels == 128 and bb.reduction == 16
    # deep stem 16 -> 32, BasicBlocks 1-2-2 of widths 32-64-128 (counted by hand in docs/benchmark.md)
    assert sum(p.numel() for p in bb.parameters()) == 683_312
    last = Backbone("fact_resnet_tiny")
    assert last(torch.randn(1, 3, 64, 64)).shape == (1, 128, 2, 2) and last.reduction == 32


def test_registration_is_idempotent_and_visible_to_timm():
    import timm

    register_trunks()
    register_trunks()
    for name in TRUNKS:
        assert timm.is_model(name)
    model = timm.create_model("fact_resnet_tiny", num_classes=5)  # a classifier, not only features
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 5)
    # the trunk's own arguments can still be overridden, as for any timm ResNet
    assert timm.create_model("fact_resnet_tiny", channels=(16, 16, 16, 16), num_classes=0).num_features == 16


def test_no_pretrained_weights_is_a_clear_error():
    with pytest.raises(RuntimeError, match="fact_resnet_tiny.*no pretrained weights"):
        Backbone("fact_resnet_tiny", pretrained=True)


def test_experts_can_split_its_last_stage():
    torch.manual_seed(0)
    bb = Backbone("fact_resnet_tiny").eval()
    shared, last = split_last_stage(bb)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(last(shared(x)), bb(x))
    assert list(last._modules) == ["layer4"]
