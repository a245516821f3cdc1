"""The end of a run: test metrics of ``best.pt`` and of each stage's best checkpoint."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from fact_fast.config import TrainConfig
from fact_fast.metrics import format_metrics_table
from fact_fast.models import Stage, model_from_spec
from fact_fast.utils import distributed as du
from fact_fast.utils.checkpoint import BEST, RunCheckpoint, load_checkpoint

from .checkpoints import log
from .evaluation import TEST_SCORES_FILE, compute_split_metrics, jsonable, save_scores
from .loop import score_loader
from .selection import stage_candidates

__all__ = ["evaluate_best"]


def evaluate_best(out: str, stages: list[Stage], stage_indices: list[int], *, cfg: TrainConfig, data,
                  info: du.DistInfo, device, test_loader: Callable[[Stage], object], progress: bool,
                  t0: float) -> tuple[dict | None, dict | None]:
    """Test metrics of ``out/best.pt`` (``metrics_test.json``, ``scores_test.npz``) and, for a
    multi-stage run, of every stage's best checkpoint (``metrics_test-<stage>.json``).
    ``test_loader(stage)`` is the test split as ``stage`` scores it. Returns
    ``(metrics of best.pt, {stage: metrics} or None)`` (None, None on other ranks)."""
    path = os.path.join(out, BEST)
    if not os.path.isfile(path):
        log("no best.pt to evaluate (no epoch finished)", info)
        return None, None
    best = load_checkpoint(path)
    candidates = stage_candidates(out, stages, stage_indices)
    per_stage: dict = {}
    chosen_metrics = None
    for si, stage_path in candidates if len(candidates) > 1 else [(best.stage_index, path)]:
        ck = best if si == best.stage_index else load_checkpoint(stage_path)
        metrics, scores, targets = _test_metrics(ck, stage_path if len(candidates) > 1 else path, stages, cfg=cfg,
                                                 data=data, info=info, device=device, test_loader=test_loader,
                                                 progress=progress, t0=t0)
        if metrics is None:
            continue
        if len(candidates) > 1:
            per_stage[stages[si].name] = metrics
            with open(os.path.join(out, f"metrics_test-{stages[si].name}.json"), "w") as fh:
                json.dump(jsonable(metrics), fh, indent=2)
        if si == best.stage_index:
            chosen_metrics = dict(metrics, checkpoint=path)
            save_scores(os.path.join(out, TEST_SCORES_FILE), scores, targets, data.class_names)
    if not info.is_main:
        return None, None
    metric = cfg.select_metric
    if per_stage:
        chosen_metrics["stage_val"] = {name: m.get("val_" + metric) for name, m in per_stage.items()}
        for name, m in per_stage.items():
            log(f"stage {name}: val {metric} {100 * (m.get('val_' + metric) or 0):.2f}, "
                f"test mAP {100 * (m.get('mAP') or 0):.2f}, macro AUC {100 * (m.get('macro_auc') or 0):.2f}", info)
    log(f"\ntest metrics of {path} (stage {best.stage}, epoch {best.epoch}):", info)
    log(format_metrics_table(chosen_metrics), info)
    with open(os.path.join(out, "metrics_test.json"), "w") as fh:
        json.dump(jsonable(chosen_metrics), fh, indent=2)
    return chosen_metrics, (per_stage or None)


def _test_metrics(ckpt: RunCheckpoint, path: str, stages: list[Stage], *, cfg: TrainConfig, data, info, device,
                  test_loader, progress: bool, t0: float):
    """``(metrics, scores float32 [N, C], targets float32 [N, C])`` of ``ckpt`` on the test split
    (None, None, None on other ranks)."""
    model = model_from_spec(ckpt.model_spec, ckpt.model).to(device)
    stage = stages[ckpt.stage_index]
    scores, targets = score_loader(model, test_loader(stage), info, amp=cfg.amp, views=stage.views,
                                   channels_last=cfg.channels_last, progress=progress, desc="test")
    if not info.is_main:
        return None, None, None
    metrics = compute_split_metrics(scores, targets, data, threshold=model.default_threshold)
    val = (ckpt.metrics or {}).get("val") or {}
    metrics.update({"checkpoint": path, "stage": ckpt.stage, "stage_index": ckpt.stage_index,
                    "epoch": ckpt.epoch, "split": "test", "dataset": cfg.dataset, "model": cfg.model,
                    **{f"val_{k}": v for k, v in val.items()},
                    "train_prevalence": dict(zip(data.class_names, data.task.prevalence.tolist())),
                    "train_seconds": time.time() - t0})
    return metrics, scores, targets
