"""Which stages a run trains, and which stage's best checkpoint becomes ``best.pt``."""
from __future__ import annotations

import json
import math
import os
from dataclasses import replace

from fact_fast.config import TrainConfig
from fact_fast.data import MultiViewDataset
from fact_fast.models import MultiLabelModel, Stage
from fact_fast.utils import distributed as du
from fact_fast.utils.checkpoint import BEST, load_checkpoint

from .checkpoints import best_name, log
from .evaluation import jsonable

__all__ = ["selected_stages", "stage_candidates", "select_best"]


def selected_stages(model: MultiLabelModel, cfg: TrainConfig) -> list:
    """Indices of the model's stages this run trains: all, or ``cfg.stage``."""
    stages = model.stages()
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"model {cfg.model}: stage names must be unique, got {names}")
    if cfg.stage is None:
        return list(range(len(stages)))
    if cfg.stage not in names:
        raise ValueError(f"stage: model {cfg.model} has stages {names}, not {cfg.stage!r}")
    return [names.index(cfg.stage)]


def stage_candidates(out: str, stages: list[Stage], stage_indices: list[int]) -> list:
    """``(stage index, path)`` of every stage up to the last one this run trains whose
    ``best-<stage>.pt`` exists in ``out`` (a ``--stage`` run counts the earlier stages'
    checkpoints it started from)."""
    last = max(stage_indices)
    found = []
    for si, stage in enumerate(stages[:last + 1]):
        path = os.path.join(out, best_name(stage.name))
        if os.path.isfile(path):
            found.append((si, path))
    return found


def select_best(out: str, stages: list[Stage], stage_indices: list[int], select_metric: str, info: du.DistInfo,
                val_dataset=None) -> dict | None:
    """Write ``best.pt``: the stage checkpoint with the best validation ``select_metric`` (on a tie
    the later stage), and ``stages.json`` with every candidate's validation score. A later stage
    that does not reach an earlier one's validation score is reported in the log. Returns the
    ``stages.json`` report (None on other ranks or without candidates)."""
    if not info.is_main:
        du.barrier()
        return None
    candidates, ckpts = [], {}
    for si, path in stage_candidates(out, stages, stage_indices):
        ck = ckpts[si] = load_checkpoint(path)
        value = ck.best_metric
        candidates.append({"stage": stages[si].name, "stage_index": si, "checkpoint": os.path.basename(path),
                           "epoch": ck.epoch, "val": None if value is None else float(value),
                           "val_metrics": (ck.metrics or {}).get("val")})
    if not candidates:
        du.barrier()
        return None
    _warn_if_incomparable([ckpts[c["stage_index"]] for c in candidates], val_dataset, info)
    score = [(-math.inf if c["val"] is None or not math.isfinite(c["val"]) else c["val"], c["stage_index"])
             for c in candidates]
    chosen = candidates[max(range(len(candidates)), key=lambda k: score[k])]
    replace(ckpts[chosen["stage_index"]], path=None).save(os.path.join(out, BEST))
    report = {"select_metric": select_metric, "selected": chosen["stage"], "stages": candidates}
    with open(os.path.join(out, "stages.json"), "w") as fh:
        json.dump(jsonable(report), fh, indent=2)
    if len(candidates) > 1:
        scores = ", ".join(f"{c['stage']} {100 * c['val']:.2f}" if c["val"] is not None else f"{c['stage']} -"
                           for c in candidates)
        later = [c for c in candidates if c["stage_index"] > chosen["stage_index"]]
        why = (f"; the later stage(s) {', '.join(c['stage'] for c in later)} did not improve on it"
               if later else "")
        log(f"best.pt: stage {chosen['stage']} (epoch {chosen['epoch']}), chosen on validation {select_metric} "
            f"({scores}){why}", info)
    du.barrier()
    return report


def _warn_if_incomparable(ckpts: list, val_dataset, info: du.DistInfo) -> None:
    """Stages that score single images and stages that score studies (grouped views) of a
    per-image split measure different things; say so (a multi-view dataset, e.g. cxr_lt with
    ``fusion=study``, scores both per study)."""
    views = {bool(ck.eval_views) for ck in ckpts}
    if (len(views) > 1 and getattr(val_dataset, "study_ids", None) is not None
            and not isinstance(val_dataset, MultiViewDataset)):
        log("warning: the stages score the validation split differently (images in one, studies in another), "
            "so choosing best.pt between them compares unlike numbers; use the dataset's study-level form "
            "(e.g. --dataset-kwargs fusion=study for cxr_lt)", info)
