"""Evaluate a FACT checkpoint: ``python -m fact_fast.evaluate CHECKPOINT [--split test] [--out FILE]``.

Rebuilds the dataset and the model from the configuration stored in the checkpoint, prints a
readable metrics table (mAP, macro AUC, F1 at the decision threshold, per-class AP,
head/medium/tail group means, ODIR score) and writes the metrics as JSON (default
``<checkpoint dir>/metrics_<split>.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from fact_fast import ops
from fact_fast.utils import distributed as du
from fact_fast.utils.checkpoint import CheckpointError, load_checkpoint

__all__ = ["main", "evaluate_loader", "evaluate_checkpoint", "build_parser"]


@torch.no_grad()
def evaluate_loader(model, loader, info: du.DistInfo | None = None, *, amp: bool = False, progress: bool = False,
                    desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """Scores μ [N, C] and targets [N, C] (numpy float32) over ``loader``, in dataset order.

    Under torch.distributed with a DistributedSampler each rank scores its shard; the shards are
    all-gathered and the sampler's padding duplicates dropped, so every rank gets the full arrays.
    """
    from tqdm.auto import tqdm

    info = info or du.DistInfo()
    model = getattr(model, "module", model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores, targets = [], []
    ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if amp else torch.autocast(
        device_type=device.type, enabled=False)
    for images, y in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        with ctx:
            out = model(images.to(device, non_blocking=True))
        scores.append(out.mu.float())
        targets.append(y.to(device).float())
    model.train(was_training)
    C = model.num_classes
    s = torch.cat(scores) if scores else torch.zeros(0, C, device=device)
    t = torch.cat(targets) if targets else torch.zeros(0, C, device=device)
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler) and info.distributed:
        idx = torch.as_tensor(list(iter(sampler)), device=device, dtype=torch.int64)
        idx, s, t = du.all_gather_cat(idx), du.all_gather_cat(s), du.all_gather_cat(t)
        order = torch.argsort(idx, stable=True)
        idx, s, t = idx[order], s[order], t[order]
        keep = torch.ones_like(idx, dtype=torch.bool)
        keep[1:] = idx[1:] != idx[:-1]
        s, t = s[keep], t[keep]
    return s.cpu().numpy(), t.cpu().numpy()


def evaluate_checkpoint(path: str, split: str = "test", *, batch_size: int | None = None, device: str = "auto",
                        data_root: str | None = None, workers: int = 0, backend: str = "auto",
                        progress: bool = False) -> dict:
    """Load ``path``, rebuild its dataset split and model, and return the metrics dict."""
    from fact_fast.config import TrainConfig
    from fact_fast.data import build_dataset
    from fact_fast.metrics import compute_metrics
    from fact_fast.train import model_from_checkpoint

    ckpt = load_checkpoint(path)
    known = {f for f in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(**{k: v for k, v in ckpt.get("config", {}).items() if k in known})
    if data_root is not None:
        cfg.data_root = data_root
    dev = du.resolve_device(device)
    try:
        model = model_from_checkpoint(ckpt).to(dev)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {ckpt['_path']} does not match its stored model configuration: {exc}") from exc
    ds = build_dataset(cfg.dataset, split, root=cfg.data_root, image_size=cfg.image_size, seed=cfg.seed,
                       **dict(cfg.dataset_kwargs or {}))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size or cfg.eval_batch_size or 2 * cfg.batch_size,
                                         shuffle=False, num_workers=workers)
    with ops.use_backend(backend):
        scores, targets = evaluate_loader(model, loader, progress=progress, desc=split)
    metrics = compute_metrics(scores, targets, threshold=model.config.threshold,
                              class_names=ckpt.get("class_names") or list(ds.class_names),
                              groups=ckpt.get("groups"))
    metrics.update({"checkpoint": ckpt["_path"], "epoch": ckpt.get("epoch"), "split": split,
                    "dataset": cfg.dataset, "model": cfg.model})
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fact_fast.evaluate",
                                description="Evaluate a FACT checkpoint on a dataset split; prints a metrics "
                                            "table and writes JSON.")
    p.add_argument("checkpoint", help="checkpoint file (best.pt / last.pt) or a run directory")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="dataset split (default: test)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="JSON output file (default: <checkpoint dir>/metrics_<split>.json)")
    p.add_argument("--batch-size", type=int, default=None, help="evaluation batch size (default: from the run)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default: auto)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="dataset root, if it moved since training")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: 0)")
    p.add_argument("--backend", default="auto", choices=("auto", "reference", "cpu", "cuda", "triton"),
                   help="fact_fast.ops backend (default: auto)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bar (only on a TTY)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from fact_fast.metrics import format_metrics_table
    from fact_fast.train import _jsonable

    args = build_parser().parse_args(argv)
    if args.batch_size is not None and args.batch_size <= 0:
        build_parser().error("--batch-size must be positive")
    try:
        metrics = evaluate_checkpoint(args.checkpoint, args.split, batch_size=args.batch_size, device=args.device,
                                      data_root=args.data_root, workers=args.workers, backend=args.backend,
                                      progress=args.progress and sys.stderr.isatty())
    except (CheckpointError, FileNotFoundError, ops.BackendUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if "CUDA" not in str(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{metrics['split']} metrics of {metrics['checkpoint']} (epoch {metrics['epoch']}):")
    print(format_metrics_table(metrics))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(metrics["checkpoint"])),
                                   f"metrics_{args.split}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(_jsonable(metrics), fh, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
