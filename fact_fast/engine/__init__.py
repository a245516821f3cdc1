"""The training engine (``fact_fast.engine``): one loop for every registered model.

Layering: uses ``fact_fast.models``, ``fact_fast.data`` and ``fact_fast.metrics``; the CLIs
(``train``, ``evaluate``, ``predict``...) are thin faces over it.
"""
from .data import ClassAwareSampler, RunData, build_run_data, make_loader
from .evaluation import config_of, evaluate_checkpoint, jsonable, load_trained_model
from .loop import fuse_views, score_loader, train_one_epoch
from .trainer import CHECKPOINT_VERSION, fit, fit_seeds

__all__ = ["fit", "fit_seeds", "evaluate_checkpoint", "load_trained_model", "config_of", "score_loader",
           "train_one_epoch", "fuse_views", "build_run_data", "RunData", "make_loader", "ClassAwareSampler",
           "jsonable", "CHECKPOINT_VERSION"]
