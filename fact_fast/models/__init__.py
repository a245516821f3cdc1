"""Models (``fact_fast.models``): FACT and the baselines behind one protocol and one registry.

``create_model(name, task, **overrides)`` builds a registered model; ``list_models()`` lists them.
"""
from .base import (ModelOutput, MultiLabelModel, Stage, StageContext, TaskInfo, create_model, describe_models,
                   get_model_config, list_models, model_from_spec, model_spec, register_model)
from .chexfusion import CheXFusion, CheXFusionConfig
from .fact import FACT, FACTConfig
from .head_probe import HeadProbe, HeadProbeConfig
from .ldr import LDR, LDRConfig
from .mlgcn import MLGCN, MLGCNConfig
from .mlgcn_experts import MLGCNExperts, MLGCNExpertsConfig
from .pooled_linear import PooledLinearClassifier, PooledLinearConfig
from .proto_contrast import ProtoContrast, ProtoContrastConfig

__all__ = ["MultiLabelModel", "ModelOutput", "Stage", "StageContext", "TaskInfo", "create_model", "list_models",
           "describe_models", "get_model_config", "register_model", "model_spec", "model_from_spec",
           "FACT", "FACTConfig", "HeadProbe", "HeadProbeConfig", "PooledLinearClassifier", "PooledLinearConfig", "MLGCN", "MLGCNConfig",
           "MLGCNExperts", "MLGCNExpertsConfig", "LDR", "LDRConfig", "CheXFusion", "CheXFusionConfig",
           "ProtoContrast", "ProtoContrastConfig"]
