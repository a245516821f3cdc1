"""The training engine (``fact_fast.engine``): one loop for every registered model.

Layering: uses ``fact_fast.models``, ``fact_fast.data`` and ``fact_fast.metrics``; the CLIs
(``train``, ``evaluate``, ``predict``...) are thin faces over it.
"""
from .data import ClassAwareSampler, RunData, build_run_data, make_loader
from .evaluation import (TEST_SCORES_FILE, checkpoint_dataset, config_of, evaluate_checkpoint, jsonable,
                         load_scores, load_trained_model, save_scores, score_checkpoint_split)
from .loop import fuse_views, score_loader, train_one_epoch
from .trainer import CHECKPOINT_VERSION, fit, fit_seeds

__all__ = ["fit", "fit_seeds", "evaluate_checkpoint", "load_trained_model", "config_of", "score_loader",
           "train_one_epoch", "fuse_views", "build_run_data", "RunData", "make_loader", "ClassAwareSampler",
           "jsonable", "CHECKPOINT_VERSION", "checkpoint_dataset", "score_checkpoint_split",
           "save_scores", "load_scores", "TEST_SCORES_FILE"]
