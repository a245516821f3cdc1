"""The training engine: stages × epochs for any registered model, with atomic checkpoints,
bit-exact resume, DDP, AMP, EMA, per-epoch validation and a final test evaluation.

Output directory of a run::

    config.json          resolved TrainConfig + the label graph report + the dataset skip lists
    metrics.jsonl        one JSON line per epoch (stage, epoch, losses, val metrics, model stats)
    last.pt              the latest state (atomic; what --resume continues)
    best-<stage>.pt      best validation epoch of each stage
    best.pt              the stage checkpoint with the best validation score (what evaluate/predict
                         use; on a tie the later stage); stages.json says which and why
    metrics_test.json    test metrics of best.pt (with every stage's validation score)
    metrics_test-<stage>.json   test metrics of each stage's best-<stage>.pt (multi-stage models)
    scores_test.npz      test scores and targets of best.pt (what ``fact_fast.report`` draws)
    tensorboard/, wandb/, mlruns/   with ``--logger`` (:mod:`fact_fast.engine.loggers`)
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from dataclasses import fields, replace

import numpy as np
import torch

from fact_fast.config import TrainConfig, model_overrides
from fact_fast.data import MultiViewDataset
from fact_fast.models import (MultiLabelModel, Stage, StageContext, create_model, model_from_spec,
                              model_spec)
from fact_fast.nn.profiling import enable_nvtx
from fact_fast.utils import distributed as du
from fact_fast.utils.checkpoint import (BEST, LAST, atomic_save, capture_rng_state, find_latest,
                                        load_checkpoint, restore_rng_state)

from .data import RunData, build_run_data, make_loader, set_loader_epoch, split_batch, stage_dataset
from .evaluation import TEST_SCORES_FILE, compute_split_metrics, jsonable, save_scores
from .loggers import open_loggers
from .loop import autocast_for, score_loader, train_one_epoch
from .optim import build_optimizer, cosine_warmup_lambda

__all__ = ["fit", "CHECKPOINT_VERSION", "RESUMABLE_OVERRIDES"]

CHECKPOINT_VERSION = 2
# Options that may differ from the checkpointed run when resuming (everything else is restored).
RESUMABLE_OVERRIDES = {"epochs", "device", "backend", "workers", "threads", "progress", "nvtx", "eval_test",
                       "max_steps", "data_root", "eval_batch_size", "out", "compile", "cache_dir", "logger"}


def log(msg: str, info: du.DistInfo | None = None) -> None:
    if info is None or info.is_main:
        print(msg, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def best_name(stage: str) -> str:
    return f"best-{stage}.pt"


def _resolve_resume(cfg: TrainConfig, explicit: set, info: du.DistInfo):
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
    if ckpt.get("version") != CHECKPOINT_VERSION:
        from fact_fast.utils.checkpoint import CheckpointError

        raise CheckpointError(f"{ckpt['_path']}: checkpoint version {ckpt.get('version')} cannot be resumed by "
                              f"this fact_fast (version {CHECKPOINT_VERSION}); start a new run")
    restored = dict(ckpt["config"])
    for k in explicit & RESUMABLE_OVERRIDES:
        restored[k] = getattr(cfg, k)
    restored["resume"] = cfg.resume
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in restored.items() if k in known})
    if "out" not in explicit:
        cfg.out = os.path.dirname(os.path.abspath(ckpt["_path"]))
    log(f"resuming from {ckpt['_path']} (stage {ckpt['stage']}, completed epochs {ckpt['epoch']}, "
        f"step {ckpt['step']})", info)
    return cfg, ckpt


def _truncate_log(path: str, stage_index: int, epoch: int) -> None:
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


def _selected_stages(model: MultiLabelModel, cfg: TrainConfig) -> list:
    stages = model.stages()
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"model {cfg.model}: stage names must be unique, got {names}")
    if cfg.stage is None:
        return list(range(len(stages)))
    if cfg.stage not in names:
        raise ValueError(f"stage: model {cfg.model} has stages {names}, not {cfg.stage!r}")
    return [names.index(cfg.stage)]


class _Run:
    """State of one training run (one seed)."""

    def __init__(self, cfg: TrainConfig, explicit: set, info: du.DistInfo):
        self.info = info
        self.cfg, self.ckpt = _resolve_resume(cfg, explicit, info)
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed + info.rank)
        enable_nvtx(cfg.nvtx)
        self.device = info.device
        out_dir = cfg.out or os.path.join("runs", cfg.name or time.strftime("%Y%m%d-%H%M%S"))
        if info.distributed:
            holder = [out_dir]
            torch.distributed.broadcast_object_list(holder, src=0)
            out_dir = holder[0]
        cfg.out = self.out = out_dir
        if info.is_main:
            os.makedirs(out_dir, exist_ok=True)
        log(f"output directory: {out_dir}", info)
        self.progress = bool(cfg.progress) and info.is_main and os.isatty(2)
        self.t0 = time.time()

    # -- setup ---------------------------------------------------------------------------------
    def build(self) -> None:
        cfg, info = self.cfg, self.info
        self.data: RunData = build_run_data(cfg, progress=info.is_main)
        d = self.data
        log(f"data: {cfg.dataset} train/val/test = {len(d.datasets['train'])}/{len(d.datasets['val'])}/"
            f"{len(d.datasets['test'])}, {len(d.class_names)} classes ({time.time() - self.t0:.1f}s)", info)
        g = d.graph_report
        log(f"label graph ({g['method']}, {g['params']}): {g['edges']} directed edges, density {g['density']:.3f}, "
            f"{len(g['isolated'])} isolated classes", info)
        for split, items in d.skipped.items():
            log(f"skipped {len(items)} unreadable {split} files, e.g. {items[:3]}", info)
        if info.is_main:
            with open(os.path.join(self.out, "config.json"), "w") as fh:
                json.dump(jsonable({**cfg.to_dict(), "label_graph": g, "skipped": d.skipped}), fh, indent=2)
        if self.ckpt is not None:
            self.model = model_from_spec(self.ckpt["model_spec"], self.ckpt["model"])
        else:
            self.model = create_model(cfg.model, d.task, **model_overrides(cfg))
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        n = sum(p.numel() for p in self.model.parameters())
        log(f"model: {cfg.model} ({type(self.model).__name__}) {n / 1e6:.2f} M parameters on {self.device}, "
            f"ops backend {cfg.backend}", info)
        self.ema = None
        if cfg.ema_decay:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay)
            if self.ckpt is not None and self.ckpt.get("ema") is not None:
                self.ema.module.load_state_dict(self.ckpt["ema"])
        self.stages = self.model.stages()
        self.stage_indices = _selected_stages(self.model, cfg)
        self.ebs = cfg.eval_batch_size or 2 * cfg.batch_size

    def _loader(self, split: str, train: bool, stage: Stage):
        ds = stage_dataset(self.data.datasets[split], stage)
        return make_loader(ds, self.cfg.batch_size if train else self.ebs, train=train, info=self.info,
                           workers=self.cfg.workers, seed=self.cfg.seed, device=self.device,
                           sampler=self.cfg.sampler if train else "random",
                           no_finding=self.cfg.sampler_no_finding)

    def _stage_context(self) -> StageContext:
        cfg = self.cfg

        def plain_train_loader():
            # the train split through the eval transform, in order, unsharded (every rank sees all)
            ds = self.data.datasets["train"]
            plain = copy.copy(ds)
            plain.transform = ds.pipeline.build(train=False)
            return make_loader(plain, self.ebs, train=False, info=du.DistInfo(device=self.device),
                               workers=cfg.workers, seed=cfg.seed, device=self.device)

        return StageContext(make_train_loader=plain_train_loader, device=self.device,
                            autocast=lambda: autocast_for(self.device, cfg.amp),
                            log=lambda m: log(m, self.info), distributed=self.info.distributed)

    # -- checkpoints ---------------------------------------------------------------------------
    def _checkpoint(self, si: int, epoch: int, step: int, best: float, optimizer, scheduler, metrics: dict,
                    thresholds: dict | None = None, evaluated_weights: bool = False) -> dict:
        m = self.model
        weights = self.ema.module.state_dict() if (evaluated_weights and self.ema is not None) else m.state_dict()
        return {
            "version": CHECKPOINT_VERSION,
            "model": weights,
            "ema": self.ema.module.state_dict() if (self.ema is not None and not evaluated_weights) else None,
            "model_spec": model_spec(m),
            "training_state": m.training_state(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "stage": self.stages[si].name,
            "stage_index": si,
            "eval_views": self.stages[si].views,
            "epoch": epoch,            # completed epochs of this stage
            "step": step,              # optimizer steps taken in this stage
            "best_metric": best,
            "select_metric": self.cfg.select_metric,
            "metrics": metrics,
            "config": self.cfg.to_dict(),
            "class_names": self.data.class_names,
            "preprocessing": self.data.pipeline,
            "groups": self.data.groups,
            "train_prevalence": self.data.task.prevalence.tolist(),
            "label_graph": self.data.graph_report,
            "default_threshold": m.default_threshold,
            "thresholds": thresholds,
            "rng": capture_rng_state(),
            "torch_version": torch.__version__,
        }

    # -- training --------------------------------------------------------------------------------
    def run_stage(self, si: int, first: bool) -> None:
        cfg, info, model = self.cfg, self.info, self.model
        stage = self.stages[si]
        ckpt = self.ckpt if (self.ckpt is not None and self.ckpt["stage_index"] == si) else None
        resumed = ckpt is not None
        if not resumed and si > 0 and stage.init_from_previous:
            prev = os.path.join(self.out, best_name(self.stages[si - 1].name))
            if os.path.isfile(prev):
                model.load_state_dict(load_checkpoint(prev)["model"])
                log(f"stage {stage.name}: starting from {prev}", info)
            elif cfg.stage is not None:
                raise FileNotFoundError(f"--stage {stage.name} starts from the previous stage's {prev}; "
                                        f"run --stage {self.stages[si - 1].name} first (same --out)")
        log(f"stage {si + 1}/{len(self.stages)}: {stage.name}" + (f" -- {stage.description}" if stage.description
                                                                      else ""), info)
        model.begin_stage(stage, self._stage_context(), resumed=resumed)
        if self.ema is not None and not resumed:
            self.ema.module.load_state_dict(model.state_dict())  # EMA restarts with each stage

        epochs = stage.epochs or cfg.epochs
        train_loader = self._loader("train", True, stage)
        val_loader = self._loader("val", False, stage)
        lr = cfg.lr * stage.lr_scale
        optimizer = build_optimizer(model.param_groups(lr, cfg.weight_decay, cfg.backbone_lr_scale),
                                    cfg.optimizer, lr, betas=(0.9, cfg.adam_beta2))
        log(f"stage {stage.name}: optimiser groups " + ", ".join(
            f"{g.get('name', k)} lr {g['lr']:.3g} ({sum(p.numel() for p in g['params'])} parameters)"
            for k, g in enumerate(optimizer.param_groups)), info)
        steps_per_epoch = max(len(train_loader), 1)
        warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, cosine_warmup_lambda(steps_per_epoch * epochs, warmup, cfg.min_lr_ratio))
        start_epoch, step, best = 0, 0, -math.inf
        if resumed:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            model.load_training_state(ckpt.get("training_state") or {})
            start_epoch, step, best = int(ckpt["epoch"]), int(ckpt["step"]), float(ckpt["best_metric"])
            restore_rng_state(ckpt.get("rng"))
            self.ckpt = None
        elif first:
            # data-dependent initialisation (VQ codebook, τ) from the first training batch, done
            # eagerly so the training graph is static (DDP, torch.compile)
            set_loader_epoch(train_loader, 0)
            batch = next(b for b in train_loader if b is not None)
            images, _, view_mask = split_batch(batch, self.device)
            if view_mask is not None:
                images = images[view_mask]
            model.initialize(images)
            stats = model.epoch_stats(reset=True)
            if stats:
                log("initialised from the first batch: " + ", ".join(f"{k}={v:.4g}" for k, v in stats.items()), info)

        train_model = model
        if info.distributed:
            train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=getattr(model, "ddp_find_unused_parameters", False))
        if cfg.compile:
            train_model = torch.compile(train_model)

        log_path = os.path.join(self.out, "metrics.jsonl")
        for epoch in range(start_epoch, epochs):
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
            te = time.time()
            set_loader_epoch(train_loader, epoch)
            losses, step = train_one_epoch(
                train_model, model, train_loader, optimizer, scheduler, device=self.device, amp=cfg.amp,
                masked=self.data.has_unknown_labels, views=stage.views, grad_clip=cfg.grad_clip,
                max_steps=cfg.max_steps, step=step, ema=self.ema, channels_last=cfg.channels_last,
                freeze_bn=cfg.freeze_bn, progress=self.progress, desc=f"{stage.name} {epoch + 1}/{epochs}")
            stats = model.epoch_stats(reset=True)
            eval_model = self.ema.module if self.ema is not None else model
            scores, targets = score_loader(eval_model, val_loader, info, amp=cfg.amp, views=stage.views,
                                           channels_last=cfg.channels_last, progress=self.progress, desc="val")
            secs = time.time() - te
            if info.is_main:
                diag = self._diagnostics(eval_model, val_loader, stage, scores, targets)
                val = compute_split_metrics(scores, targets, self.data, threshold=model.default_threshold)
                value = val.get(cfg.select_metric)
                value = -math.inf if value is None else float(value)
                improved = value > best
                best = max(best, value)
                summary = {k: val.get(k) for k in ("mAP", "macro_auc", "accuracy", "paper_avg", "f1_micro",
                                                   "f1_macro", "class_score_correlation")}
                ck = self._checkpoint(si, epoch + 1, step, best, optimizer, scheduler, {"val": summary})
                atomic_save(ck, os.path.join(self.out, LAST))
                if improved:
                    from fact_fast.metrics import choose_thresholds

                    thresholds = {m: choose_thresholds(scores, targets, method=m,
                                                       default=model.default_threshold).tolist()
                                  for m in ("f1", "youden")}
                    best_ck = self._checkpoint(si, epoch + 1, step, best, optimizer, scheduler, {"val": summary},
                                               thresholds=thresholds, evaluated_weights=True)
                    atomic_save(best_ck, os.path.join(self.out, best_name(stage.name)))
                group_lrs = {f"lr_{g.get('name', k)}": g["lr"] for k, g in enumerate(optimizer.param_groups)}
                row = {"stage": stage.name, "stage_index": si, "epoch": epoch + 1, "step": step,
                       "lr": optimizer.param_groups[0]["lr"], **group_lrs,
                       **{f"train_{k}": v for k, v in losses.items()},
                       **{f"val_{k}": v for k, v in summary.items()}, **stats, **diag, "seconds": secs}
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(jsonable(row)) + "\n")
                self.loggers.log_row(row)
                extra = "".join(f" | {k} {v:.3g}" for k, v in stats.items())
                log(f"{stage.name} epoch {epoch + 1:3d}/{epochs} | loss {losses.get('total', float('nan')):.4f} | "
                    f"val {cfg.select_metric} {100 * value:.2f}{extra} | {secs:.1f}s" + (" *" if improved else ""),
                    info)
            du.barrier()

    def _diagnostics(self, model, val_loader, stage: Stage, scores, targets) -> dict:
        """The model's per-epoch diagnostics on the first validation batch and the val scores."""
        if stage.views:
            return {}
        batch = next((b for b in val_loader if b is not None), None)
        if batch is None:
            return {}
        images, _, view_mask = split_batch(batch, self.device)
        if view_mask is not None:  # a single-view stage on a multi-view split: its views as images
            images = images[view_mask]
        was_training = model.training
        model.eval()
        try:
            with autocast_for(self.device, self.cfg.amp):
                return model.diagnostics(images, torch.as_tensor(scores), torch.as_tensor(targets))
        finally:
            model.train(was_training)

    def fit(self) -> dict:
        self.build()
        if self.ckpt is not None:
            _truncate_log(os.path.join(self.out, "metrics.jsonl"), self.ckpt["stage_index"], self.ckpt["epoch"])
            start = self.stage_indices.index(self.ckpt["stage_index"]) if self.ckpt["stage_index"] in \
                self.stage_indices else 0
        else:
            start = 0
            if self.info.is_main and os.path.isfile(os.path.join(self.out, "metrics.jsonl")):
                os.remove(os.path.join(self.out, "metrics.jsonl"))  # a new run in an old directory
        fresh = self.ckpt is None
        self.loggers = open_loggers(self.cfg.logger, self.out, self.info.is_main)
        if not self.stage_indices[start:]:
            self.select_best()
        for k, si in enumerate(self.stage_indices[start:]):
            self.run_stage(si, first=fresh and k == 0 and si == 0)
            self.select_best()
        result = {"out": self.out}
        if self.cfg.eval_test:
            result["test"], result["stages"] = self.evaluate_best()
            self.loggers.log_test(result["test"])
        self.loggers.close()
        log(f"done in {time.time() - self.t0:.1f}s; outputs in {self.out}", self.info)
        return result

    # -- stage selection -------------------------------------------------------------------------
    def stage_candidates(self) -> list:
        """``(stage index, path)`` of every stage up to the last one this run trains whose
        ``best-<stage>.pt`` exists in the output directory (a ``--stage`` run counts the earlier
        stages' checkpoints it started from)."""
        last = max(self.stage_indices)
        out = []
        for si, stage in enumerate(self.stages[:last + 1]):
            path = os.path.join(self.out, best_name(stage.name))
            if os.path.isfile(path):
                out.append((si, path))
        return out

    def select_best(self) -> dict | None:
        """Write ``best.pt``: the stage checkpoint with the best validation ``select_metric``
        (on a tie the later stage), and ``stages.json`` with every candidate's validation score.
        A later stage that does not reach an earlier one's validation score is reported in the log."""
        if not self.info.is_main:
            du.barrier()
            return None
        candidates = []
        for si, path in self.stage_candidates():
            ck = load_checkpoint(path)
            value = ck.get("best_metric")
            candidates.append({"stage": self.stages[si].name, "stage_index": si, "checkpoint": os.path.basename(path),
                               "epoch": ck.get("epoch"), "val": None if value is None else float(value),
                               "val_metrics": (ck.get("metrics") or {}).get("val"), "_ckpt": ck})
        if not candidates:
            du.barrier()
            return None
        self._warn_if_incomparable(candidates)
        score = [(-math.inf if c["val"] is None or not math.isfinite(c["val"]) else c["val"], c["stage_index"])
                 for c in candidates]
        chosen = candidates[max(range(len(candidates)), key=lambda k: score[k])]
        ck = dict(chosen["_ckpt"])
        ck.pop("_path", None)
        atomic_save(ck, os.path.join(self.out, BEST))
        metric = self.cfg.select_metric
        report = {"select_metric": metric, "selected": chosen["stage"],
                  "stages": [{k: v for k, v in c.items() if k != "_ckpt"} for c in candidates]}
        with open(os.path.join(self.out, "stages.json"), "w") as fh:
            json.dump(jsonable(report), fh, indent=2)
        if len(candidates) > 1:
            scores = ", ".join(f"{c['stage']} {100 * c['val']:.2f}" if c["val"] is not None else f"{c['stage']} -"
                               for c in candidates)
            later = [c for c in candidates if c["stage_index"] > chosen["stage_index"]]
            why = (f"; the later stage(s) {', '.join(c['stage'] for c in later)} did not improve on it"
                   if later else "")
            log(f"best.pt: stage {chosen['stage']} (epoch {chosen['epoch']}), chosen on validation {metric} "
                f"({scores}){why}", self.info)
        du.barrier()
        return report

    def _warn_if_incomparable(self, candidates: list) -> None:
        """Stages that score single images and stages that score studies (grouped views) of a
        per-image split measure different things; say so (a multi-view dataset, e.g. cxr_lt with
        ``fusion=study``, scores both per study)."""
        val = self.data.datasets.get("val")
        views = {bool(c["_ckpt"].get("eval_views")) for c in candidates}
        if len(views) > 1 and getattr(val, "study_ids", None) is not None and not isinstance(val, MultiViewDataset):
            log("warning: the stages score the validation split differently (images in one, studies in another), "
                "so choosing best.pt between them compares unlike numbers; use the dataset's study-level form "
                "(e.g. --dataset-kwargs fusion=study for cxr_lt)", self.info)

    def evaluate_best(self) -> tuple[dict | None, dict | None]:
        """Test metrics of ``best.pt`` (``metrics_test.json``, ``scores_test.npz``) and, for a
        multi-stage run, of every stage's best checkpoint (``metrics_test-<stage>.json``).
        Returns ``(metrics of best.pt, {stage: metrics} or None)``."""
        from fact_fast.metrics import format_metrics_table

        path = os.path.join(self.out, BEST)
        if not os.path.isfile(path):
            log("no best.pt to evaluate (no epoch finished)", self.info)
            return None, None
        best = load_checkpoint(path)
        candidates = self.stage_candidates()
        per_stage: dict = {}
        chosen_metrics = None
        for si, stage_path in candidates if len(candidates) > 1 else [(best["stage_index"], path)]:
            ck = best if si == best["stage_index"] else load_checkpoint(stage_path)
            metrics, scores, targets = self._test_metrics(ck, stage_path if len(candidates) > 1 else path)
            if metrics is None:
                continue
            if len(candidates) > 1:
                per_stage[self.stages[si].name] = metrics
                with open(os.path.join(self.out, f"metrics_test-{self.stages[si].name}.json"), "w") as fh:
                    json.dump(jsonable(metrics), fh, indent=2)
            if si == best["stage_index"]:
                chosen_metrics = dict(metrics, checkpoint=path)
                save_scores(os.path.join(self.out, TEST_SCORES_FILE), scores, targets, self.data.class_names)
        if not self.info.is_main:
            return None, None
        if per_stage:
            chosen_metrics["stage_val"] = {name: m.get("val_" + self.cfg.select_metric) for name, m in per_stage.items()}
            for name, m in per_stage.items():
                log(f"stage {name}: val {self.cfg.select_metric} {100 * (m.get('val_' + self.cfg.select_metric) or 0):.2f}, "
                    f"test mAP {100 * (m.get('mAP') or 0):.2f}, macro AUC {100 * (m.get('macro_auc') or 0):.2f}", self.info)
        log(f"\ntest metrics of {path} (stage {best['stage']}, epoch {best['epoch']}):", self.info)
        log(format_metrics_table(chosen_metrics), self.info)
        with open(os.path.join(self.out, "metrics_test.json"), "w") as fh:
            json.dump(jsonable(chosen_metrics), fh, indent=2)
        return chosen_metrics, (per_stage or None)

    def _test_metrics(self, ckpt: dict, path: str):
        """``(metrics, scores, targets)`` of checkpoint ``ckpt`` on the test split (None on other ranks)."""
        model = model_from_spec(ckpt["model_spec"], ckpt["model"]).to(self.device)
        stage = self.stages[ckpt["stage_index"]]
        loader = self._loader("test", False, stage)
        scores, targets = score_loader(model, loader, self.info, amp=self.cfg.amp, views=stage.views,
                                       channels_last=self.cfg.channels_last, progress=self.progress, desc="test")
        if not self.info.is_main:
            return None, None, None
        metrics = compute_split_metrics(scores, targets, self.data, threshold=model.default_threshold)
        val = (ckpt.get("metrics") or {}).get("val") or {}
        metrics.update({"checkpoint": path, "stage": ckpt["stage"], "stage_index": ckpt["stage_index"],
                        "epoch": ckpt["epoch"], "split": "test",
                        "dataset": self.cfg.dataset, "model": self.cfg.model,
                        **{f"val_{k}": v for k, v in val.items()},
                        "train_prevalence": dict(zip(self.data.class_names, self.data.task.prevalence.tolist())),
                        "train_seconds": time.time() - self.t0})
        return metrics, scores, targets


