"""Train FACT: ``python -m fact_fast.train [options]`` (``--help`` lists every option).

With no arguments it trains the CPU-friendly ``fact_tiny`` model on the bundled synthetic
comorbidity dataset, validates every epoch, keeps ``last.pt`` / ``best.pt`` (by validation mAP)
in the output directory, and finally evaluates ``best.pt`` on the test split (prints the metrics
table and writes ``metrics_test.json``). Multi-GPU/multi-node: launch with ``torchrun``.

Output directory layout::

    runs/<name or timestamp>/
        config.json         resolved TrainConfig
        metrics.jsonl       one JSON line per epoch
        last.pt, best.pt    atomic checkpoints
        metrics_test.json   final test metrics of best.pt
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, fields
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from fact_fast import ops
from fact_fast.config import TrainConfig, model_overrides, parse_config
from fact_fast.models import FACTConfig, create_model
from fact_fast.nn.profiling import enable_nvtx, stage
from fact_fast.utils import distributed as du
from fact_fast.utils.checkpoint import (BEST, LAST, CheckpointError, atomic_save, capture_rng_state,
                                        find_latest, load_checkpoint, restore_rng_state)

__all__ = ["main", "train", "build_data", "build_optimizer", "cosine_warmup_lambda"]

CHECKPOINT_VERSION = 1
# Options that may differ from the checkpointed run when resuming (everything else is restored).
RESUMABLE_OVERRIDES = {"epochs", "device", "backend", "workers", "threads", "progress", "nvtx", "eval_test",
                       "max_steps", "data_root", "eval_batch_size", "out", "compile"}


def log(msg: str, info: du.DistInfo | None = None) -> None:
    if info is None or info.is_main:
        print(msg, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def use_progress(cfg: TrainConfig, info: du.DistInfo) -> bool:
    return bool(cfg.progress) and info.is_main and sys.stderr.isatty()


# -- data ------------------------------------------------------------------------------------
def build_data(cfg: TrainConfig, splits: Iterable[str] = ("train", "val", "test")) -> dict:
    """Datasets per split plus what the model needs from the TRAIN split only: the label graph
    (CSR), frequency groups and the label text embeddings."""
    from fact_fast.data import build_dataset, frequency_groups, label_embeddings, label_graph

    kw = dict(cfg.dataset_kwargs or {})
    out: dict = {}
    for split in ("train",) + tuple(s for s in splits if s != "train"):
        out[split] = build_dataset(cfg.dataset, split, root=cfg.data_root, image_size=cfg.image_size,
                                   seed=cfg.seed, **kw)
    train = out["train"]
    rowptr, col = label_graph(train.labels, threshold=cfg.graph_threshold)
    out["rowptr"] = torch.as_tensor(np.asarray(rowptr), dtype=torch.int64)
    out["col"] = torch.as_tensor(np.asarray(col), dtype=torch.int64)
    out["groups"] = list(frequency_groups(train.labels))
    out["class_names"] = list(train.class_names)
    out["label_embeddings"] = torch.as_tensor(
        label_embeddings(train.class_names, dataset=cfg.dataset, path=cfg.label_embeddings), dtype=torch.float32)
    return out


def make_loader(ds, batch_size: int, *, train: bool, info: du.DistInfo, workers: int, seed: int,
                device: torch.device) -> DataLoader:
    if info.distributed:
        sampler = DistributedSampler(ds, num_replicas=info.world_size, rank=info.rank, shuffle=train,
                                     seed=seed, drop_last=False)
    elif train:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = None
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=False,
                      persistent_workers=workers > 0)


def set_loader_epoch(loader: DataLoader, epoch: int, seed: int) -> None:
    """Deterministic, resumable data order: the shuffle of epoch e depends only on (seed, e)."""
    s = loader.sampler
    if isinstance(s, DistributedSampler):
        s.set_epoch(epoch)
    elif isinstance(s, RandomSampler) and s.generator is not None:
        s.generator.manual_seed(seed * 1000003 + epoch)


# -- optimisation ------------------------------------------------------------------------------
def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases/norm parameters, the codebook, τ and anchors/queries; the
    codebook gets ``lr * codebook_lr_scale``."""
    decay, no_decay, codebook = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith("vq.codebook"):
            codebook.append(p)
        elif p.ndim < 2 or any(k in name for k in ("codebook", "log_tau", "queries", "free_anchors")):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
              {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr},
              {"params": codebook, "weight_decay": 0.0, "lr": cfg.lr * cfg.codebook_lr_scale}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.999))


