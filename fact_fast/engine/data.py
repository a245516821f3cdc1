"""Datasets, the task description and data loaders of a run (model-agnostic)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from fact_fast.config import TrainConfig
from fact_fast.data import (MultiViewDataset, attach_cache, build_dataset, collate, graph_report, label_embeddings,
                            label_graph)
from fact_fast.metrics import frequency_groups, load_groups
from fact_fast.models import TaskInfo
from fact_fast.utils import distributed as du

__all__ = ["RunData", "build_run_data", "make_loader", "stage_dataset", "set_loader_epoch", "ClassAwareSampler",
           "split_batch", "SAMPLERS"]

SAMPLERS = ("random", "class_aware", "cycle")


@dataclass
class RunData:
    """The datasets of a run and what the model may know about the task (train split only)."""

    datasets: dict
    task: TaskInfo
    groups: list
    graph_report: dict
    pipeline: dict
    has_unknown_labels: bool
    skipped: dict = field(default_factory=dict)

    @property
    def class_names(self) -> list:
        return self.task.class_names


def _pipeline_overrides(cfg: TrainConfig) -> dict:
    out = {}
    for key in ("resize", "crop", "hflip", "rotate", "translate"):
        v = getattr(cfg, key)
        if v is not None:
            out[key] = v
    return out


def _attach_cache(ds, cache_dir: str, workers: int, progress: bool) -> None:
    """The on-disk image cache under ``ds`` (under a multi-view dataset's per-image dataset, whose
    groups are then recomputed: the cache drops unreadable files)."""
    base = ds.base if isinstance(ds, MultiViewDataset) else ds
    before = len(base)
    attach_cache(base, cache_dir, ds.pipeline.resize_to, workers=workers, progress=progress)
    if base is not ds and len(base) != before:
        ds.regroup()


def build_run_data(cfg: TrainConfig, splits=("train", "val", "test"), progress: bool = True) -> RunData:
    """Build the splits (train first) and everything derived from the TRAIN split only: the label
    graph, the frequency groups, the label embeddings and the prevalence."""
    kw = dict(cfg.dataset_kwargs or {})
    pipeline = _pipeline_overrides(cfg)
    datasets: dict = {}
    for split in ("train",) + tuple(s for s in splits if s != "train"):
        ds = build_dataset(cfg.dataset, split, root=cfg.data_root, image_size=cfg.image_size, seed=cfg.seed,
                           pipeline=pipeline, **kw)
        if len(ds) == 0:
            raise ValueError(f"dataset {cfg.dataset!r}: the {split} split is empty "
                             f"(data root {cfg.data_root!r}, options {kw}); check the split files")
        datasets[split] = ds
    if cfg.cache_dir:
        for ds in datasets.values():
            _attach_cache(ds, os.path.expanduser(cfg.cache_dir), cfg.workers, progress)
    train = datasets["train"]
    labels = np.asarray(train.labels, dtype=np.float32)
    graph = label_graph(labels, cfg.graph, **dict(cfg.graph_kwargs or {}))
    if cfg.groups:
        groups = load_groups(cfg.groups, list(train.class_names))
    else:
        groups = list(frequency_groups(labels))
    task = TaskInfo(
        class_names=list(train.class_names),
        label_embeddings=label_embeddings(train.class_names, dataset=cfg.dataset, path=cfg.label_embeddings),
        graph={"rowptr": graph.rowptr, "col": graph.col, "value": graph.value,
               "add_self_loops": graph.add_self_loops},
        prevalence=torch.as_tensor(train.label_prevalence, dtype=torch.float64),
        num_train=len(train))
    has_unknown = any(bool(np.isnan(np.asarray(d.labels)).any()) for d in datasets.values())
    return RunData(datasets=datasets, task=task, groups=groups,
                   graph_report=graph_report(graph, list(train.class_names)),
                   pipeline=datasets["val" if "val" in datasets else "train"].pipeline.to_dict(),
                   has_unknown_labels=has_unknown,
                   skipped={s: list(d.skipped) for s, d in datasets.items() if d.skipped})


class ClassAwareSampler(Sampler):
    """Class-aware (class-balanced) sampling for multi-label data: each draw picks a class, then a
    random training image positive for it (Shen et al., ECCV 2016).

    ``no_finding`` (default True): the images without any positive label (all negative or
    unknown) form one more, virtual class, "no finding", placed after the real ones, so they are
    drawn as often as any class instead of never -- the role CXR-LT's "No Finding" class plays in
    the cycle sampling of "Enhancing Multi-Label Long-Tailed Classification on Chest X-Rays
    through ML-GCN Augmentation" (ICCV Workshops 2023). Classes without a positive are left out.

    ``class_order``: ``"random"`` draws the class uniformly at random (sampler ``class_aware``);
    ``"cycle"`` visits the classes in turn, 0, 1, ..., K−1, 0, ... (sampler ``cycle``: the
    ``class_choice="cycle"`` of that paper's multi-label balanced sampler), so every run of K
    draws holds each class exactly once. The cycle continues across epochs and, under DDP, is
    dealt round-robin to the ranks (draw k of rank r is global draw k·world_size + r).
    ``num_samples`` per epoch defaults to the dataset size; under DDP each rank draws
    ``num_samples / world_size``. Deterministic given ``(seed, epoch, rank)``.

    ``labels``: ``[N, C]`` with 1 = positive, 0 = negative, NaN = unknown. ``pools``: the
    index arrays (int64) the draws pick from, one per drawn class (``class_of_pool`` gives each
    pool's class index, ``C`` for "no finding")."""

    def __init__(self, labels, seed: int = 0, num_samples: int | None = None, rank: int = 0, world_size: int = 1,
                 class_order: str = "random", no_finding: bool = True):
        if class_order not in ("random", "cycle"):
            raise ValueError(f"class_order must be 'random' or 'cycle', got {class_order!r}")
        if not isinstance(no_finding, bool):
            raise TypeError(f"no_finding must be True or False, got {no_finding!r}")
        y = np.asarray(labels, dtype=np.float32)
        if y.ndim != 2:
            raise ValueError(f"labels must be a 2-D [N, C] array, got shape {list(y.shape)}")
        y = np.nan_to_num(y, nan=0.0) > 0.5
        self.pools, self.class_of_pool = [], []
        for c in range(y.shape[1]):
            if y[:, c].any():
                self.pools.append(np.flatnonzero(y[:, c]))
                self.class_of_pool.append(c)
        empty = np.flatnonzero(~y.any(axis=1))
        if no_finding and len(empty):
            self.pools.append(empty)
            self.class_of_pool.append(y.shape[1])
        if not self.pools:
            raise ValueError("sampler: class_aware sampling needs at least one positive label in the train split")
        n = len(y) if num_samples is None else int(num_samples)
        self.num_samples = (n + world_size - 1) // world_size
        self.seed, self.rank, self.world_size, self.epoch = int(seed), int(rank), int(world_size), 0
        self.class_order = class_order

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 0xCA5])
        if self.class_order == "cycle":
            first = self.epoch * self.num_samples * self.world_size + self.rank
            classes = (first + self.world_size * np.arange(self.num_samples, dtype=np.int64)) % len(self.pools)
        else:
            classes = rng.integers(0, len(self.pools), self.num_samples)
        for c in classes:
            members = self.pools[c]
            yield int(members[rng.integers(0, len(members))])


