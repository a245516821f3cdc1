"""What a trained checkpoint describes: its model, training configuration, dataset splits and loaders."""
from __future__ import annotations

import torch

from fact_fast.config import TrainConfig, config_from_dict
from fact_fast.data import build_dataset
from fact_fast.engine.data import make_loader, stage_dataset
from fact_fast.models import MultiLabelModel, Stage, model_from_spec
from fact_fast.utils import distributed as du
from fact_fast.utils.checkpoint import CheckpointError, RunCheckpoint, load_checkpoint

__all__ = ["config_of", "load_trained_model", "checkpoint_dataset", "checkpoint_loader"]


def config_of(ckpt: RunCheckpoint) -> TrainConfig:
    """The TrainConfig stored in a checkpoint (see :func:`fact_fast.config.config_from_dict`)."""
    return config_from_dict(ckpt.config)


def load_trained_model(path: str, device: str | torch.device = "cpu") -> tuple[MultiLabelModel, RunCheckpoint]:
    """(model in eval mode on ``device``, its checkpoint) from a fact_fast checkpoint or run dir."""
    ckpt = load_checkpoint(path)
    try:
        model = model_from_spec(ckpt.model_spec, ckpt.model)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {ckpt.path} does not match its stored model specification: "
                              f"{exc}") from exc
    dev = du.resolve_device(device) if isinstance(device, str) else device
    return model.to(dev).eval(), ckpt


def checkpoint_dataset(ckpt: dict, split: str, data_root: str | None = None):
    """The checkpoint's dataset ``split`` through its eval preprocessing (``data_root`` overrides
    the stored root). Raises ValueError when that split's class list differs from the checkpoint's
    (e.g. a data root that now holds another label set)."""
    cfg = config_of(ckpt)
    ds = build_dataset(cfg.dataset, split, root=data_root or cfg.data_root, image_size=cfg.image_size,
                       seed=cfg.seed, train=False, pipeline=ckpt.preprocessing,
                       **dict(cfg.dataset_kwargs or {}))
    if list(ds.class_names) != list(ckpt.class_names):
        ours, theirs = list(ckpt.class_names), list(ds.class_names)
        raise ValueError(f"{cfg.dataset} {split} (data root {data_root or cfg.data_root!r}): its classes do not "
                         f"match the checkpoint's; missing {[c for c in ours if c not in theirs]}, unexpected "
                         f"{[c for c in theirs if c not in ours]}" + (", different order" if sorted(ours) ==
                                                                      sorted(theirs) else ""))
    return ds


def checkpoint_loader(model: MultiLabelModel, ckpt: dict, split: str, *, views: bool, batch_size: int | None = None,
                      data_root: str | None = None, workers: int = 0):
    """A DataLoader over the checkpoint's ``split`` (eval transform, in dataset order) on the
    model's device, at ``batch_size`` (default: the run's evaluation batch size). With ``views``
    the images are grouped into multi-view items as the stage that wrote the checkpoint grouped
    them (its ``max_views``)."""
    cfg = config_of(ckpt)
    ds = checkpoint_dataset(ckpt, split, data_root)
    if views:
        stages, index = model.stages(), ckpt.stage_index
        ds = stage_dataset(ds, stages[index] if index is not None and 0 <= index < len(stages) else Stage(views=True))
    device = next(model.parameters()).device
    return make_loader(ds, batch_size or cfg.eval_batch_size or 2 * cfg.batch_size, train=False,
                       info=du.DistInfo(device=device), workers=workers, seed=cfg.seed, device=device)
