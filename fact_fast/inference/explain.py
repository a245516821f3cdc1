"""Per-class heatmaps of a trained model's evidence (``predict --explain``).

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

from fact_fast.models import MultiLabelModel

from .thresholds import positive_calls

__all__ = ["class_heatmaps", "atom_evidence", "overlay", "write_explanations", "check_explainable",
           "display_scale", "parse_explain_classes", "explained_classes", "explained_column", "DISPLAY_SIDE",
           "NO_POSITIVE"]

DISPLAY_SIDE = 256  # overlay PNGs are enlarged to at least this side for viewing
NO_POSITIVE = "no positive class"  # what an image without a positive class says under --explain-classes positive


def parse_explain_classes(value: str, class_names: list) -> tuple:
    """The classes ``--explain-classes`` asks for: ``positive`` (those above their threshold),
    ``top1`` / ``topK`` (the K highest scores, positive or not) or comma-separated class names.
    Returns ``("positive", None)``, ``("top", K)`` or ``("names", [class index, ...])``; raises
    ValueError naming the option for a K outside 1..C or an unknown class name."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"--explain-classes must be positive, top1, topK or class names, got {value!r}")
    value = value.strip()
    if value == "positive":
        return "positive", None
    top = re.fullmatch(r"top(\d+)", value)
    if top:
        k = int(top.group(1))
        if not 1 <= k <= len(class_names):
            raise ValueError(f"--explain-classes {value}: K must be between 1 and the model's {len(class_names)} "
                             f"classes")
        return "top", k
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in class_names]
    if unknown or not names:
        raise ValueError(f"--explain-classes: unknown class name(s) {unknown or [value]}; expected positive, "
                         f"top1, topK or names from {list(class_names)}")
    return "names", [class_names.index(n) for n in dict.fromkeys(names)]


def explained_classes(scores: np.ndarray, thresholds: np.ndarray, selection: tuple) -> list:
    """Class indices to explain for one image: ``scores`` float ``[C]``, ``thresholds`` float64
    ``[C]``, ``selection`` from :func:`parse_explain_classes`. Positive classes in class order,
    top-K by descending score (ties by class order), names in the order given."""
    kind, arg = selection
    if kind == "positive":
        return [int(c) for c in np.flatnonzero(positive_calls(np.asarray(scores)[None], thresholds)[0])]
    if kind == "top":
        return [int(c) for c in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:arg]]
    return list(arg)


def explained_column(scores: np.ndarray, errors: list, thresholds: np.ndarray, class_names: list, selection: tuple,
                     explained_rows: set, max_explain: int) -> list:
    """Per image (``scores [N, C]``, ``errors``), what ``predict --explain`` did with it: the
    classes explained joined by ``|``, :data:`NO_POSITIVE`, or why it was not explained (not
    scored, or not among the ``explained_rows``, the first ``max_explain`` scored images)."""
    column = []
    for k in range(len(errors)):
        if errors[k]:
            column.append("not explained: not scored")
        elif k not in explained_rows:
            column.append(f"not explained: beyond --max-explain {max_explain}")
        else:
            chosen = explained_classes(scores[k], thresholds, selection)
            column.append("|".join(class_names[c] for c in chosen) if chosen else NO_POSITIVE)
    return column


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
    """uint8 ``[S, S, 3]``: the image (float ``[S, S, 3]`` in [0, 1]) with the heatmap (``[S, S]``
    in [0, 1], jet colour map) blended over it."""
    from matplotlib import colormaps

    colored = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    return (255 * ((1 - alpha) * image_rgb + alpha * colored)).clip(0, 255).astype(np.uint8)