def stage_dataset(ds, stage):
    """``ds`` as a stage consumes it: a stage with ``views`` gets multi-view items -- the dataset
    itself when it is multi-view already, else its images grouped by ``study_ids`` (each image its
    own study when there are none) with at most ``stage.max_views`` views."""
    if not stage.views or isinstance(ds, MultiViewDataset):
        return ds
    ids = ds.study_ids if ds.study_ids is not None else range(len(ds))
    return MultiViewDataset(ds, list(ids), max_views=stage.max_views)


def make_loader(ds, batch_size: int, *, train: bool, info: du.DistInfo, workers: int, seed: int,
                device: torch.device, sampler: str = "random", no_finding: bool = True) -> DataLoader:
    """A DataLoader over ``ds`` with the collate that drops unreadable items and stacks views;
    ``no_finding`` is :class:`ClassAwareSampler`'s (class-balanced samplers only)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if train and sampler in ("class_aware", "cycle"):
        s: Sampler | None = ClassAwareSampler(ds.labels, seed, rank=info.rank, world_size=info.world_size,
                                              class_order="cycle" if sampler == "cycle" else "random",
                                              no_finding=no_finding)
    elif train or info.distributed:
        # one shuffle for every world size: the permutation of epoch e depends only on (seed, e), and
        # rank r takes every world_size-th index, so N processes with batch b see, step by step, the
        # same samples as one process with batch N*b
        s = DistributedSampler(ds, num_replicas=info.world_size, rank=info.rank, shuffle=train, seed=seed,
                               drop_last=False)
    else:
        s = None
    return DataLoader(ds, batch_size=batch_size, sampler=s, shuffle=False, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=False, collate_fn=collate,
                      persistent_workers=workers > 0)


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Deterministic, resumable data order: the shuffle of epoch e depends only on (seed, e)."""
    s = loader.sampler
    if isinstance(s, (DistributedSampler, ClassAwareSampler)):
        s.set_epoch(epoch)


def split_batch(batch, device: torch.device):
    """``(images, targets, view_mask | None)`` on ``device`` from a collated batch."""
    if len(batch) == 3:
        images, targets, view_mask = batch
        view_mask = view_mask.to(device, non_blocking=True)
    else:
        (images, targets), view_mask = batch, None
    return images.to(device, non_blocking=True), targets.to(device, non_blocking=True), view_mask
