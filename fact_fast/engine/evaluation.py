"""Metrics of a split and evaluation of a stored checkpoint (model-agnostic)."""
from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import torch

from fact_fast.config import TrainConfig
from fact_fast.models import MultiLabelModel, model_from_spec
from fact_fast.utils import distributed as du
from fact_fast.utils.checkpoint import CheckpointError, load_checkpoint

__all__ = ["compute_split_metrics", "jsonable", "load_trained_model", "evaluate_checkpoint", "config_of"]


def jsonable(x):
    """``x`` with numpy/torch values as plain Python and non-finite floats as None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def compute_split_metrics(scores: np.ndarray, targets: np.ndarray, data, threshold: float) -> dict:
    """``fact_fast.metrics.compute_metrics`` with the run's class names and frequency groups."""
    from fact_fast.metrics import compute_metrics

    return compute_metrics(scores, targets, threshold=threshold, class_names=data.class_names,
                           groups=data.groups)


def config_of(ckpt: dict) -> TrainConfig:
    """The TrainConfig stored in a checkpoint (unknown keys of other versions ignored)."""
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in ckpt.get("config", {}).items() if k in known})


def load_trained_model(path: str, device: str | torch.device = "cpu") -> tuple[MultiLabelModel, dict]:
    """(model in eval mode on ``device``, checkpoint dict) from a fact_fast checkpoint or run dir."""
    ckpt = load_checkpoint(path)
    if "model_spec" not in ckpt:
        raise CheckpointError(f"{ckpt['_path']} was written by an older fact_fast (no model_spec); retrain it")
    try:
        model = model_from_spec(ckpt["model_spec"], ckpt["model"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {ckpt['_path']} does not match its stored model specification: {exc}") from exc
    dev = du.resolve_device(device) if isinstance(device, str) else device
    return model.to(dev).eval(), ckpt


def evaluate_checkpoint(path: str, split: str = "test", *, batch_size: int | None = None, device: str = "auto",
                        data_root: str | None = None, workers: int = 0, progress: bool = False) -> dict:
    """Rebuild ``split`` of the checkpoint's dataset, score it and return the metrics dict."""
    from fact_fast.data import MultiViewDataset, build_dataset

    from .data import make_loader
    from .loop import score_loader

    model, ckpt = load_trained_model(path, device)
    cfg = config_of(ckpt)
    if data_root is not None:
        cfg.data_root = data_root
    ds = build_dataset(cfg.dataset, split, root=cfg.data_root, image_size=cfg.image_size, seed=cfg.seed,
                       train=False, pipeline=ckpt.get("preprocessing"), **dict(cfg.dataset_kwargs or {}))
    if list(ds.class_names) != list(ckpt["class_names"]):
        raise ValueError(f"{cfg.dataset} {split}: class names {list(ds.class_names)[:4]}... differ from the "
                         f"checkpoint's {list(ckpt['class_names'])[:4]}...")
    views = bool(ckpt.get("eval_views"))
    if views and not hasattr(ds, "members"):
        ids = ds.study_ids if ds.study_ids is not None else range(len(ds))
        # as many views per study as the stage that wrote the checkpoint was trained on
        stages = model.stages()
        index = ckpt.get("stage_index")
        max_views = stages[index].max_views if index is not None and 0 <= index < len(stages) else None
        ds = MultiViewDataset(ds, list(ids), max_views=max_views)
    device_ = next(model.parameters()).device
    loader = make_loader(ds, batch_size or cfg.eval_batch_size or 2 * cfg.batch_size, train=False,
                         info=du.DistInfo(device=device_), workers=workers, seed=cfg.seed, device=device_)
    scores, targets = score_loader(model, loader, amp=cfg.amp, views=views, progress=progress, desc=split)
    from fact_fast.metrics import compute_metrics

    metrics = compute_metrics(scores, targets, threshold=model.default_threshold,
                              class_names=ckpt["class_names"], groups=ckpt.get("groups"))
    metrics.update({"checkpoint": ckpt["_path"], "stage": ckpt.get("stage"), "epoch": ckpt.get("epoch"),
                    "split": split, "dataset": cfg.dataset, "model": cfg.model})
    return metrics