def cosine_warmup_lambda(total_steps: int, warmup_steps: int, min_ratio: float):
    """LR multiplier: linear warm-up from ~0 to 1 over ``warmup_steps``, cosine to ``min_ratio``."""
    total_steps = max(int(total_steps), 1)
    warmup_steps = max(min(int(warmup_steps), total_steps - 1), 0)

    def fn(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        t = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        t = min(max(t, 0.0), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return fn


# -- checkpoints -------------------------------------------------------------------------------
def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if hasattr(model, "module") else model


def make_checkpoint(model, optimizer, scheduler, cfg: TrainConfig, epoch: int, step: int, best_map: float,
                    data: dict, metrics: dict | None) -> dict:
    m = unwrap(model)
    return {
        "version": CHECKPOINT_VERSION,
        "model": m.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,            # number of completed epochs
        "step": step,              # optimizer steps taken
        "best_map": best_map,
        "metrics": metrics,
        "config": cfg.to_dict(),
        "model_config": m.config.to_dict(),
        "model_args": {"num_classes": m.num_classes, "label_embeddings": data["label_embeddings"],
                       "rowptr": data["rowptr"], "col": data["col"]},
        "class_names": data["class_names"],
        "groups": data["groups"],
        "rng": capture_rng_state(),
        "torch_version": torch.__version__,
    }


def model_from_checkpoint(ckpt: dict, strict: bool = True):
    """Rebuild the FACT model stored in a checkpoint (architecture + weights)."""
    from fact_fast.models import FACT

    margs = ckpt["model_args"]
    mcfg = FACTConfig.from_dict(dict(ckpt["model_config"]))
    mcfg.pretrained = False  # the weights come from the checkpoint
    model = FACT(mcfg, margs["num_classes"], margs.get("label_embeddings"), margs.get("rowptr"), margs.get("col"))
    model.load_state_dict(ckpt["model"], strict=strict)
    return model


def resolve_resume(cfg: TrainConfig) -> str | None:
    if not cfg.resume:
        return None
    if cfg.resume != "auto":
        return cfg.resume
    if cfg.out and os.path.isfile(os.path.join(cfg.out, LAST)):
        return os.path.join(cfg.out, LAST)
    if cfg.out:
        return None
    return find_latest("runs", LAST)


def default_out(cfg: TrainConfig) -> str:
    return os.path.join("runs", cfg.name or time.strftime("%Y%m%d-%H%M%S"))


# -- loops -------------------------------------------------------------------------------------
def _autocast(cfg: TrainConfig, device: torch.device):
    if not cfg.amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_one_epoch(model, loss_fn, loader, optimizer, scheduler, cfg: TrainConfig, info: du.DistInfo,
                    epoch: int, step: int, progress: bool) -> tuple[dict, int]:
    from tqdm.auto import tqdm

    model.train()
    device = info.device
    sums: dict[str, torch.Tensor] = {}
    n_batches = 0
    it = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False,
              dynamic_ncols=True)
    for images, targets in it:
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with _autocast(cfg, device):
            out = model(images)
        with stage("loss"):
            losses = loss_fn(out, targets)
        optimizer.zero_grad(set_to_none=True)
        with stage("backward"):
            losses["total"].backward()
        with stage("optimizer"):
            if cfg.grad_clip is not None and cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
        step += 1
        n_batches += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float()
        if progress and (n_batches % 5 == 1):
            it.set_postfix(loss=f"{float(losses['total']):.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    it.close()
    avg = {k: float(du.all_reduce_sum(v.reshape(1))) / max(n_batches, 1) / info.world_size
           for k, v in sums.items()}
    if any(not math.isfinite(v) for v in avg.values()):
        raise FloatingPointError(f"non-finite training loss in epoch {epoch + 1} ({avg}); the last good "
                                 f"checkpoint is kept -- try a lower --lr or --grad-clip")
    return avg, step


def run_epochs(cfg: TrainConfig, explicit: set, info: du.DistInfo) -> dict:
    from fact_fast.evaluate import evaluate_loader
    from fact_fast.metrics import compute_metrics, format_metrics_table

    resume_path = resolve_resume(cfg)
    ckpt = None
    if resume_path:
        ckpt = load_checkpoint(resume_path)
        restored = dict(ckpt["config"])
        for k in explicit:
            if k in RESUMABLE_OVERRIDES:
                restored[k] = getattr(cfg, k)
        restored["resume"] = cfg.resume
        known = {f.name for f in fields(TrainConfig)}
        cfg = TrainConfig(**{k: v for k, v in restored.items() if k in known})
        if "out" not in explicit:
            cfg.out = os.path.dirname(os.path.abspath(ckpt["_path"]))
        log(f"resuming from {ckpt['_path']} (completed epochs: {ckpt['epoch']}, step {ckpt['step']})", info)
    elif cfg.resume == "auto":
        log("--resume auto: no checkpoint found, starting a new run", info)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed + info.rank)
    enable_nvtx(cfg.nvtx)
    device = info.device

    out_dir = cfg.out or default_out(cfg)
    if info.distributed:
        holder = [out_dir]
        torch.distributed.broadcast_object_list(holder, src=0)
        out_dir = holder[0]
    cfg.out = out_dir
    if info.is_main:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "config.json"), "w") as fh:
            json.dump(cfg.to_dict(), fh, indent=2)
    log(f"output directory: {out_dir}", info)

    t0 = time.time()
    data = build_data(cfg)
    log(f"data: {cfg.dataset} train/val/test = {len(data['train'])}/{len(data['val'])}/{len(data['test'])}, "
        f"{len(data['class_names'])} classes, label graph nnz={data['col'].numel()} "
        f"({time.time() - t0:.1f}s)", info)

    C = len(data["class_names"])
    if ckpt is not None:
        model = model_from_checkpoint(ckpt)
    else:
        model = create_model(cfg.model, C, data["label_embeddings"], data["rowptr"], data["col"],
                             **model_overrides(cfg))
    model.to(device)
    loss_fn = model.build_loss()
    nparams = sum(p.numel() for p in model.parameters())
    log(f"model: {cfg.model} ({model.config.backbone}, d={model.config.dim}, K={model.config.codebook_size}, "
        f"vq={model.config.use_vq}, gcn={model.config.use_gcn}, membership={model.config.membership}, "
        f"loss={model.config.loss}) {nparams / 1e6:.2f} M parameters on {device}, ops backend {cfg.backend}",
        info)

    ebs = cfg.eval_batch_size or 2 * cfg.batch_size
    train_loader = make_loader(data["train"], cfg.batch_size, train=True, info=info, workers=cfg.workers,
                               seed=cfg.seed, device=device)
    val_loader = make_loader(data["val"], ebs, train=False, info=info, workers=cfg.workers, seed=cfg.seed,
                             device=device)

    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = max(len(train_loader), 1)
    total_steps = steps_per_epoch * cfg.epochs  # --max-steps stops early but keeps this schedule
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_warmup_lambda(total_steps, warmup,
                                                                                  cfg.min_lr_ratio))
    start_epoch, step, best_map = 0, 0, -1.0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, step, best_map = int(ckpt["epoch"]), int(ckpt["step"]), float(ckpt["best_map"])
        restore_rng_state(ckpt.get("rng"))
        del ckpt
    else:
        # Lazy, data-dependent initialisation (VQ codebook, τ) from the first training batch,
        # done eagerly here so the training graph is static (DDP, torch.compile).
        set_loader_epoch(train_loader, 0, cfg.seed)
        images, _ = next(iter(train_loader))
        model.initialize(images.to(device))
        log(f"initialised from the first batch: tau={float(model.tau.detach()):.4g}", info)

    train_model = model
    if info.distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)

    progress = use_progress(cfg, info)
    metrics_log = os.path.join(out_dir, "metrics.jsonl")
    last_val = None
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        te = time.time()
        set_loader_epoch(train_loader, epoch, cfg.seed)
        if model.vq is not None:
            model.vq.reset_stats()
        losses, step = train_one_epoch(train_model, loss_fn, train_loader, optimizer, scheduler, cfg, info,
                                       epoch, step, progress)
        cb = {}
        if model.vq is not None:
            counts = du.all_reduce_sum(model.vq.code_counts.to(device))
            cb = model.vq.codebook_stats(counts=counts)
        scores, targets = evaluate_loader(model, val_loader, info, amp=cfg.amp, progress=progress,
                                          desc="val")
        val = {}
        if info.is_main and np.isfinite(scores).all():
            val = compute_metrics(scores, targets, threshold=model.config.threshold,
                                  class_names=data["class_names"], groups=data["groups"])
        elif info.is_main:
            log("warning: non-finite validation scores; val mAP is NaN this epoch", info)
        val_map = float(val.get("mAP", float("nan"))) if info.is_main else 0.0
        secs = time.time() - te
        if info.is_main:
            improved = val_map > best_map or best_map < 0
            best_map = max(best_map, val_map) if not math.isnan(val_map) else best_map
            record = {"epoch": epoch + 1, "step": step, "lr": scheduler.get_last_lr()[0],
                      **{f"train_{k}": v for k, v in losses.items()},
                      "val_mAP": val_map, "val_macro_auc": val.get("macro_auc"), "val_f1_micro": val.get("f1_micro"),
                      "val_f1_macro": val.get("f1_macro"), "tau": float(model.tau.detach()),
                      "codebook_perplexity": cb.get("perplexity"), "codebook_usage": cb.get("usage"),
                      "best_val_mAP": best_map, "seconds": round(secs, 3)}
            with open(metrics_log, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            ck = make_checkpoint(model, optimizer, scheduler, cfg, epoch + 1, step, best_map, data,
                                 {"val": {k: val[k] for k in ("mAP", "macro_auc", "f1_micro", "f1_macro")
                                          if k in val}})
            atomic_save(ck, os.path.join(out_dir, LAST))
            if improved:
                atomic_save(ck, os.path.join(out_dir, BEST))
            cbtxt = f" | codebook ppl {cb['perplexity']:.1f} usage {cb['usage']:.0%}" if cb else ""
            log(f"epoch {epoch + 1:3d}/{cfg.epochs} | loss {losses.get('total', float('nan')):.4f} | "
                f"val mAP {100 * val_map:.2f} | tau {float(model.tau.detach()):.3g}{cbtxt} | {secs:.1f}s"
                + (" *" if improved else ""), info)
            last_val = val
        du.barrier()

    result: dict = {"out": out_dir, "best_val_mAP": best_map, "last_val": last_val}
    if cfg.eval_test:
        best_path = os.path.join(out_dir, BEST)
        if not os.path.isfile(best_path):
            log("no best.pt to evaluate (no epoch finished)", info)
            return result
        best = load_checkpoint(best_path)
        model = model_from_checkpoint(best).to(device)
        test_loader = make_loader(data["test"], ebs, train=False, info=info, workers=cfg.workers,
                                  seed=cfg.seed, device=device)
        scores, targets = evaluate_loader(model, test_loader, info, amp=cfg.amp, progress=progress, desc="test")
        if info.is_main:
            metrics = compute_metrics(scores, targets, threshold=model.config.threshold,
                                      class_names=data["class_names"], groups=data["groups"])
            metrics.update({"checkpoint": best_path, "epoch": best["epoch"], "split": "test",
                            "dataset": cfg.dataset, "model": cfg.model})
            log(f"\ntest metrics of {best_path} (epoch {best['epoch']}):", info)
            log(format_metrics_table(metrics), info)
            with open(os.path.join(out_dir, "metrics_test.json"), "w") as fh:
                json.dump(_jsonable(metrics), fh, indent=2)
            result["test"] = metrics
    log(f"done in {time.time() - t0:.1f}s; outputs in {out_dir}", info)
    return result


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, torch.Tensor):
        return _jsonable(x.tolist())
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    return x


def train(cfg: TrainConfig, explicit: Iterable[str] = ()) -> dict:
    """Run training as configured; returns ``{"out", "best_val_mAP", "last_val", "test"}``."""
    info = du.init_distributed(cfg.device)
    try:
        with ops.use_backend(cfg.backend):
            return run_epochs(cfg, set(explicit), info)
    finally:
        du.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    cfg, explicit = parse_config(argv)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    try:
        train(cfg, explicit)
    except (CheckpointError, FloatingPointError, FileNotFoundError, ops.BackendUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
