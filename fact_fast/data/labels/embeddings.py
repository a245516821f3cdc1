"""Text embeddings of class names: the GCN node features S^0 of FACT.

Resolution order of :func:`label_embeddings`:

1. ``path``: a user ``.npy`` file of shape [C, E] (row c embeds ``class_names[c]``).
2. The shipped embeddings of a built-in label set (``fact_fast/data/labels/shipped_embeddings/<set>.npy``,
   sentence-transformers/all-MiniLM-L6-v2, 384-dim, L2-normalized, computed offline by
   ``scripts/make_label_embeddings.py``), matched by ``dataset`` name or, failing that, by the
   class names. Rows are picked by name, so any subset / order of a built-in set works.
3. A deterministic fallback (with a one-time warning): hashed character n-gram vectors
   (n = 3, 4, 5 of the lower-cased name with boundary markers; blake2b hash -> one of 384
   buckets and a sign) plus a hashed whole-word term, L2-normalized. Names sharing words or
   sub-words get similar vectors; it carries no medical knowledge.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .sets import DATASET_TO_LABEL_SET, LABEL_SETS

__all__ = ["label_embeddings", "hashed_embeddings", "shipped_label_sets", "EMBEDDING_DIM",
           "EMBEDDINGS_DIR"]

EMBEDDING_DIM = 384
EMBEDDINGS_DIR = Path(__file__).resolve().parent / "shipped_embeddings"
_warned_fallback = False


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def shipped_label_sets() -> dict:
    """Label set name -> class names, for the sets whose embedding file is present."""
    return {k: list(v[0]) for k, v in LABEL_SETS.items() if (EMBEDDINGS_DIR / f"{k}.npy").is_file()}


def _load_set(set_name: str) -> tuple[list, np.ndarray]:
    names = list(LABEL_SETS[set_name][0])
    emb = np.load(EMBEDDINGS_DIR / f"{set_name}.npy").astype(np.float32)
    meta = EMBEDDINGS_DIR / f"{set_name}.json"
    if meta.is_file():
        names = json.loads(meta.read_text())["class_names"]
    if emb.shape[0] != len(names):
        raise RuntimeError(f"corrupt shipped embeddings {set_name}.npy: {emb.shape[0]} rows for {len(names)} names")
    return names, emb


def _pick(set_names, emb, class_names):
    """Rows of emb for class_names (matched case/underscore-insensitively) or None."""
    index = {_norm(n): i for i, n in enumerate(set_names)}
    try:
        rows = [index[_norm(n)] for n in class_names]
    except KeyError:
        return None
    return emb[rows]


def hashed_embeddings(class_names, dim: int = EMBEDDING_DIM) -> np.ndarray:
    """Deterministic hashed character n-gram embeddings, float32 [C, dim], L2-normalized."""
    out = np.zeros((len(class_names), dim), dtype=np.float32)
    for r, name in enumerate(class_names):
        text = _norm(str(name))
        feats = []
        for word in text.split() or [""]:
            w = f"<{word}>"
            feats.append(("w", word, 2.0))
            for n in (3, 4, 5):
                feats.extend(("g", w[i:i + n], 1.0) for i in range(max(1, len(w) - n + 1)))
        for kind, tok, weight in feats:
            h = hashlib.blake2b(f"{kind}:{tok}".encode(), digest_size=8).digest()
            v = int.from_bytes(h, "little")
            out[r, v % dim] += weight * (1.0 if (v >> 32) & 1 else -1.0)
        nrm = np.linalg.norm(out[r])
        if nrm > 0:
            out[r] /= nrm
    return out


def label_embeddings(class_names, *, dataset: str | None = None, path: str | None = None) -> torch.Tensor:
    """Embeddings of ``class_names``: float32 tensor [C, E] (see the module docstring)."""
    global _warned_fallback
    class_names = [str(n) for n in class_names]
    C = len(class_names)
    if C == 0:
        raise ValueError("class_names must not be empty")
    if path is not None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"label embedding file not found: {path}")
        emb = np.load(path)
        if emb.ndim != 2 or emb.shape[0] != C or emb.shape[1] < 1:
            raise ValueError(f"path: embeddings in {path} must have shape [{C}, E] for {C} classes, "
                             f"got {list(emb.shape)}")
        if not np.all(np.isfinite(emb)):
            raise ValueError(f"path: embeddings in {path} contain NaN/inf")
        return torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))

    candidates = []
    if dataset is not None:
        key = DATASET_TO_LABEL_SET.get(dataset.lower(), dataset.lower())
        if key in LABEL_SETS:
            candidates.append(key)
    candidates += [k for k in LABEL_SETS if k not in candidates]
    for set_name in candidates:
        if not (EMBEDDINGS_DIR / f"{set_name}.npy").is_file():
            continue
        names, emb = _load_set(set_name)
        picked = _pick(names, emb, class_names)
        if picked is not None:
            return torch.from_numpy(np.ascontiguousarray(picked, dtype=np.float32))

    if not _warned_fallback:
        warnings.warn(
            "fact_fast: no shipped text embeddings match these class names "
            f"({class_names[:3]}{'...' if C > 3 else ''}); using deterministic hashed character "
            "n-gram vectors (dim 384). Pass path=<your [C, 384] .npy> for real sentence embeddings "
            "(see scripts/make_label_embeddings.py).", UserWarning, stacklevel=2)
        _warned_fallback = True
    return torch.from_numpy(hashed_embeddings(class_names))
