"""Where FACT's atomic visual space costs: measurements on trained checkpoints (docs/fact_head.md).

For each FACT checkpoint (a run directory or a ``.pt``), on one split (validation by default):

* ``quantisation_error``: ‖Z − Z^q‖² / ‖Z‖² summed over the split's tokens -- how far the codebook
  moves the tokens the head reads;
* ``mAP`` and ``mAP_vq_bypassed``: the model's mAP as trained, and with V = Z at inference (the
  same weights, the quantiser skipped) -- what the snap to the codebook loses at inference;
* ``probe_mAP``: a logistic-regression probe (L2, full-batch L-BFGS, standardised features) on the
  mean-pooled tokens Z, fitted on the train split and read on ``--split``, best of
  :data:`PROBE_WEIGHT_DECAYS` -- how linearly informative the trunk and projection came out,
  whatever the head on top.

A run without the VQ gets only ``mAP`` and ``probe_mAP``, so a FACT run and its no-VQ ablation
compare side by side::

    python -m benchmarks.fact_vq_diagnostics runs/bundled/fact/seed0 runs/bundled/fact_no_vq/seed0
    python -m benchmarks.fact_vq_diagnostics runs/bundled/fact/seed* --json vq.json
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from fact_fast.inference import load_trained_model
from fact_fast.inference.checkpoints import checkpoint_loader
from fact_fast.inference.scoring import score_checkpoint_split
from fact_fast.metrics import compute_metrics
from fact_fast.models.fact import FACT

PROBE_WEIGHT_DECAYS = (1e-3, 1e-2)


@contextmanager
def vq_bypassed(model: FACT):
    """``model`` with V = Z (its quantiser removed) inside the block."""
    vq, model.vq = model.vq, None
    try:
        yield model
    finally:
        model.vq = vq


@torch.no_grad()
def _tokens(model: FACT, loader) -> dict:
    """Mean-pooled Z ``[N, d]``, the targets, and ‖Z − Z^q‖² / ‖Z‖² over ``loader`` (None without VQ)."""
    pooled, targets, err, energy = [], [], 0.0, 0.0
    for batch in loader:
        if batch is None:  # every item of the batch was unreadable
            continue
        images, y = batch[0], batch[1]
        z, _ = model.features(images)
        if model.vq is not None:
            err += float((z - model.vq(z)[0]).pow(2).sum())
            energy += float(z.pow(2).sum())
        pooled.append(z.mean(1).float())
        targets.append(y)
    return {"pooled": torch.cat(pooled), "targets": torch.cat(targets),
            "quantisation_error": err / energy if energy > 0 else None}


def probe_map(train_x: torch.Tensor, train_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
              weight_decay: float) -> float:
    """mAP (%) on ``(x, y)`` of one-vs-rest logistic regression fitted on ``(train_x, train_y)``
    (``[N, d]`` float, ``[N, C]`` 1 / 0 / NaN, unknown labels masked)."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    tx, vx = (train_x - mean) / std, (x - mean) / std
    known = ~torch.isnan(train_y)
    ty = torch.nan_to_num(train_y).float()
    w = torch.zeros(tx.shape[1], ty.shape[1], requires_grad=True)
    b = torch.zeros(ty.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        bce = F.binary_cross_entropy_with_logits(tx @ w + b, ty, reduction="none")
        loss = bce[known].mean() + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return 100 * compute_metrics((vx @ w + b).sigmoid().numpy(), y.numpy())["mAP"]


def diagnose(path: str, split: str = "val") -> dict:
    model, ckpt = load_trained_model(path, "cpu")
    if not isinstance(model, FACT):
        raise ValueError(f"{path}: a {type(model).__name__} checkpoint; these diagnostics read FACT models")
    loaders = {s: checkpoint_loader(model, ckpt, s, views=False) for s in dict.fromkeys(("train", split))}
    scores, targets = score_checkpoint_split(model, ckpt, split)
    seen = _tokens(model, loaders[split])
    train = _tokens(model, loaders["train"]) if split != "train" else seen
    out = {"checkpoint": ckpt.path, "split": split, "use_vq": model.vq is not None,
           "mAP": 100 * compute_metrics(scores, targets)["mAP"]}
    if model.vq is not None:
        out["quantisation_error"] = seen["quantisation_error"]
        with vq_bypassed(model):
            bypassed, _ = score_checkpoint_split(model, ckpt, split)
        out["mAP_vq_bypassed"] = 100 * compute_metrics(bypassed, targets)["mAP"]
    out["probe_mAP"] = max(probe_map(train["pooled"], train["targets"], seen["pooled"], seen["targets"], wd)
                           for wd in PROBE_WEIGHT_DECAYS)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fact_vq_diagnostics",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="FACT run directories or checkpoint files")
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for path in args.checkpoints:
        row = diagnose(path, args.split)
        rows.append(row)
        extra = "" if not row["use_vq"] else (f"  quantisation error {row['quantisation_error']:.3f}"
                                              f"  mAP with the VQ bypassed {row['mAP_vq_bypassed']:.2f}")
        print(f"{path}: {args.split} mAP {row['mAP']:.2f}  probe on mean-pooled Z {row['probe_mAP']:.2f}{extra}",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": "python -m benchmarks.fact_vq_diagnostics " + " ".join(sys.argv[1:] if argv is None
                                                                                         else argv),
                       "device": "cpu", "torch_threads": args.threads, "rows": rows}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
