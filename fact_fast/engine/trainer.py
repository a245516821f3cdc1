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

import numpy as np
import torch

from fact_fast.config import TrainConfig, model_overrides
from fact_fast.metrics import choose_thresholds
from fact_fast.models import Stage, StageContext, create_model, model_from_spec
from fact_fast.nn.profiling import enable_nvtx
from fact_fast.utils import distributed as du
from fact_fast.utils.checkpoint import LAST, load_checkpoint, restore_rng_state

from .checkpoints import best_name, build_checkpoint, log, resolve_resume, truncate_log
from .data import RunData, build_run_data, make_loader, set_loader_epoch, split_batch, stage_dataset
from .evaluation import compute_split_metrics, jsonable
from .final_test import evaluate_best
from .loggers import open_loggers
from .loop import autocast_for, score_loader, train_one_epoch
from .optim import build_optimizer, cosine_warmup_lambda
from .selection import select_best, selected_stages

__all__ = ["fit"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)



class _Run:
    """State of one training run (one seed)."""

    def __init__(self, cfg: TrainConfig, explicit: set, info: du.DistInfo):
        self.info = info
        self.cfg, self.ckpt = resolve_resume(cfg, explicit, info)
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
            self.model = model_from_spec(self.ckpt.model_spec, self.ckpt.model)
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
            if self.ckpt is not None and self.ckpt.ema is not None:
                self.ema.module.load_state_dict(self.ckpt.ema)
        self.stages = self.model.stages()
        self.stage_indices = selected_stages(self.model, cfg)
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
                    thresholds: dict | None = None, evaluated_weights: bool = False):
        return build_checkpoint(self.model, self.ema, self.stages[si], si, epoch=epoch, step=step, best=best,
                                optimizer=optimizer, scheduler=scheduler, metrics=metrics, cfg=self.cfg,
                                data=self.data, thresholds=thresholds, evaluated_weights=evaluated_weights)

    # -- training --------------------------------------------------------------------------------
    def run_stage(self, si: int, first: bool) -> None:
        cfg, info, model = self.cfg, self.info, self.model
        stage = self.stages[si]
        ckpt = self.ckpt if (self.ckpt is not None and self.ckpt.stage_index == si) else None
        resumed = ckpt is not None
        if not resumed and si > 0 and stage.init_from_previous:
            prev = os.path.join(self.out, best_name(self.stages[si - 1].name))
            if os.path.isfile(prev):
                model.load_state_dict(load_checkpoint(prev).model)
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
            optimizer.load_state_dict(ckpt.optimizer)
            scheduler.load_state_dict(ckpt.scheduler)
            model.load_training_state(ckpt.training_state or {})
            start_epoch, step = int(ckpt.epoch), int(ckpt.step)
            best = -math.inf if ckpt.best_metric is None else float(ckpt.best_metric)
            restore_rng_state(ckpt.rng)
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
                ck.save(os.path.join(self.out, LAST))
                if improved:
                    thresholds = {m: choose_thresholds(scores, targets, method=m,
                                                       default=model.default_threshold).tolist()
                                  for m in ("f1", "youden")}
                    best_ck = self._checkpoint(si, epoch + 1, step, best, optimizer, scheduler, {"val": summary},
                                               thresholds=thresholds, evaluated_weights=True)
                    best_ck.save(os.path.join(self.out, best_name(stage.name)))
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
            truncate_log(os.path.join(self.out, "metrics.jsonl"), self.ckpt.stage_index, self.ckpt.epoch)
            si = self.ckpt.stage_index
            start = self.stage_indices.index(si) if si in self.stage_indices else 0
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

    # -- stage selection and the final test ---------------------------------------------------
    def select_best(self) -> dict | None:
        return select_best(self.out, self.stages, self.stage_indices, self.cfg.select_metric, self.info,
                           self.data.datasets.get("val"))

    def evaluate_best(self) -> tuple[dict | None, dict | None]:
        return evaluate_best(self.out, self.stages, self.stage_indices, cfg=self.cfg, data=self.data, info=self.info,
                             device=self.device, test_loader=lambda stage: self._loader("test", False, stage),
                             progress=self.progress, t0=self.t0)


def fit(cfg: TrainConfig, explicit=(), info: du.DistInfo | None = None) -> dict:
    """Train as configured (all stages, or ``cfg.stage``); returns ``{"out", "test"}``."""
    return _Run(cfg, set(explicit), info or du.DistInfo()).fit()
