"""The training engine (``fact_fast.engine``): one loop for every registered model.

Layering: uses ``fact_fast.models``, ``fact_fast.data`` and ``fact_fast.metrics``; what uses a
trained checkpoint is :mod:`fact_fast.inference`, above it, and the CLIs (``train``,
``evaluate``, ``predict``...) are thin faces over both.
"""
from .data import ClassAwareSampler, RunData, build_run_data, make_loader
from .evaluation import TEST_SCORES_FILE, jsonable, load_scores, save_scores
from .loop import ScoredBatch, fuse_views, score_batches, score_loader, train_one_epoch
from .seeds import fit_seeds
from .trainer import fit

__all__ = ["fit", "fit_seeds", "score_batches", "score_loader", "ScoredBatch", "train_one_epoch", "fuse_views",
           "build_run_data", "RunData", "make_loader", "ClassAwareSampler", "jsonable",
           "save_scores", "load_scores", "TEST_SCORES_FILE"]
