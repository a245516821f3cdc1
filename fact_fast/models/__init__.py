"""FACT models (``fact_fast.models``) assembled from ``fact_fast.nn``."""
from .fact import (FACT, FACTConfig, FACTOutput, create_model, get_model_config, list_models,
                   register_model)

__all__ = ["FACT", "FACTConfig", "FACTOutput", "create_model", "get_model_config", "list_models",
           "register_model"]
