"""ML-GCN (Chen et al., "Multi-Label Image Recognition with Graph Convolutional Networks", CVPR'19)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fact_fast.nn import GlobalPool, LabelGCN, multilabel_soft_margin_loss
from fact_fast.nn.pooling import POOLINGS

from .base import ModelOutput, MultiLabelModel, TaskInfo, register_model
from .trunk import TrunkConfig, build_backbone, check_number, check_positive

__all__ = ["MLGCNConfig", "MLGCN", "label_gcn_for"]


@dataclass
class MLGCNConfig(TrunkConfig):
    """Hyper-parameters; defaults from the ML-GCN paper (Sec. 4, "Implementation details") and its
    released code (megvii-research/ML-GCN ``models.py``):

    * ``gcn_hidden`` = 1024: the first GCN layer's output width ("two GCN layers with output
      dimensionality of 1024 and 2048"); the second layer's width is the backbone's feature width
      (2048 for ResNet-101/50), so each class gets a classifier of that width.
    * ``gcn_negative_slope`` = 0.2: LeakyReLU between the two GCN layers.
    * ``pooling`` = ``"max"``: global max pooling of the last feature map (``nn.MaxPool2d(14, 14)``
      on the 448-px input's 14×14 map in the code).

    The label graph is not a model option: the engine builds it from the train labels
    (``--graph reweighted --graph-threshold 0.4`` for the paper's binarised, re-weighted
    adjacency, τ = 0.4, p = 0.2) and the model uses ``TaskInfo.graph`` as given.
    The paper's trunk is ResNet-101 (``--backbone resnet101``); fact_fast's comparison uses ResNet-50.
    """

    gcn_hidden: int = 1024
    gcn_negative_slope: float = 0.2
    pooling: str = "max"

    def __post_init__(self):
        check_positive(self, "gcn_hidden", integer=True)
        check_number(self, "gcn_negative_slope", low=0.0)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")


def label_gcn_for(task: TaskInfo, hidden: int, out_dim: int, negative_slope: float, model: str) -> LabelGCN:
    """The two-layer :class:`~fact_fast.nn.LabelGCN` over ``task``'s label embeddings and label graph."""
    if task.label_embeddings is None or task.graph is None:
        raise ValueError(f"{model} needs task.label_embeddings [C, D] and task.graph (the label graph); "
                         f"got {'no embeddings' if task.label_embeddings is None else 'no graph'}")
    g = task.graph
    return LabelGCN(task.label_embeddings, g["rowptr"], g["col"], hidden_dim=hidden, out_dim=out_dim,
                    value=g.get("value"), negative_slope=negative_slope, add_self_loops=g.get("add_self_loops", True))


class MLGCN(MultiLabelModel):
    """Image branch: backbone → global max pooling → ``x [B, D]``. Label branch: a two-layer GCN over
    the label embeddings and the label graph (``ops.gcn_propagate``) → classifiers ``W [C, D]``.
    Logits ``z = x Wᵀ``; trained with the multi-label soft-margin loss.

    ``forward(images [B, 3, H, W]) -> ModelOutput(scores=σ(z) [B, C], logits=z [B, C],
    extras={"features": x [B, D], "classifiers": W [C, D]})``.
    """

    config_class = MLGCNConfig

    def __init__(self, config: MLGCNConfig, task: TaskInfo):
        super().__init__(config, task)
        c = self.config
        self.backbone = build_backbone(c)
        self.pool = GlobalPool(c.pooling)
        self.gcn = label_gcn_for(task, c.gcn_hidden, self.backbone.out_channels, c.gcn_negative_slope, "mlgcn")

    def forward(self, images: torch.Tensor, view_mask: torch.Tensor | None = None) -> ModelOutput:
        features = self.pool(self.backbone(images))
        classifiers = self.gcn()
        logits = features @ classifiers.to(features.dtype).t()
        return ModelOutput(torch.sigmoid(logits), logits, {"features": features, "classifiers": classifiers})

    def loss(self, output: ModelOutput, targets: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        value = multilabel_soft_margin_loss(output.logits, targets, mask)
        return {"total": value, "soft_margin": value.detach()}


register_model("mlgcn", MLGCN, description="ML-GCN (Chen et al., CVPR'19): GCN classifiers over label "
                                           "embeddings; run with --graph reweighted")
