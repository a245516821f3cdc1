"""Linear probe on pixels: how far a dataset is from linearly trivial.

One-vs-rest logistic regression (scikit-learn) on the raw images downsampled to 32 x 32 (area
average; gray 1024 or RGB 3072 features, standardised with the train split's statistics),
trained on the train split's labels as a user gets them (the synthetic benchmark's have missed
positives), one inverse regularisation strength C for all classes chosen by validation mAP,
evaluated on the test split with :func:`fact_fast.metrics.compute_metrics` (head / medium /
tail groups from the train prevalence, :func:`fact_fast.data.frequency_groups`). Repeated for
each seed (the synthetic datasets are regenerated per seed); the JSON holds every run and
mean +- std::

    python -m benchmarks.linear_probe                                  # "synthetic", seeds 0 1 2
    python -m benchmarks.linear_probe --dataset synthetic_motifs --image-size 64
    python -m benchmarks.linear_probe --dataset nih --root /data/nih --image-size 128
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from fact_fast.data import build_dataset, frequency_groups
from fact_fast.metrics import compute_metrics

PROBE_SIZE = 32
C_GRID = (1e-3, 1e-2, 1e-1, 1.0)


def pixel_features(ds, size: int = PROBE_SIZE, batch: int = 256) -> np.ndarray:
    """Every image of ``ds`` (via ``raw_image``) area-averaged to ``size`` x ``size``:
    float32 [N, size * size * channels], values in [0, 1]."""
    out = []
    for start in range(0, len(ds), batch):
        raw = np.stack([ds.raw_image(i) for i in range(start, min(start + batch, len(ds)))])
        x = torch.from_numpy(raw).float().div_(255.0)
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # [B, ch, H, W]
        out.append(F.adaptive_avg_pool2d(x, size).flatten(1).numpy())
    return np.concatenate(out) if out else np.zeros((0, size * size), np.float32)


def fit_probe(x_train, y_train, c_value: float) -> list:
    """One logistic regression per class (None where the train labels are constant or unknown)."""
    from sklearn.linear_model import LogisticRegression

    models = []
    for c in range(y_train.shape[1]):
        known = ~np.isnan(y_train[:, c])
        y = y_train[known, c]
        if y.size == 0 or y.min() == y.max():
            models.append(None)
            continue
        clf = LogisticRegression(C=c_value, max_iter=2000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at the largest C is harmless here
            clf.fit(x_train[known], y)
        models.append(clf)
    return models


def probe_scores(models, x) -> np.ndarray:
    """Positive-class probabilities [N, C]; a class without a model scores 0 everywhere."""
    cols = [m.predict_proba(x)[:, 1] if m is not None else np.zeros(len(x)) for m in models]
    return np.stack(cols, axis=1)


def run_seed(args, seed: int) -> dict:
    kw = dict(root=args.root, image_size=args.image_size, seed=seed, **args.dataset_kwargs)
    splits = {s: build_dataset(args.dataset, s, train=False, **kw) for s in ("train", "val", "test")}
    t0 = time.perf_counter()
    feats = {s: pixel_features(d) for s, d in splits.items()}
    render_s = time.perf_counter() - t0
    mean, std = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    feats = {s: (f - mean) / std for s, f in feats.items()}
    labels = {s: d.labels for s, d in splits.items()}
    for s in ("val", "test"):
        if np.isnan(labels[s]).any():
            raise ValueError(f"{args.dataset} {s}: unknown (NaN) labels are not supported by the probe's metrics")
    names = splits["train"].class_names
    train_known = np.where(np.isnan(labels["train"]), 0.0, labels["train"])
    groups = frequency_groups(train_known)

    t0 = time.perf_counter()
    val_map, best = {}, None
    for c_value in args.c_grid:
        models = fit_probe(feats["train"], labels["train"], c_value)
        m = compute_metrics(probe_scores(models, feats["val"]), labels["val"], class_names=names)["mAP"]
        val_map[str(c_value)] = m
        if best is None or (m is not None and m > best[1]):
            best = (c_value, m, models)
    fit_s = time.perf_counter() - t0
    c_value, _, models = best
    metrics = compute_metrics(probe_scores(models, feats["test"]), labels["test"], class_names=names, groups=groups)
    print(f"seed {seed}: C={c_value:g} val mAP {100 * best[1]:.1f}  test mAP {100 * metrics['mAP']:.1f}  "
          f"AUC {100 * metrics['macro_auc']:.1f}  groups {metrics.get('group_map')}  "
          f"(features {render_s:.1f} s, fits {fit_s:.1f} s)", file=sys.stderr, flush=True)
    return {"seed": seed, "C": c_value, "val_mAP_per_C": val_map, "split_sizes": {s: len(d) for s, d in splits.items()},
            "train_prevalence": dict(zip(names, np.nanmean(labels["train"], axis=0).tolist())),
            "features_seconds": render_s, "fit_seconds": fit_s, "test": metrics}


def _mean_std(values) -> dict | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, "n": len(vals)}


def summarize(runs: list) -> dict:
    """mean +- std over seeds of the headline metrics (and every group entry)."""
    out = {key: _mean_std([r["test"].get(key) for r in runs])
           for key in ("mAP", "macro_auc", "f1_micro", "prevalence_baseline_map")}
    for key, value in runs[0]["test"].items():
        if key.startswith("group_") and isinstance(value, dict):  # group_map, and group AUC once it exists
            out[key] = {g: _mean_std([r["test"][key].get(g) for r in runs]) for g in value}
    return out


def _kv(text: str) -> tuple:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="synthetic", help="registered dataset name (fact_fast.data.DATASETS)")
    p.add_argument("--root", default=None, help="dataset root (real datasets)")
    p.add_argument("--image-size", type=int, default=128, help="size the dataset renders/loads at before "
                   f"the {PROBE_SIZE} x {PROBE_SIZE} downsampling")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--c-grid", type=float, nargs="+", default=list(C_GRID), help="values of C tried on val")
    p.add_argument("--dataset-kwargs", type=_kv, nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra dataset options, e.g. num_samples=500")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/linear_probe_<dataset>.json)")
    args = p.parse_args(argv)
    args.dataset_kwargs = dict(args.dataset_kwargs)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from benchmarks.run import environment
    import sklearn

    runs = [run_seed(args, s) for s in args.seeds]
    doc = {"benchmark": "linear probe on pixels", "environment": {**environment(torch.device("cpu")),
                                                                   "sklearn": sklearn.__version__},
           "config": {**vars(args), "probe_size": PROBE_SIZE}, "summary": summarize(runs), "runs": runs}
    out = args.out or os.path.join("benchmarks", "results", f"linear_probe_{args.dataset}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    s = doc["summary"]
    fmt = lambda d: "n/a" if d is None else f"{100 * d['mean']:.1f} +- {100 * d['std']:.1f}"  # noqa: E731
    print(f"{args.dataset}: test mAP {fmt(s['mAP'])}, macro AUC {fmt(s['macro_auc'])}, "
          + ", ".join(f"{g} AP {fmt(v)}" for g, v in (s.get("group_map") or {}).items()) + f"  -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
