"""The run checkpoint (:class:`RunCheckpoint`) and atomic saving: a crash mid-save never leaves a
truncated or missing checkpoint."""
from __future__ import annotations

import glob
import os
import random
import tempfile
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch

__all__ = ["RunCheckpoint", "SCHEMA_VERSION", "atomic_save", "load_checkpoint", "CheckpointError", "find_latest",
           "capture_rng_state", "restore_rng_state"]

LAST, BEST = "last.pt", "best.pt"
# Version of the file layout :class:`RunCheckpoint` writes. A file without a version key but with
# 'model' and 'model_spec' loads with its missing keys at their defaults (it can be evaluated, not
# resumed); version 1 files have no model_spec and cannot be rebuilt.
SCHEMA_VERSION = 2


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, not a fact_fast run checkpoint, or of an unknown version."""


@dataclass
class RunCheckpoint:
    """One training checkpoint (``last.pt``, ``best-<stage>.pt``, ``best.pt``) and the only code
    that knows the file's keys. The file is a ``torch.save``d dict of these fields plus
    ``"version"`` (:data:`SCHEMA_VERSION`); ``path`` and ``file_version`` describe the file it was
    read from and are not stored.

    Tensors live in the state dicts: ``model`` / ``ema`` (``{name: tensor}`` of the model, on CPU
    after :meth:`load`), ``optimizer`` / ``scheduler`` (torch's ``state_dict()`` layouts).
    """

    model: dict                              # model weights (the EMA's in a best checkpoint with EMA)
    model_spec: dict                         # name, class, config, task: what rebuilds the model
    ema: dict | None = None                  # EMA weights to resume from (last.pt only)
    training_state: dict = field(default_factory=dict)  # the model's own non-weight state (VQ restart window)
    optimizer: dict | None = None
    scheduler: dict | None = None
    stage: str | None = None                 # name of the stage that wrote it
    stage_index: int = 0
    eval_views: bool = False                 # the stage scores multi-view items
    epoch: int = 0                           # completed epochs of this stage
    step: int = 0                            # optimizer steps taken in this stage
    best_metric: float | None = None         # best validation select_metric of this stage so far
    select_metric: str | None = None
    metrics: dict = field(default_factory=dict)  # {"val": {metric: value}} of the epoch saved
    config: dict = field(default_factory=dict)   # TrainConfig.to_dict() of the run
    class_names: list = field(default_factory=list)
    preprocessing: dict | None = None        # ImagePipeline.to_dict() of the eval transform
    groups: dict | None = None               # class name -> head/medium/tail
    train_prevalence: list | None = None     # float per class
    label_graph: dict | None = None          # the label-graph report
    default_threshold: float = 0.5
    thresholds: dict | None = None           # {"f1": [C floats], "youden": [C floats]} (best checkpoints)
    rng: dict | None = None                  # capture_rng_state() at the save
    torch_version: str | None = None
    path: str | None = None                  # the file it was loaded from (not stored)
    file_version: int | None = SCHEMA_VERSION  # the version that file was written with, None: no version key
    #                                          (not stored)

    _NOT_STORED: ClassVar[tuple] = ("path", "file_version")

    def to_dict(self) -> dict:
        """The stored dict: every field but ``path``/``file_version``, plus ``"version"``."""
        out = {"version": SCHEMA_VERSION}
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._NOT_STORED})
        return out

    def save(self, path: str) -> str:
        """Write atomically (see :func:`atomic_save`); returns the absolute path."""
        return atomic_save(self.to_dict(), path)

    @classmethod
    def from_dict(cls, d: Any, path: str | None = None) -> RunCheckpoint:
        """Map a stored dict (this version or one without a version key) onto the fields. Raises
        :class:`CheckpointError` naming ``path`` for anything else."""
        where = path or "the checkpoint"
        if not isinstance(d, dict) or "model" not in d:
            raise CheckpointError(f"{where} is not a fact_fast training checkpoint (expected a dict with "
                                  f"'model', 'model_spec', ...)")
        version = d.get("version")
        if version is not None and (not isinstance(version, int) or version > SCHEMA_VERSION):
            raise CheckpointError(f"{where}: checkpoint version {version!r} is newer than this fact_fast reads "
                                  f"(version {SCHEMA_VERSION}); upgrade fact_fast")
        if "model_spec" not in d:
            raise CheckpointError(f"{where} was written by an older fact_fast (checkpoint version {version}, no "
                                  f"model_spec) and cannot be rebuilt; retrain it")
        names = {f.name for f in fields(cls)} - set(cls._NOT_STORED)
        values = {k: v for k, v in d.items() if k in names}
        # None where an old writer had no value: the field's default
        for name in ("training_state", "metrics", "config", "class_names"):
            if name in values and values[name] is None:
                del values[name]
        return cls(**values, path=path, file_version=version)

    @classmethod
    def load(cls, path: str, map_location: str | torch.device = "cpu") -> RunCheckpoint:
        """Read ``path`` (a checkpoint file, or a run directory: its ``best.pt``, else ``last.pt``).
        Raises :class:`CheckpointError` (a ValueError) naming the file when it is missing, corrupt,
        not a run checkpoint, or of a newer version."""
        if not path or not os.path.exists(path):
            raise CheckpointError(f"checkpoint not found: {path}")
        if os.path.isdir(path):
            for name in (BEST, LAST):
                if os.path.isfile(os.path.join(path, name)):
                    path = os.path.join(path, name)
                    break
            else:
                raise CheckpointError(f"{path} is a directory without {BEST} or {LAST}")
        try:
            raw = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # zip errors, unpickling errors, EOF ...
            raise CheckpointError(f"could not read checkpoint {path}: it is corrupt or not a PyTorch file "
                                  f"({type(exc).__name__}: {exc})") from exc
        return cls.from_dict(raw, path=path)


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> RunCheckpoint:
    """:meth:`RunCheckpoint.load`."""
    return RunCheckpoint.load(path, map_location)


def atomic_save(obj: Any, path: str) -> str:
    """``torch.save`` to a temp file in the same directory, fsync it, then ``os.replace`` it over
    ``path`` (atomic on POSIX and Windows); the directory entry is fsynced too where supported."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def find_latest(root: str = "runs", name: str = LAST) -> str | None:
    """Newest ``root/*/name`` by modification time, or None."""
    cands = glob.glob(os.path.join(root, "*", name))
    return max(cands, key=os.path.getmtime) if cands else None


def capture_rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict | None) -> None:
    if not state:
        return
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu() if isinstance(state["torch"], torch.Tensor) else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except Exception:
            pass