def fit(cfg: TrainConfig, explicit=(), info: du.DistInfo | None = None) -> dict:
    """Train as configured (all stages, or ``cfg.stage``); returns ``{"out", "test"}``."""
    return _Run(cfg, set(explicit), info or du.DistInfo()).fit()


def fit_seeds(cfg: TrainConfig, explicit=(), info: du.DistInfo | None = None) -> dict:
    """``cfg.seeds`` = "0,1,2": one run per seed in ``<out>/seed<k>``, then ``summary.json`` /
    ``summary.md`` with the mean ± std of every test metric."""
    from fact_fast.metrics import mean_std_over_seeds

    try:
        seeds = [int(s) for s in str(cfg.seeds).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"seeds must be comma-separated integers, got {cfg.seeds!r}") from None
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    base = cfg.out or os.path.join("runs", cfg.name or time.strftime("%Y%m%d-%H%M%S"))
    results = []
    for s in seeds:
        run_cfg = replace(cfg, seed=s, seeds=None, out=os.path.join(base, f"seed{s}"))
        results.append(fit(run_cfg, set(explicit) | {"out", "seed"}, info))
    tests = [r["test"] for r in results if r.get("test")]
    summary = {"seeds": seeds, "runs": [r["out"] for r in results]}
    if tests:
        summary["test"] = mean_std_over_seeds(tests)
        summary["selected_stages"] = [t.get("stage") for t in tests]
    per_stage = [r.get("stages") for r in results if r.get("stages")]
    if per_stage and len(per_stage) == len(results):
        names = [n for n in per_stage[0] if all(n in p for p in per_stage)]
        summary["stages"] = {n: mean_std_over_seeds([p[n] for p in per_stage]) for n in names}
    if info is None or info.is_main:
        with open(os.path.join(base, "summary.json"), "w") as fh:
            json.dump(jsonable(summary), fh, indent=2)
        log(f"summary over seeds {seeds} written to {os.path.join(base, 'summary.json')}")
    return summary