def display_scale(image_size: int) -> int:
    """Integer factor the overlay PNGs are enlarged by so that they are at least
    :data:`DISPLAY_SIDE` px (a pixel (x, y) of the model input is (x, y) * factor in the PNG)."""
    return max(1, -(-DISPLAY_SIDE // int(image_size)))


def check_explainable(model) -> None:
    """Raise ImportError naming the package when ``model`` needs Grad-CAM and it is missing."""
    if type(model).evidence_maps is MultiLabelModel.evidence_maps:
        try:
            import pytorch_grad_cam  # noqa: F401
        except ImportError:
            raise ImportError(f"--explain for {type(model).__name__} uses Grad-CAM: pip install grad-cam") from None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "image"


def write_explanations(model, class_names: list, pipeline, items: list, scores: np.ndarray, thresholds: np.ndarray,
                       out_dir: str, classes: str | tuple = "positive") -> int:
    """For each ``(row, name, image [3, S, S])`` of ``items`` and each class (``class_names``: the
    checkpoint's, in score order) that ``classes`` picks for ``scores[row]`` (an ``--explain-classes``
    value or a :func:`parse_explain_classes` result; default: the positive classes, ``score >
    threshold`` as ``predict``), an overlay PNG ``<row>_<image>__<class>.png``: the model input with the
    heatmap, enlarged by :func:`display_scale`, colours spanning the map's own minimum..maximum (kept as
    ``heat_range``). Plus ``explanations.json``: per image the method, the feature grid (h, w) the map
    comes from, ``positives`` (the names of its positive classes) and ``classes``: per explained class
    its score, threshold, whether it is positive, PNG, ``peak_xy`` (where the evidence peaks, in
    model-input pixels, x right, y down: the centre of the hottest feature cell when the model gives its
    own map, else the hottest pixel) and, for FACT, the codebook ``atoms`` that carried the evidence. An
    image with nothing to explain (no positive class) gets a ``note`` saying so instead. Returns the
    number of PNGs written."""
    from PIL import Image

    class_names = list(class_names)
    selection = parse_explain_classes(classes, class_names) if isinstance(classes, str) else classes
    os.makedirs(out_dir, exist_ok=True)
    factor = display_scale(pipeline.image_size)
    records, written = [], 0
    for row, name, img in items:
        positive = positive_calls(scores[row:row + 1], thresholds)[0]
        chosen = explained_classes(scores[row], thresholds, selection)
        base = {"image": name, "row": row, "positives": [class_names[c] for c in np.flatnonzero(positive)]}
        if not chosen:
            records.append({**base, "classes": [],
                            "note": f"{NO_POSITIVE}: no score passed its threshold (--explain-classes top1 "
                                    f"explains the highest-scoring class)"})
            continue
        heats, extras = class_heatmaps(model, img, chosen)
        S = img.shape[-1]
        rgb = _to_rgb(img, pipeline.mean, pipeline.std)
        big_rgb = np.asarray(Image.fromarray((rgb * 255).round().astype(np.uint8)).resize(
            (S * factor, S * factor), Image.BICUBIC), dtype=np.float32) / 255.0
        big_heats = F.interpolate(torch.from_numpy(heats).unsqueeze(0), scale_factor=factor, mode="bilinear",
                                  align_corners=False)[0].clamp(0, 1).numpy()
        entry = {**base, "method": extras["method"], "input_size": int(S), "png_scale": factor, "classes": []}
        if extras.get("maps") is not None:
            entry["grid_hw"] = list(extras["maps"].shape[-2:])
        stem = f"{row:05d}_{_slug(os.path.splitext(os.path.basename(str(name)))[0])}"
        for j, c in enumerate(chosen):
            png = f"{stem}__{_slug(class_names[c])}.png"
            lo, hi = float(heats[j].min()), float(heats[j].max())
            shown = (big_heats[j] - lo) / (hi - lo) if hi > lo else np.zeros_like(big_heats[j])
            Image.fromarray(overlay(big_rgb, shown)).save(os.path.join(out_dir, png))
            written += 1
            if extras.get("maps") is not None:  # the centre of the hottest feature cell
                grid = extras["maps"][j]
                gy, gx = np.unravel_index(int(np.argmax(grid)), grid.shape)
                y, x = int((gy + 0.5) * S / grid.shape[0]), int((gx + 0.5) * S / grid.shape[1])
            else:
                y, x = np.unravel_index(int(np.argmax(heats[j])), heats[j].shape)
            item = {"class": class_names[c], "score": float(scores[row, c]), "threshold": float(thresholds[c]),
                    "positive": bool(positive[c]), "heatmap": png, "peak_xy": [int(x), int(y)],
                    "heat_range": [lo, hi]}
            if extras.get("codes") is not None:
                item["atoms"] = atom_evidence(extras["maps"][j], extras["codes"])
            entry["classes"].append(item)
        records.append(entry)
    with open(os.path.join(out_dir, "explanations.json"), "w") as fh:
        json.dump(records, fh, indent=1)
    return written
