"""Class prevalence and the head / medium / tail frequency groups (CXR-LT's cut-offs, or a groups
file)."""
from __future__ import annotations

import difflib
import json
import os

import numpy as np

from .arrays import check_labels, class_names_for, to_numpy

GROUPS = ("head", "medium", "tail")
CXR_LT_HEAD = 0.10
CXR_LT_TAIL = 0.01


def class_prevalence(labels) -> np.ndarray:
    """Per-class prevalence of ``labels`` float ``[N, C]`` (1 / 0 / NaN): positives / known rows,
    float64 ``[C]``; NaN for a class with no known row."""
    y = to_numpy(labels, "labels")
    if y.ndim != 2:
        raise ValueError(f"labels must be a 2-D [N, C] array, got shape {list(y.shape)}")
    check_labels(y, "labels")
    known = (~np.isnan(y)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(known > 0, np.nansum(y, axis=0) / np.maximum(known, 1), np.nan)


def frequency_groups(labels_or_prevalence, head: float = CXR_LT_HEAD, tail: float = CXR_LT_TAIL, *,
                     method: str = "threshold") -> list[str]:
    """Assign each class to "head", "medium" or "tail" from its TRAIN prevalence.

    ``labels_or_prevalence``: the train labels float ``[N, C]`` (1 / 0 / NaN; prevalence over the
    known rows) or their ``[C]`` prevalences.

    * ``"threshold"`` (default): CXR-LT, as in the FACT paper: prevalence > ``head`` -> head,
      < ``tail`` -> tail, otherwise medium. A group may come out empty; it is then reported as
      empty (its means are None), never replaced by another rule.
    * ``"tercile"``: only when asked: classes sorted by prevalence (ties by class index) and cut
      into three near-equal groups, the most frequent third head, the least frequent tail.
    """
    if method not in ("threshold", "tercile"):
        raise ValueError(f"method must be one of ['threshold', 'tercile'], got {method!r}")
    if not 0.0 <= tail <= head <= 1.0:
        raise ValueError(f"need 0 <= tail <= head <= 1, got head={head}, tail={tail}")
    arr = to_numpy(labels_or_prevalence, "labels_or_prevalence")
    if arr.ndim == 2:
        if arr.shape[0] == 0:
            raise ValueError("labels_or_prevalence: the label matrix has no rows")
        prev = class_prevalence(arr)
    elif arr.ndim == 1:
        prev = arr
    else:
        raise ValueError(f"labels_or_prevalence must be [N, C] labels or [C] prevalences, "
                         f"got shape {list(arr.shape)}")
    if np.isnan(prev).any():
        raise ValueError(f"classes {np.flatnonzero(np.isnan(prev)).tolist()} have no known label "
                         "(undefined prevalence); give their group explicitly with load_groups")
    if method == "threshold":
        return ["head" if p > head else ("tail" if p < tail else "medium") for p in prev]
    out = [""] * len(prev)
    for rank, c in enumerate(np.argsort(-prev, kind="stable")):
        out[c] = GROUPS[(rank * 3) // len(prev)]  # first ceil(C/3) head, last floor(C/3) tail
    return out


def load_groups(path: str, class_names) -> list[str]:
    """Read a user's head/medium/tail assignment (``--groups file.json``) in ``class_names`` order.

    The JSON file is either ``{"head": [names], "medium": [names], "tail": [names]}`` (a group
    may be missing or empty) or ``{"class name": "head" | "medium" | "tail", ...}``. Every class
    must be assigned exactly once. Raises ``FileNotFoundError`` or ``ValueError`` naming the file.
    """
    names = class_names_for(class_names, len(list(class_names)))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"groups file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as fh:
            spec = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"groups file {path!r} is not valid JSON: {e}") from None
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"groups file {path!r} must hold a non-empty JSON object")
    if all(isinstance(v, list) for v in spec.values()):
        bad = sorted(set(spec) - set(GROUPS))
        if bad:
            raise ValueError(f"groups file {path!r}: unknown groups {bad}; valid groups: {list(GROUPS)}")
        pairs = [(str(n), g) for g, members in spec.items() for n in members]
    elif all(isinstance(v, str) for v in spec.values()):
        pairs = list(spec.items())
        bad = sorted({g for _, g in pairs if g not in GROUPS})
        if bad:
            raise ValueError(f"groups file {path!r}: unknown groups {bad}; valid groups: {list(GROUPS)}")
    else:
        raise ValueError(f"groups file {path!r} must map each group to a list of class names, or each "
                         f"class name to one of {list(GROUPS)}")
    assigned: dict[str, str] = {}
    for n, g in pairs:
        if n in assigned:
            raise ValueError(f"groups file {path!r}: class {n!r} is assigned twice ({assigned[n]!r} and {g!r})")
        assigned[n] = g
    unknown = [n for n in assigned if n not in names]
    if unknown:
        hints = {n: difflib.get_close_matches(n, names, n=1) for n in unknown}
        hint = "; ".join(f"{n!r} (did you mean {h[0]!r}?)" if h else repr(n) for n, h in hints.items())
        raise ValueError(f"groups file {path!r} names classes the dataset does not have: {hint}")
    missing = [n for n in names if n not in assigned]
    if missing:
        raise ValueError(f"groups file {path!r} leaves classes without a group: {missing}")
    return [assigned[n] for n in names]
