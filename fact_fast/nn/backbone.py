"""timm backbone wrapper returning one feature map (docs/design.md §2.1)."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .trunks import register_trunks

__all__ = ["Backbone", "split_last_stage"]


class Backbone(nn.Module):
    """Any timm model created with ``features_only=True``; returns the feature map at ``out_index``.

    ``out_index=-1`` (default) is the last stage, e.g. ``[B, 2048, H/32, W/32]`` for resnet50.
    ``pretrained=True`` asks timm for ImageNet weights from its local Hugging Face cache;
    ``pretrained_file`` loads them from a file instead (``.safetensors``/``.pth`` as timm publishes
    them). fact_fast never needs them (random init otherwise) and never downloads them itself.
    Besides timm's own models, ``name`` may be one of :data:`fact_fast.nn.trunks.TRUNKS` (small CPU
    ResNets, e.g. ``fact_resnet_tiny``).
    """

    def __init__(self, name: str = "resnet50", pretrained: bool = False, out_index: int = -1,
                 in_chans: int = 3, pretrained_file: str | None = None, **timm_kwargs):
        super().__init__()
        import os

        import timm  # imported lazily: keeps `import fact_fast.nn` cheap

        register_trunks()  # fact_fast's own trunks, e.g. fact_resnet_tiny
        if pretrained_file is not None:
            if not os.path.isfile(pretrained_file):
                raise FileNotFoundError(f"pretrained_file: backbone weights not found: {pretrained_file}")
            timm_kwargs["pretrained_cfg_overlay"] = {"file": os.fspath(pretrained_file)}
            pretrained = True
        try:
            self.body = timm.create_model(name, pretrained=pretrained, features_only=True,
                                          out_indices=(out_index,), in_chans=in_chans, **timm_kwargs)
        except RuntimeError as exc:
            if "Unknown model" in str(exc) or "Unknown" in str(exc):
                raise ValueError(f"backbone {name!r} is not a timm model (see timm.list_models())") from exc
            if pretrained:
                raise RuntimeError(f"could not load pretrained weights for backbone {name!r} "
                                   f"({exc}); run without --pretrained or make the weights available "
                                   f"in the timm/Hugging Face cache") from exc
            raise
        except Exception as exc:
            if pretrained:
                raise RuntimeError(f"could not load pretrained weights for backbone {name!r} "
                                   f"({type(exc).__name__}: {exc}); run without --pretrained or make "
                                   f"the weights available in the timm/Hugging Face cache") from exc
            raise
        self.name = name
        self.out_channels = int(self.body.feature_info.channels()[-1])
        self.reduction = int(self.body.feature_info.reduction()[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[-1]


def split_last_stage(backbone: Backbone) -> tuple[nn.Sequential, nn.Sequential]:
    """``(shared, last)`` with ``last(shared(x)) == backbone(x)``: ``last`` holds the layers of the
    feature stage the backbone returns (its ``out_index``; ResNet at the default: ``layer4``),
    ``shared`` everything before it. The modules are the backbone's own (with its weights,
    pretrained or not), not copies.

    For multi-expert heads that give each expert its own last stage. Needs a trunk that timm
    runs as a plain sequence of layers (``FeatureListNet``: ResNets, ConvNeXts, EfficientNets...)
    with a feature stage before the returned one; raises ``ValueError`` naming the backbone otherwise.
    """
    body = backbone.body
    info = getattr(getattr(body, "feature_info", None), "info", None)
    if not isinstance(body, nn.ModuleDict) or type(body).__name__ != "FeatureListNet" or not info or len(info) < 2:
        raise ValueError(f"backbone {backbone.name!r}: split_last_stage needs a timm trunk run as a sequence of "
                         f"stages (FeatureListNet) with >= 2 feature stages, got {type(body).__name__}")
    names = list(body.keys())
    stages = [str(i["module"]).replace(".", "_") for i in info]
    # timm drops the layers after the returned stage, so the body ends with that stage
    if names[-1] not in stages or stages.index(names[-1]) < 1:
        raise ValueError(f"backbone {backbone.name!r}: its returned stage {names[-1]!r} has no feature stage "
                         f"before it (stages {stages})")
    boundary = stages[stages.index(names[-1]) - 1]
    if boundary not in names:
        raise ValueError(f"backbone {backbone.name!r}: stage {boundary!r} not found among its layers {names}")
    cut = names.index(boundary) + 1
    shared = nn.Sequential(OrderedDict((n, body[n]) for n in names[:cut]))
    last = nn.Sequential(OrderedDict((n, body[n]) for n in names[cut:]))
    return shared, last
