"""Atomic checkpoints: a crash mid-save never leaves a truncated or missing checkpoint."""
from __future__ import annotations

import glob
import os
import random
import tempfile
from typing import Any

import numpy as np
import torch

__all__ = ["atomic_save", "load_checkpoint", "CheckpointError", "find_latest", "capture_rng_state",
           "restore_rng_state"]

LAST, BEST = "last.pt", "best.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not a fact_fast checkpoint."""


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


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a fact_fast checkpoint with readable errors for missing/corrupt files."""
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
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # zip errors, unpickling errors, EOF ...
        raise CheckpointError(f"could not read checkpoint {path}: it is corrupt or not a PyTorch file "
                              f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_spec" not in ckpt:
        raise CheckpointError(f"{path} is not a fact_fast training checkpoint of this version "
                              f"(expected keys 'model', 'model_spec', ...)")
    ckpt["_path"] = path
    return ckpt


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
