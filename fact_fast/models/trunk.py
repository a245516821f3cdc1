"""The backbone fields shared by the baselines' configurations."""
from __future__ import annotations

from dataclasses import dataclass

from fact_fast.nn import Backbone

__all__ = ["TrunkConfig", "build_backbone", "check_positive"]


@dataclass
class TrunkConfig:
    """``backbone``: a timm model name (the baselines' papers use ImageNet ResNets; the FACT
    paper compares on ResNet-50, hence the default). ``pretrained``: ImageNet weights from the
    local timm/Hugging Face cache (never downloaded by fact_fast); ``pretrained_file``: those
    weights from a file (implies ``pretrained``). ``--backbone test_resnet`` gives timm's tiny
    CPU trunk for smoke tests and the CPU benchmark."""

    backbone: str = "resnet50"
    pretrained: bool = False
    pretrained_file: str | None = None


def build_backbone(cfg: TrunkConfig) -> Backbone:
    """The last-stage feature map of ``cfg.backbone`` (``[B, D, H/32, W/32]`` for ResNets)."""
    return Backbone(cfg.backbone, pretrained=cfg.pretrained, out_index=-1, pretrained_file=cfg.pretrained_file)


def check_positive(cfg, *names: str) -> None:
    """Raise ``ValueError`` naming the first field of ``cfg`` in ``names`` that is not > 0."""
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not value > 0:
            raise ValueError(f"{type(cfg).__name__}.{name} must be positive, got {value!r}")
