"""A checkpoint's dataset split scored as the training run scores it, its metrics, its codebook use."""
from __future__ import annotations

import numpy as np
import torch

from fact_fast.engine.loop import score_batches, score_loader
from fact_fast.metrics import compute_metrics
from fact_fast.models import MultiLabelModel
from fact_fast.utils.checkpoint import RunCheckpoint

from .checkpoints import checkpoint_loader, config_of, load_trained_model

__all__ = ["score_checkpoint_split", "evaluate_checkpoint", "code_counts"]


def score_checkpoint_split(model: MultiLabelModel, ckpt: RunCheckpoint, split: str = "test", *,
                           batch_size: int | None = None, data_root: str | None = None, workers: int = 0,
                           progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Scores and targets float32 ``[N, C]`` (NaN = unknown) of ``model`` on the checkpoint's
    ``split``, as the training run scores it (its AMP setting; multi-view fusion when the
    checkpoint says so)."""
    views = bool(ckpt.eval_views)
    loader = checkpoint_loader(model, ckpt, split, views=views, batch_size=batch_size, data_root=data_root,
                               workers=workers)
    return score_loader(model, loader, amp=config_of(ckpt).amp, views=views, progress=progress, desc=split)


def evaluate_checkpoint(path: str, split: str = "test", *, batch_size: int | None = None,
                        device: str | torch.device = "auto", data_root: str | None = None, workers: int = 0,
                        progress: bool = False) -> dict:
    """Rebuild ``split`` of the checkpoint's dataset, score it and return the metrics dict (with
    the checkpoint, stage, epoch, split, dataset and model it describes)."""
    model, ckpt = load_trained_model(path, device)
    cfg = config_of(ckpt)
    scores, targets = score_checkpoint_split(model, ckpt, split, batch_size=batch_size, data_root=data_root,
                                             workers=workers, progress=progress)
    metrics = compute_metrics(scores, targets, threshold=model.default_threshold,
                              class_names=ckpt.class_names, groups=ckpt.groups)
    metrics.update({"checkpoint": ckpt.path, "stage": ckpt.stage, "epoch": ckpt.epoch,
                    "split": split, "dataset": cfg.dataset, "model": cfg.model})
    return metrics


def code_counts(model: MultiLabelModel, ckpt: RunCheckpoint, *, batch_size: int | None = None,
                data_root: str | None = None, workers: int = 0, progress: bool = False) -> np.ndarray | None:
    """How often each codebook atom is chosen over the checkpoint's test split, int64 ``[K]``,
    from ``model(images).extras["codes"]`` of every image (each view of a multi-view item, in
    full precision); None when the model returns no codes. K is the model config's
    ``codebook_size`` (else the largest index + 1)."""
    loader = checkpoint_loader(model, ckpt, "test", views=False, batch_size=batch_size, data_root=data_root,
                               workers=workers)
    chunks = []
    for scored in score_batches(model, loader, progress=progress, desc="codes", extras=("codes",)):
        codes = scored.extras["codes"]
        if codes is None:
            return None
        chunks.append(codes.reshape(-1).cpu().numpy().astype(np.int64))
    if not chunks:
        return None
    codes = np.concatenate(chunks)
    k = ckpt.model_spec.get("config", {}).get("codebook_size") or int(codes.max()) + 1
    return np.bincount(codes, minlength=int(k))
