"""Small ResNet trunks for CPU training, registered in timm's model registry.

timm's own ``test_resnet`` (0.1 M parameters) is a smoke-test model: on the bundled ``synthetic``
benchmark a CNN on it is barely better than a linear probe on the pixels (docs/benchmark.md,
"Choosing the trunk"). ``fact_resnet_tiny`` spends its extra parameters after the stem, where
the feature maps are small, so it costs little more per image (measured ratios in
docs/benchmark.md). Registering it with timm means every consumer of a backbone name
(``--backbone``, :class:`fact_fast.nn.Backbone`, ``features_only``, Grad-CAM, export) takes it
like any timm model.
"""
from __future__ import annotations

__all__ = ["TRUNKS", "register_trunks"]

#: name -> (description, timm ``ResNet`` keyword arguments; the block type is always BasicBlock)
TRUNKS: dict[str, tuple[str, dict]] = {
    "fact_resnet_tiny": (
        "ResNet with a deep stem of width 16 and BasicBlock stages of depth 1-2-2-1, widths "
        "32-64-128-128 (stride 16 after stage 3: 4 x 4 positions at 64 px; 0.68 M parameters up to it)",
        dict(layers=(1, 2, 2, 1), channels=(32, 64, 128, 128), stem_width=16, stem_type="deep", avg_down=True),
    ),
}

_registered = False


def register_trunks() -> None:
    """Add :data:`TRUNKS` to timm's registry (idempotent; no pretrained weights exist for them)."""
    global _registered
    if _registered:
        return
    from timm.models import build_model_with_cfg, register_model
    from timm.models.resnet import BasicBlock, ResNet

    for name, (description, args) in TRUNKS.items():
        def build(pretrained: bool = False, _name: str = name, _args: dict = args, **kwargs) -> ResNet:
            if pretrained:
                raise ValueError(f"backbone {_name!r} has no pretrained weights; train it from scratch")
            kwargs["pretrained_cfg"] = kwargs.get("pretrained_cfg") or {
                "architecture": _name, "first_conv": "conv1.0", "classifier": "fc", "input_size": (3, 64, 64)}
            return build_model_with_cfg(ResNet, _name, False, **dict(_args, block=BasicBlock, **kwargs))

        build.__name__ = name
        build.__doc__ = description
        build.__module__ = __name__
        register_model(build)
    _registered = True
