"""A training run's checkpoints: what one holds, resuming from one, and the run log it must agree with.

The file format is :class:`fact_fast.utils.checkpoint.RunCheckpoint`'s; this module fills it from a
run's state and reads it back into one.
"""
from __future__ import annotations

import json
import os

import torch

from fact_fast.config import TrainConfig, config_from_dict
from fact_fast.models import Stage, model_spec
from fact_fast.utils import distributed as du
from fact_fast.utils.checkpoint import (LAST, SCHEMA_VERSION, CheckpointError, RunCheckpoint, capture_rng_state,
                                        find_latest, load_checkpoint)

__all__ = ["log", "best_name", "RESUMABLE_OVERRIDES", "resolve_resume", "truncate_log", "build_checkpoint"]

# Options that may differ from the checkpointed run when resuming (everything else is restored).
RESUMABLE_OVERRIDES = {"epochs", "device", "backend", "workers", "threads", "progress", "nvtx", "eval_test",
                       "max_steps", "data_root", "eval_batch_size", "out", "compile", "cache_dir", "logger"}


def log(msg: str, info: du.DistInfo | None = None) -> None:
    """Print on the main process only."""
    if info is None or info.is_main:
        print(msg, flush=True)


def best_name(stage: str) -> str:
    """File name of a stage's best checkpoint."""
    return f"best-{stage}.pt"


def resolve_resume(cfg: TrainConfig, explicit: set, info: du.DistInfo) -> tuple[TrainConfig, RunCheckpoint | None]:
    """(config, checkpoint or None): the stored configuration wins except RESUMABLE_OVERRIDES."""
    path = None
    if cfg.resume and cfg.resume != "auto":
        path = cfg.resume
    elif cfg.resume == "auto":
        if cfg.out and os.path.isfile(os.path.join(cfg.out, LAST)):
            path = os.path.join(cfg.out, LAST)
        elif not cfg.out:
            path = find_latest("runs", LAST)
        if path is None:
            log("--resume auto: no checkpoint found, starting a new run", info)
    if path is None:
        return cfg, None
    ckpt = load_checkpoint(path)
    if ckpt.file_version != SCHEMA_VERSION:
        raise CheckpointError(f"{ckpt.path}: checkpoint version {ckpt.file_version} cannot be resumed by this "
                              f"fact_fast (version {SCHEMA_VERSION}); start a new run")
    restored = dict(ckpt.config)
    for k in explicit & RESUMABLE_OVERRIDES:
        restored[k] = getattr(cfg, k)
    restored["resume"] = cfg.resume
    cfg = config_from_dict(restored)
    if "out" not in explicit:
        cfg.out = os.path.dirname(os.path.abspath(ckpt.path))
    log(f"resuming from {ckpt.path} (stage {ckpt.stage}, completed epochs {ckpt.epoch}, step {ckpt.step})", info)
    return cfg, ckpt


def truncate_log(path: str, stage_index: int, epoch: int) -> None:
    """Drop metrics.jsonl lines written after the checkpoint being resumed (a crash between the
    checkpoint and the next one leaves them behind)."""
    if not os.path.isfile(path):
        return
    with open(path) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    keep = [r for r in rows if (r.get("stage_index", 0), r["epoch"]) <= (stage_index, epoch)]
    if len(keep) != len(rows):
        with open(path, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in keep)


def build_checkpoint(model, ema, stage: Stage, si: int, *, epoch: int, step: int, best: float, optimizer, scheduler,
                     metrics: dict, cfg: TrainConfig, data, thresholds: dict | None = None,
                     evaluated_weights: bool = False) -> RunCheckpoint:
    """The checkpoint of stage ``si`` after ``epoch`` completed epochs and ``step`` optimizer steps.
    ``evaluated_weights`` (a best checkpoint): store the weights that were validated (the EMA's when
    there is one) and no separate EMA; otherwise the training weights and the EMA to resume."""
    weights = ema.module.state_dict() if (evaluated_weights and ema is not None) else model.state_dict()
    return RunCheckpoint(
        model=weights,
        ema=ema.module.state_dict() if (ema is not None and not evaluated_weights) else None,
        model_spec=model_spec(model),
        training_state=model.training_state(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        stage=stage.name,
        stage_index=si,
        eval_views=stage.views,
        epoch=epoch,
        step=step,
        best_metric=best,
        select_metric=cfg.select_metric,
        metrics=metrics,
        config=cfg.to_dict(),
        class_names=data.class_names,
        preprocessing=data.pipeline,
        groups=data.groups,
        train_prevalence=data.task.prevalence.tolist(),
        label_graph=data.graph_report,
        default_threshold=model.default_threshold,
        thresholds=thresholds,
        rng=capture_rng_state(),
        torch_version=torch.__version__,
    )
