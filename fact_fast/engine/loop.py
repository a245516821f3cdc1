"""The training epoch and the scoring loop, for any ``MultiLabelModel``."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from fact_fast.nn import set_train_mode
from fact_fast.nn.profiling import stage as nvtx_stage
from fact_fast.utils import distributed as du

from .data import split_batch

__all__ = ["autocast_for", "flatten_views", "fuse_views", "train_one_epoch", "score_batches", "score_loader",
           "ScoredBatch", "unwrap"]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model under torch.compile / DDP wrappers."""
    model = getattr(model, "_orig_mod", model)
    return model.module if hasattr(model, "module") else model


def autocast_for(device: torch.device, amp: bool):
    """bf16 autocast when ``amp`` (CUDA and CPU), else a no-op context."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def flatten_views(images: torch.Tensor, targets: torch.Tensor, view_mask: torch.Tensor):
    """Multi-view batch -> single images: ``[B, V, 3, H, W]`` -> ``[n, 3, H, W]`` (valid views),
    each view with its item's target ``[n, C]``."""
    B, V = view_mask.shape
    return images[view_mask], targets.unsqueeze(1).expand(B, V, targets.shape[-1])[view_mask]


def fuse_views(scores: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
    """Per-view scores ``[n, C]`` (valid views in order) -> per-item max ``[B, C]``."""
    B, V = view_mask.shape
    full = scores.new_full((B, V, scores.shape[-1]), float("-inf"))
    full[view_mask] = scores
    return full.amax(dim=1)


def _prepare(images, targets, view_mask, views: bool, channels_last: bool):
    if view_mask is not None and not views:
        images, targets = flatten_views(images, targets, view_mask)
        view_mask = None
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets, view_mask


def _forward(model, images, view_mask):
    return model(images) if view_mask is None else model(images, view_mask)


def train_one_epoch(train_model, model, loader, optimizer, scheduler, *, device: torch.device, amp: bool,
                    masked: bool, views: bool, grad_clip: float | None, max_steps: int | None, step: int,
                    ema=None, channels_last: bool = False, freeze_bn: bool = False, progress: bool = False,
                    desc: str = "train") -> tuple[dict, int]:
    """One pass over ``loader``; returns (mean of each loss over batches and ranks, new step).

    ``train_model`` is what runs the forward (possibly DDP/compiled), ``model`` the bare model
    whose ``loss`` is called. With ``masked``, NaN targets become 0 and a mask excludes them.
    """
    from tqdm.auto import tqdm

    set_train_mode(train_model, freeze_bn)
    sums: dict = {}
    n_batches = 0
    it = tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for batch in it:
        if max_steps is not None and step >= max_steps:
            break
        if batch is None:  # every item of the batch was unreadable (listed by the dataset)
            continue
        images, targets, view_mask = split_batch(batch, device)
        images, targets, view_mask = _prepare(images, targets, view_mask, views, channels_last)
        mask = None
        if masked:
            mask = ~torch.isnan(targets)
            targets = torch.nan_to_num(targets, nan=0.0)
        with autocast_for(device, amp):
            out = _forward(train_model, images, view_mask)
        with nvtx_stage("loss"):
            losses = model.loss(out, targets, mask)
        optimizer.zero_grad(set_to_none=True)
        with nvtx_stage("backward"):
            losses["total"].backward()
        with nvtx_stage("optimizer"):
            if grad_clip is not None and grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(model, step=step)
        step += 1
        n_batches += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float()
        if progress and n_batches % 5 == 1:
            it.set_postfix(loss=f"{float(losses['total']):.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    it.close()
    names = sorted(sums)
    if names:
        total = du.all_reduce_sum(torch.stack([sums[k].reshape(()) for k in names]).to(device))
        batches = float(du.all_reduce_sum(torch.tensor([float(n_batches)], device=device)))
        avg = {k: float(v) / max(batches, 1.0) for k, v in zip(names, total.cpu())}
    else:
        avg = {}
    bad = {k: v for k, v in avg.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(f"non-finite training loss ({bad}); the last good checkpoint is kept -- "
                                 f"try a lower --lr or --grad-clip")
    return avg, step


@dataclass
class ScoredBatch:
    """One batch of :func:`score_batches`.

    ``batch``: the loader's batch as collated. ``scores``: float32 ``[B, C]`` on the model's
    device (multi-view items fused by max unless the model consumes views); None when the batch
    holds no image. ``targets``: ``[B, C]`` (NaN = unknown) or None when the batch carries none.
    ``extras``: the requested ``ModelOutput.extras`` entries (None where the model gives none),
    one row per image the model saw (per view when views are flattened).
    """

    batch: object
    scores: torch.Tensor | None
    targets: torch.Tensor | None
    extras: dict


def score_batches(model, loader, *, amp: bool = False, views: bool = False, channels_last: bool = False,
                  progress: bool = False, desc: str = "eval", extras: tuple = (),
                  unpack=split_batch) -> Iterator[ScoredBatch]:
    """The scoring loop: ``model`` (eval mode, no gradients) over ``loader``, one
    :class:`ScoredBatch` per batch; batches that are None (every item unreadable) are skipped.

    ``unpack(batch, device) -> (images | None, targets | None, view_mask | None)`` reads a
    collated batch (default: the datasets' ``(images, targets[, view_mask])``). Multi-view items
    (``images [B, V, 3, H, W]``) are scored per valid view and fused by max unless ``views``
    (the model then takes ``(images, view_mask)``). The model's training mode is restored when
    the loop ends or is abandoned.
    """
    from tqdm.auto import tqdm

    model = unwrap(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
            if batch is None:
                continue
            images, y, view_mask = unpack(batch, device)
            if images is None:
                yield ScoredBatch(batch, None, y, {})
                continue
            fuse = view_mask is not None and not views
            if fuse:
                images, _ = flatten_views(images, y, view_mask)
            if channels_last and images.dim() == 4:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.no_grad(), autocast_for(device, amp):
                out = model(images) if fuse else _forward(model, images, view_mask)
            s = out.scores.float()
            yield ScoredBatch(batch, fuse_views(s, view_mask) if fuse else s, y,
                              {k: out.extras.get(k) for k in extras})
    finally:
        model.train(was_training)


def score_loader(model, loader, info: du.DistInfo | None = None, *, amp: bool = False, views: bool = False,
                 channels_last: bool = False, progress: bool = False, desc: str = "eval"):
    """Scores ``[N, C]`` and targets ``[N, C]`` (float32 numpy, NaN = unknown) in dataset order,
    from :func:`score_batches`.

    Unreadable items are dropped (their rows are absent). Under torch.distributed with a
    DistributedSampler each rank scores its shard; the shards are all-gathered and the sampler's
    padding duplicates dropped, so every rank gets the full arrays.
    """
    info = info or du.DistInfo()
    model = unwrap(model)
    device = next(model.parameters()).device
    scores, targets = [], []
    sampler = getattr(loader, "sampler", None)
    sharded = isinstance(sampler, DistributedSampler) and info.distributed
    for scored in score_batches(model, loader, amp=amp, views=views, channels_last=channels_last,
                                progress=progress, desc=desc):
        scores.append(scored.scores)
        targets.append(scored.targets.float())
    C = model.num_classes
    s = torch.cat(scores) if scores else torch.zeros(0, C, device=device)
    t = torch.cat(targets) if targets else torch.zeros(0, C, device=device)
    if sharded:
        if s.shape[0] != len(sampler):
            raise RuntimeError("unreadable images under torch.distributed evaluation: fix or remove them "
                               "(see the dataset's skip list) -- sharded scores cannot be re-aligned")
        idx = torch.as_tensor(list(iter(sampler)), device=device, dtype=torch.int64)
        idx, s, t = du.all_gather_cat(idx), du.all_gather_cat(s), du.all_gather_cat(t)
        order = torch.argsort(idx, stable=True)
        idx, s, t = idx[order], s[order], t[order]
        keep = torch.ones_like(idx, dtype=torch.bool)
        keep[1:] = idx[1:] != idx[:-1]
        s, t = s[keep], t[keep]
    return s.cpu().numpy().astype(np.float32), t.cpu().numpy().astype(np.float32)
