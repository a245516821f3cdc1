"""Group-level train/val/test splits and the leak check shared by the real-data readers.

A group is whatever must never straddle two splits: a patient (ODIR-5K, CXR-LT), or the
patient/study/series component of a CT scan (RSNA-IHD).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .base import SPLITS

__all__ = ["group_split", "check_disjoint_groups"]


def group_split(group_ids: Sequence, *, seed: int, val_fraction: float, test_fraction: float,
                salt: int = 0) -> dict:
    """Seeded partition of items into train/val/test by group.

    The distinct groups are sorted (as strings), permuted by ``numpy.random.default_rng([seed,
    salt])`` and the first ``round(G * test_fraction)`` go to test, the next
    ``round(G * val_fraction)`` to val, the rest to train. The assignment of a group depends only
    on the set of groups, the seed and the salt (not on item order).

    Returns ``{"train"|"val"|"test": int64 array of item indices, ascending}``.
    """
    val_fraction, test_fraction = float(val_fraction), float(test_fraction)
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction + test_fraction must be in [0, 1) with each >= 0, "
                         f"got {val_fraction} + {test_fraction}")
    keys = [str(g) for g in group_ids]
    groups = sorted(set(keys))
    perm = np.random.default_rng([int(seed), int(salt)]).permutation(len(groups))
    n_test = int(round(len(groups) * test_fraction))
    n_val = int(round(len(groups) * val_fraction))
    split_of = {}
    for rank, g in enumerate(perm):
        split_of[groups[g]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    out = {s: [] for s in SPLITS}
    for i, k in enumerate(keys):
        out[split_of[k]].append(i)
    return {s: np.asarray(v, dtype=np.int64) for s, v in out.items()}


def check_disjoint_groups(groups_by_source: Mapping[str, Iterable], what: str = "patients",
                          dataset: str = "data") -> None:
    """Raise ``ValueError`` naming both sources when two of them share a group.

    ``groups_by_source`` maps a source name (a file or split name) to the group ids it holds;
    ``dataset`` prefixes the message.
    """
    seen = [(name, set(map(str, ids))) for name, ids in groups_by_source.items()]
    for a in range(len(seen)):
        for b in range(a + 1, len(seen)):
            shared = seen[a][1] & seen[b][1]
            if shared:
                examples = sorted(shared)[:3]
                raise ValueError(f"{dataset}: {len(shared)} {what} appear in both {seen[a][0]} and {seen[b][0]} "
                                 f"(e.g. {examples}): the splits leak {what}")
