"""FACT building blocks (``fact_fast.nn``): every heavy computation goes through ``fact_fast.ops``.

Layering: imports ``fact_fast.ops`` and torch/timm only.
"""
from .backbone import Backbone, split_last_stage
from .classification_losses import (CLASSIFICATION_LOSSES, asymmetric_loss, bce_loss, focal_loss,
                                    generalized_cross_entropy_loss, multilabel_soft_margin_loss,
                                    prototype_contrastive_loss, ride_diversity_loss, weighted_asymmetric_loss,
                                    jensen_shannon_diversity_loss)
from .gcn import GraphConv, LabelGCN
from .heads import PROJECTION_INITS, GroupWiseLinear, MLDecoder, projection_1x1
from .interface import SemanticInterface
from .losses import FACTLoss, LOSSES, fuzzy_loss_from_membership
from .membership import KERNELS, FuzzyMembership
from .modes import bn_stats_preserved, set_train_mode
from .pooling import POOLINGS, GlobalPool, global_pool
from .positional import sinusoidal_position_2d
from .profiling import enable_nvtx, nvtx_enabled, stage
from .transformer import ATTENTIONS, CrossAttentionLayer, MultiHeadAttention, TransformerEncoderLayer
from .trunks import TRUNKS, register_trunks
from .vq import VectorQuantizer

__all__ = [
    "Backbone", "TRUNKS", "register_trunks", "VectorQuantizer", "GraphConv", "LabelGCN", "SemanticInterface",
    "FuzzyMembership",
    "FACTLoss", "fuzzy_loss_from_membership", "KERNELS", "LOSSES", "enable_nvtx", "nvtx_enabled", "stage",
    "set_train_mode", "bn_stats_preserved",
    "split_last_stage", "GlobalPool", "global_pool", "POOLINGS", "MultiHeadAttention", "TransformerEncoderLayer",
    "CrossAttentionLayer", "ATTENTIONS", "GroupWiseLinear", "MLDecoder", "sinusoidal_position_2d",
    "projection_1x1", "PROJECTION_INITS",
    "CLASSIFICATION_LOSSES", "bce_loss", "asymmetric_loss", "weighted_asymmetric_loss", "focal_loss",
    "generalized_cross_entropy_loss", "multilabel_soft_margin_loss", "ride_diversity_loss",
    "jensen_shannon_diversity_loss",
    "prototype_contrastive_loss",
]
