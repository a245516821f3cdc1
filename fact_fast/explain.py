"""Per-class heatmaps of a trained model's evidence (used by ``predict --explain``).

FACT explains itself: its semantic interface attends to the M feature positions with
σ(Q Vᵀ/√d + b), so the map of class c is that attention, upsampled to the image; the codebook atom
at each position tells which atoms of the atomic visual space carried the class's evidence (the
attention mass per atom). Models without such a map are explained with Grad-CAM (the `grad-cam`
package) on their backbone's last feature map.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["class_heatmaps", "atom_evidence", "overlay", "write_explanations"]


class _ScoresAsLogits(torch.nn.Module):
    """Grad-CAM wants a module returning per-class logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        if out.logits is not None:
            return out.logits
        p = out.scores.clamp(1e-6, 1 - 1e-6)
        return torch.log(p) - torch.log1p(-p)


def class_heatmaps(model, image: torch.Tensor, classes: list) -> tuple[np.ndarray, dict]:
    """Heatmaps float32 ``[len(classes), S, S]`` in [0, 1] for one preprocessed image ``[3, S, S]``,
    and extras (``"method"``; FACT: ``"codes"`` [h, w] and the raw attention ``"maps"``)."""
    device = next(model.parameters()).device
    x = image.unsqueeze(0).to(device)
    native = model.evidence_maps(x)
    if native is not None:
        maps = native["maps"][0, classes]                                         # [k, h, w]
        up = F.interpolate(maps.unsqueeze(0), size=image.shape[-2:], mode="bilinear", align_corners=False)[0]
        extras = {"method": "interface attention", "maps": maps.cpu().numpy(),
                  "codes": None if native.get("codes") is None else native["codes"][0].cpu().numpy()}
        return up.clamp(0, 1).cpu().numpy().astype(np.float32), extras
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    was_training = model.training
    model.eval()
    with GradCAM(model=_ScoresAsLogits(model), target_layers=[model.cam_layer()]) as cam:
        out = np.stack([cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c))])[0] for c in classes])
    model.train(was_training)
    return out.astype(np.float32), {"method": "Grad-CAM"}


def atom_evidence(attention: np.ndarray, codes: np.ndarray, top: int = 3) -> list:
    """Which codebook atoms carried a class's evidence: ``attention`` [h, w] (σ weights of one
    class), ``codes`` [h, w] (atom per position) -> the ``top`` atoms by attention mass, as
    ``[{"atom", "share", "positions"}]`` (share of the class's total attention mass)."""
    a, k = attention.ravel().astype(np.float64), codes.ravel()
    total = a.sum()
    atoms = np.unique(k)
    mass = np.array([a[k == j].sum() for j in atoms])
    order = np.argsort(-mass, kind="stable")[:top]
    return [{"atom": int(atoms[i]), "share": float(mass[i] / total) if total > 0 else 0.0,
             "positions": int((k == atoms[i]).sum())} for i in order]


def _to_rgb(image: torch.Tensor, mean, std) -> np.ndarray:
    x = image.float().cpu() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def overlay(image_rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """uint8 ``[S, S, 3]``: the image with the heatmap (jet colour map) blended over it."""
    from matplotlib import colormaps

    colored = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    return (255 * ((1 - alpha) * image_rgb + alpha * colored)).clip(0, 255).astype(np.uint8)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "image"


def write_explanations(model, ckpt: dict, pipeline, names: list, images: list, scores: np.ndarray,
                       thresholds: np.ndarray, out_dir: str, limit: int = 100) -> int:
    """PNG overlays ``<image>__<class>.png`` for every positive class of the first ``limit``
    readable images, plus ``explanations.json`` (score, peak position, method, FACT's atoms).
    Returns the number of PNGs written."""
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    class_names = list(ckpt["class_names"])
    records, written, done = [], 0, 0
    for k, (name, img) in enumerate(zip(names, images)):
        if img is None or done >= limit:
            continue
        done += 1
        positives = [c for c in range(len(class_names)) if scores[k, c] > thresholds[c]]
        if not positives:
            records.append({"image": name, "positives": []})
            continue
        heats, extras = class_heatmaps(model, img, positives)
        rgb = _to_rgb(img, pipeline.mean, pipeline.std)
        entry = {"image": name, "method": extras["method"], "positives": []}
        stem = f"{k:05d}_{_slug(os.path.splitext(os.path.basename(str(name)))[0])}"
        for j, c in enumerate(positives):
            png = f"{stem}__{_slug(class_names[c])}.png"
            Image.fromarray(overlay(rgb, heats[j])).save(os.path.join(out_dir, png))
            written += 1
            y, x = np.unravel_index(int(np.argmax(heats[j])), heats[j].shape)
            item = {"class": class_names[c], "score": float(scores[k, c]), "threshold": float(thresholds[c]),
                    "heatmap": png, "peak_xy": [int(x), int(y)]}
            if extras.get("codes") is not None:
                item["atoms"] = atom_evidence(extras["maps"][j], extras["codes"])
            entry["positives"].append(item)
        records.append(entry)
    with open(os.path.join(out_dir, "explanations.json"), "w") as fh:
        json.dump(records, fh, indent=1)
    return written
