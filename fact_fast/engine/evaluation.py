"""Metrics of a split and evaluation of a stored checkpoint (model-agnostic)."""
from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import torch

from fact_fast.config import TrainConfig
from fact_fast.models import MultiLabelModel, Stage, model_from_spec
from fact_fast.utils import distributed as du
from fact_fast.utils.checkpoint import CheckpointError, load_checkpoint

__all__ = ["compute_split_metrics", "jsonable", "load_trained_model", "evaluate_checkpoint", "config_of",
           "checkpoint_dataset", "score_checkpoint_split", "save_scores", "load_scores", "TEST_SCORES_FILE"]


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


TEST_SCORES_FILE = "scores_test.npz"


def save_scores(path: str, scores: np.ndarray, targets: np.ndarray, class_names) -> None:
    """``scores`` / ``targets`` float32 ``[N, C]`` and the class names as an ``.npz`` (no pickles)."""
    np.savez(path, scores=np.asarray(scores, np.float32), targets=np.asarray(targets, np.float32),
             class_names=np.array([str(c) for c in class_names]))


def load_scores(path: str) -> tuple[np.ndarray, np.ndarray, list]:
    """(scores, targets, class names) written by :func:`save_scores`."""
    with np.load(path, allow_pickle=False) as z:
        scores, targets, names = z["scores"], z["targets"], [str(c) for c in z["class_names"]]
    if scores.shape != targets.shape or scores.ndim != 2 or scores.shape[1] != len(names):
        raise ValueError(f"{path}: scores {list(scores.shape)}, targets {list(targets.shape)} and "
                         f"{len(names)} class names do not fit together")
    return scores, targets, names


def checkpoint_dataset(ckpt: dict, split: str, data_root: str | None = None):
    """The checkpoint's dataset ``split`` through its eval preprocessing (``data_root`` overrides
    the stored root). Raises ValueError when that split's class list differs from the checkpoint's
    (e.g. a data root that now holds another label set)."""
    from fact_fast.data import build_dataset

    cfg = config_of(ckpt)
    ds = build_dataset(cfg.dataset, split, root=data_root or cfg.data_root, image_size=cfg.image_size,
                       seed=cfg.seed, train=False, pipeline=ckpt.get("preprocessing"),
                       **dict(cfg.dataset_kwargs or {}))
    if list(ds.class_names) != list(ckpt["class_names"]):
        ours, theirs = list(ckpt["class_names"]), list(ds.class_names)
        raise ValueError(f"{cfg.dataset} {split} (data root {data_root or cfg.data_root!r}): its classes do not "
                         f"match the checkpoint's; missing {[c for c in ours if c not in theirs]}, unexpected "
                         f"{[c for c in theirs if c not in ours]}" + (", different order" if sorted(ours) ==
                                                                      sorted(theirs) else ""))
    return ds


def score_checkpoint_split(model: MultiLabelModel, ckpt: dict, split: str = "test", *,
                           batch_size: int | None = None, data_root: str | None = None, workers: int = 0,
                           progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Scores and targets float32 ``[N, C]`` (NaN = unknown) of ``model`` on the checkpoint's
    ``split``, as the training run scores it (multi-view fusion when the checkpoint says so)."""
    from .data import make_loader, stage_dataset
    from .loop import score_loader

    cfg = config_of(ckpt)
    ds = checkpoint_dataset(ckpt, split, data_root)
    views = bool(ckpt.get("eval_views"))
    if views:
        # grouped as the stage that wrote the checkpoint saw its studies (its max_views)
        stages, index = model.stages(), ckpt.get("stage_index")
        ds = stage_dataset(ds, stages[index] if index is not None and 0 <= index < len(stages) else Stage(views=True))
    device = next(model.parameters()).device
    loader = make_loader(ds, batch_size or cfg.eval_batch_size or 2 * cfg.batch_size, train=False,
                         info=du.DistInfo(device=device), workers=workers, seed=cfg.seed, device=device)
    return score_loader(model, loader, amp=cfg.amp, views=views, progress=progress, desc=split)


def evaluate_checkpoint(path: str, split: str = "test", *, batch_size: int | None = None, device: str = "auto",
                        data_root: str | None = None, workers: int = 0, progress: bool = False) -> dict:
    """Rebuild ``split`` of the checkpoint's dataset, score it and return the metrics dict."""
    from fact_fast.metrics import compute_metrics

    model, ckpt = load_trained_model(path, device)
    cfg = config_of(ckpt)
    scores, targets = score_checkpoint_split(model, ckpt, split, batch_size=batch_size, data_root=data_root,
                                             workers=workers, progress=progress)
    metrics = compute_metrics(scores, targets, threshold=model.default_threshold,
                              class_names=ckpt["class_names"], groups=ckpt.get("groups"))
    metrics.update({"checkpoint": ckpt["_path"], "stage": ckpt.get("stage"), "epoch": ckpt.get("epoch"),
                    "split": split, "dataset": cfg.dataset, "model": cfg.model})
    return metrics
