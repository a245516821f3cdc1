"""Using a trained checkpoint (``fact_fast.inference``), for the applications above it.

=================  ===================================================================================
``checkpoints``    the model, training configuration, dataset splits and loaders a checkpoint describes
``scoring``        a checkpoint's split scored and evaluated as the training run does; codebook use
``thresholds``     the decision thresholds a checkpoint stores and the rule ``score > threshold``
``inputs``         image files, folders, CSV listings and ``dataset:SPLIT`` as scorable items
``predictions``    scoring those items and writing one row per image (CSV or JSON)
``explain``        per-class heatmaps: FACT's own interface attention, else Grad-CAM
``export``         ONNX / TorchScript exports that run without fact_fast, checked against PyTorch
=================  ===================================================================================

Every loop over images is :func:`fact_fast.engine.loop.score_batches`, the one the training run
validates with.
"""
from .checkpoints import checkpoint_dataset, checkpoint_loader, config_of, load_trained_model
from .scoring import code_counts, evaluate_checkpoint, score_checkpoint_split
from .thresholds import THRESHOLD_CHOICES, available_thresholds, positive_calls, thresholds_of

__all__ = ["load_trained_model", "config_of", "checkpoint_dataset", "checkpoint_loader", "score_checkpoint_split",
           "evaluate_checkpoint", "code_counts", "THRESHOLD_CHOICES", "thresholds_of", "available_thresholds",
           "positive_calls"]
