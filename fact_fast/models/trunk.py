"""The backbone fields shared by the baselines' configurations."""
from __future__ import annotations

from dataclasses import dataclass

from fact_fast.nn import Backbone

__all__ = ["TrunkConfig", "build_backbone", "check_number", "check_positive"]


@dataclass
class TrunkConfig:
    """``backbone``: a timm model name (the baselines' papers use ImageNet ResNets; the FACT
    paper compares on ResNet-50, hence the default). ``pretrained``: ImageNet weights from the
    local timm/Hugging Face cache (never downloaded by fact_fast); ``pretrained_file``: those
    weights from a file (implies ``pretrained``). ``--backbone fact_resnet_tiny`` is the small
    CPU trunk of ``fact_tiny`` and the bundled benchmark (:mod:`fact_fast.nn.trunks`); timm's
    ``test_resnet`` is smaller still, for smoke tests. ``out_index``: which stage's feature map the
    head sees (-1: the last; the bundled benchmark uses ``fact_resnet_tiny``'s stride-16 stage 3,
    like ``fact_tiny``)."""

    backbone: str = "resnet50"
    pretrained: bool = False
    pretrained_file: str | None = None
    out_index: int = -1


def build_backbone(cfg: TrunkConfig) -> Backbone:
    """The feature map of stage ``cfg.out_index`` of ``cfg.backbone`` (the last by default:
    ``[B, D, H/32, W/32]`` for ResNets)."""
    return Backbone(cfg.backbone, pretrained=cfg.pretrained, out_index=cfg.out_index,
                    pretrained_file=cfg.pretrained_file)


def check_number(cfg, name: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
                 high_open: bool = False, integer: bool = False, allow_none: bool = False) -> None:
    """Raise ``ValueError`` naming ``cfg.<name>`` unless it is a real number (an int when
    ``integer``) within ``low``/``high`` (inclusive unless ``*_open``), or None when ``allow_none``."""
    value = getattr(cfg, name)
    if value is None and allow_none:
        return
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool) and value == value
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        bounds = ([f"{'>' if low_open else '>='} {low}"] if low is not None else []) + \
                 ([f"{'<' if high_open else '<='} {high}"] if high is not None else [])
        raise ValueError(f"{type(cfg).__name__}.{name} must be {'an integer' if integer else 'a number'}"
                         f"{' ' + ' and '.join(bounds) if bounds else ''}{' or null' if allow_none else ''}, "
                         f"got {value!r}")


def check_positive(cfg, *names: str, integer: bool = False) -> None:
    """Raise ``ValueError`` naming the first field of ``cfg`` in ``names`` that is not > 0."""
    for name in names:
        check_number(cfg, name, low=0, low_open=True, integer=integer)
