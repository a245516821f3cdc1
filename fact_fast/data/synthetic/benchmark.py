"""The synthetic chest benchmark: the default dataset (``"synthetic"``), built to test FACT's claims.

Procedural grayscale "chest radiographs" (body silhouette, two lung fields, heart, spine, ribs,
vascular markings, background texture) with the 14 NIH ChestX-ray14 findings
(``NIH_CLASS_NAMES``, whose text embeddings ship as ``nih14.npy``). The findings are synthetic
pictures, not pathology; what matters is that the benchmark has the structure FACT claims to
exploit (see ``docs/synthetic.md`` for the measured statistics):

* **Comorbidity.** Each label vector is drawn from the empirical distribution of the 112,120
  label vectors of NIH ChestX-ray14 (``tables/nih14_label_vectors.json``, fitted by
  ``scripts/fit_synthetic_labels.py``): real marginals from 17.7 % (Infiltration) down to
  0.20 % (Hernia), 53.8 % of images with no finding, and the real pairwise and higher-order
  co-occurrence (Pneumonia-Edema lift 11.6, Emphysema-Pneumothorax 6.3, ...).
* **Polysemy.** Each class has two visually different *forms* (:data:`FORMS`), built from a
  shared vocabulary of primitives (disc, ring, stripes, blobs, reticular texture, wedge,
  ellipse, arc, line, lucency, heart/lung shape): e.g. a Nodule is a small soft disc or a small
  calcified ring, a Mass a large disc or a lobulated cluster of discs; Pneumonia's dense patchy
  form is a blob cluster like Infiltration's, Fibrosis's reticular form the texture of
  Infiltration's, Atelectasis's wedge the shape of Consolidation's and Effusion's, in
  other places or arrangements. Each positive instance draws its form uniformly.
* **Clinical noise.** Every image carries clutter built from the same primitives (ECG
  electrodes = rings with a dot, wires and catheters = long lines, calcified specks = tiny
  discs), ribs and markings; positioning, anatomy and exposure vary per image. Each instance is
  *clear*, *faint* (contrast x 0.35-0.55), *small* (size x 0.55-0.7) or *occluded* (cut by a
  random line through its centre; about half of it drawn) with probabilities
  :data:`PRESENTATION_PROBS`. The **training** labels miss each positive with probability
  ``missed_label_rate`` (default 0.1; the image still shows it); validation and test labels are
  clean. ``clean_labels`` holds the truth for every split.

Multiple views (``views=V`` ≥ 2). Each sample becomes a *study* of V images with study-level
labels (as CXR-LT repeats a study's labels on each of its images): the views are separate
renderings of the same findings (their own anatomy, clutter, exposure and instance placement),
and each positive finding is drawn in every view, except that with probability
``view_only_rate`` (default 0.5) it is drawn in one view only, chosen uniformly
(``visible`` says which). A single image then misses findings its labels claim; the study as a
whole shows them all. Image j is view ``j % V`` of study ``j // V`` (``study_ids``); the dataset
registry wraps it in a :class:`~fact_fast.data.base.MultiViewDataset` over ``study_ids``.

Determinism. Per-sample generators seeded with ``(seed, split, index, stream)`` make labels,
metadata and images bitwise identical for a seed, independent of ``num_samples``, of the order
in which samples are rendered and of DataLoader workers; the three splits use disjoint streams.
The background, the clutter and each class's instance use separate streams, so
``render_one(i, findings=...)`` draws the same image with a chosen subset of its findings.
Images are rendered on first access (about 2-3 ms each at 128 px on one core of the dev machine;
13 ms with its 2 cores shared by a dozen jobs) and cached in memory as uint8 ``[N, S, S]``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from ..base import MultiLabelDataset, check_split
from ..labels.sets import NIH_CLASS_NAMES

__all__ = ["SyntheticBenchmark", "Form", "FORMS", "PRIMITIVES", "PRESENTATIONS", "PRESENTATION_PROBS",
           "label_vector_table"]

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 3000, "val": 600, "test": 1500}
LABEL_TABLE = Path(__file__).resolve().parent.parent / "tables" / "nih14_label_vectors.json"

PRESENTATIONS = ("clear", "faint", "small", "occluded")
PRESENTATION_PROBS = (0.55, 0.20, 0.15, 0.10)
PRIMITIVES = ("disc", "ring", "stripes", "blobs", "reticular", "wedge", "ellipse", "arc", "line",
              "lucency", "heart_shape", "lung_shape")

# stream ids of the per-sample generators
_LABEL_STREAM, _BACKGROUND_STREAM, _CLUTTER_STREAM, _VIEW_STREAM, _INSTANCE_STREAM = 0, 1, 2, 3, 100

# Normalisation constants of the rendered uint8 images (default train split, 128 px; see
# docs/synthetic.md). Only roughly zero-mean / unit-std is needed.
_PIXEL_MEAN = 117.0 / 255.0
_PIXEL_STD = 51.0 / 255.0


def label_vector_table(path: Path = LABEL_TABLE) -> tuple[np.ndarray, np.ndarray]:
    """The shipped label-vector distribution: ``(vectors uint8 [V, 14], probabilities float64 [V])``."""
    with open(path) as f:
        table = json.load(f)
    if table.get("class_names") != list(NIH_CLASS_NAMES):
        raise ValueError(f"{path}: class_names do not match NIH_CLASS_NAMES")
    masks = np.array([m for m, _ in table["vectors"]], dtype=np.int64)
    counts = np.array([n for _, n in table["vectors"]], dtype=np.float64)
    C = len(NIH_CLASS_NAMES)
    vectors = ((masks[:, None] >> np.arange(C)) & 1).astype(np.uint8)
    return vectors, counts / counts.sum()


# ============================================================================ canvas and primitives
def _edge(sd, width):
    """Soft inside-indicator of a signed distance (negative inside): 1 inside, 0 outside."""
    return np.clip(0.5 - sd / width, 0.0, 1.0)


def _rotate(dx, dy, angle):
    c, s = math.cos(angle), math.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


class _Canvas:
    """A float32 [S, S] image over coordinates in [0, 1] (x right, y down); primitives are
    evaluated only inside their bounding window (``local``) and added with a contrast."""

    def __init__(self, size: int):
        self.size = size
        self.coords = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.px = 1.0 / size
        self.img = np.zeros((size, size), np.float32)
        self.lungs = np.zeros((size, size), np.float32)  # aerated lung, set by the background

    def aa(self, soft: float = 0.0) -> float:
        """Edge width: at least 1.5 pixels, so that thin structures stay visible at 64 px."""
        return max(1.5 * self.px, soft)

    def local(self, x0, x1, y0, y1):
        """Window covering [x0, x1] x [y0, y1]: (row slice, col slice, yy [h, 1], xx [1, w])."""
        S = self.size
        c0, c1 = max(0, int(math.floor(x0 * S)) - 1), min(S, int(math.ceil(x1 * S)) + 1)
        r0, r1 = max(0, int(math.floor(y0 * S)) - 1), min(S, int(math.ceil(y1 * S)) + 1)
        c1, r1 = max(c1, c0), max(r1, r0)
        return slice(r0, r1), slice(c0, c1), self.coords[r0:r1, None], self.coords[None, c0:c1]

    def full(self):
        return self.local(0.0, 1.0, 0.0, 1.0)


@dataclass
class _Layer:
    """A primitive's mask on a window, added to the image with ``contrast`` (negative = darker)."""
    rows: slice
    cols: slice
    mask: np.ndarray
    contrast: float


def disc(cv, cx, cy, r, contrast, soft=0.0):
    rows, cols, yy, xx = cv.local(cx - r - soft, cx + r + soft, cy - r - soft, cy + r + soft)
    return _Layer(rows, cols, _edge(np.hypot(xx - cx, yy - cy) - r, cv.aa(soft)), contrast)


def ring(cv, cx, cy, r, t, contrast):
    e = r + t
    rows, cols, yy, xx = cv.local(cx - e, cx + e, cy - e, cy + e)
    return _Layer(rows, cols, _edge(np.abs(np.hypot(xx - cx, yy - cy) - r) - t / 2, cv.aa()), contrast)


def ellipse(cv, cx, cy, rx, ry, angle, contrast, soft=0.0):
    e = max(rx, ry) + soft
    rows, cols, yy, xx = cv.local(cx - e, cx + e, cy - e, cy + e)
    u, v = _rotate(xx - cx, yy - cy, angle)
    sd = (np.sqrt((u / rx) ** 2 + (v / ry) ** 2) - 1.0) * min(rx, ry)
    return _Layer(rows, cols, _edge(sd, cv.aa(soft)), contrast)


def stripes(cv, cx, cy, half_length, n, spacing, t, angle, contrast):
    """``n`` parallel lines of length 2*half_length and thickness t, ``spacing`` apart."""
    e = half_length + n * spacing
    rows, cols, yy, xx = cv.local(cx - e, cx + e, cy - e, cy + e)
    u, v = _rotate(xx - cx, yy - cy, angle)
    offsets = (np.arange(n, dtype=np.float32) - (n - 1) / 2) * spacing
    dist = np.min(np.abs(v[None] - offsets[:, None, None]), axis=0)
    sd = np.maximum(np.abs(u) - half_length, dist - t / 2)
    return _Layer(rows, cols, _edge(sd, cv.aa()), contrast)


def blobs(cv, centres, sigma, contrast):
    centres = np.asarray(centres, dtype=np.float32)
    e = 3 * sigma
    rows, cols, yy, xx = cv.local(centres[:, 0].min() - e, centres[:, 0].max() + e,
                                  centres[:, 1].min() - e, centres[:, 1].max() + e)
    out = np.zeros(np.broadcast_shapes(yy.shape, xx.shape), np.float32)
    for cx, cy in centres:
        out = np.maximum(out, np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma * sigma)))
    return _Layer(rows, cols, np.clip(out * 1.3, 0.0, 1.0), contrast)


def reticular(cv, cx, cy, rx, ry, period, t, angle, contrast):
    """Two crossing families of thin lines (a net) inside a soft ellipse."""
    e = max(rx, ry)
    rows, cols, yy, xx = cv.local(cx - e, cx + e, cy - e, cy + e)
    u, v = _rotate(xx - cx, yy - cy, angle)
    inside = _edge((np.sqrt((u / rx) ** 2 + (v / ry) ** 2) - 1.0) * min(rx, ry), 0.3 * min(rx, ry))
    net = 0.0
    for a in (0.0, 1.2):  # second family at ~70 degrees
        p, _ = _rotate(u, v, a)
        d = np.abs(np.mod(p, period) - period / 2)
        net = np.maximum(net, _edge(d - t / 2, cv.aa()))
    return _Layer(rows, cols, inside * net, contrast)


def wedge(cv, cx, cy, r, angle, contrast):
    """Filled triangle of circumradius r; ``angle`` turns it (0: one vertex pointing up)."""
    rows, cols, yy, xx = cv.local(cx - r, cx + r, cy - r, cy + r)
    u, v = _rotate(xx - cx, yy - cy, angle)
    sd = None
    for k in range(3):
        th = math.pi / 2 + k * 2 * math.pi / 3
        d = u * math.cos(th) + v * math.sin(th) - r / 2
        sd = d if sd is None else np.maximum(sd, d)
    return _Layer(rows, cols, _edge(sd, cv.aa()), contrast)


def polyline(cv, points, t, contrast):
    pts = np.asarray(points, dtype=np.float32)
    e = t
    rows, cols, yy, xx = cv.local(pts[:, 0].min() - e, pts[:, 0].max() + e,
                                  pts[:, 1].min() - e, pts[:, 1].max() + e)
    dist = None
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        dx, dy = x1 - x0, y1 - y0
        h = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
        d = np.hypot(xx - x0 - h * dx, yy - y0 - h * dy)
        dist = d if dist is None else np.minimum(dist, d)
    return _Layer(rows, cols, _edge(dist - t / 2, cv.aa()), contrast)


# ============================================================================ anatomy
@dataclass
class _Anatomy:
    """Per-image chest geometry (normalised coordinates). Side 0 = image left, 1 = image right."""
    lung_cx: list
    lung_cy: float
    lung_rx: list
    lung_ry: list
    heart: list            # [cx, cy, rx, ry]
    body: list             # [cx, cy, rx, ry]
    lung_darkness: float
    markings: float

    @classmethod
    def draw(cls, rng):
        # patient size and positioning vary widely, so sizes only mean something relative to
        # the thorax (cardiothoracic ratio), which no linear function of the pixels measures
        dx, dy = rng.uniform(-0.04, 0.04, 2)
        s = rng.uniform(0.86, 1.14)
        return cls(lung_cx=[0.5 - 0.19 * s + dx, 0.5 + 0.19 * s + dx], lung_cy=0.46 + dy,
                   lung_rx=list(0.145 * s * rng.uniform(0.93, 1.07, 2)),
                   lung_ry=list(0.30 * s * rng.uniform(0.93, 1.07, 2)),
                   heart=[0.535 + dx + rng.uniform(-0.015, 0.015), 0.64 + dy,
                          0.15 * s * rng.uniform(0.88, 1.12), 0.12 * s * rng.uniform(0.9, 1.1)],
                   body=[0.5 + dx, 0.56 + dy, 0.47 * s, 0.62 * s],
                   lung_darkness=rng.uniform(0.24, 0.30), markings=1.0)

    def lateral(self, side):
        """+1 if lateral is to the right on the image, -1 if to the left."""
        return -1.0 if side == 0 else 1.0

    def point(self, side, u, v):
        """Lung-relative (u lateral, v downward, both in [-1, 1]) -> image coordinates."""
        n = math.hypot(u, v)
        if n > 0.9:  # keep the point inside the lung field
            u, v = u * 0.9 / n, v * 0.9 / n
        return (self.lung_cx[side] + self.lateral(side) * u * self.lung_rx[side],
                self.lung_cy + v * self.lung_ry[side])

    def sample_point(self, rng, side, u_range, v_range):
        return self.point(side, rng.uniform(*u_range), rng.uniform(*v_range))

    def lung_sd(self, side, yy, xx):
        """Approximate signed distance to the lung boundary (negative inside)."""
        rx, ry = self.lung_rx[side], self.lung_ry[side]
        return (np.sqrt(((xx - self.lung_cx[side]) / rx) ** 2 + ((yy - self.lung_cy) / ry) ** 2) - 1.0) * rx


def _smooth_noise(rng, size, cells):
    """Bilinearly upsampled [cells, cells] standard-normal grid -> float32 [size, size]."""
    g = rng.standard_normal((cells, cells)).astype(np.float32)
    t = np.linspace(0, cells - 1, size, dtype=np.float32)
    i0 = np.minimum(t.astype(np.int64), cells - 2)
    f = t - i0
    rows = g[i0] * (1 - f)[:, None] + g[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _render_background(cv, anat, rng):
    S = cv.size
    rows, cols, yy, xx = cv.full()
    bx, by, brx, bry = anat.body
    body = _edge((np.sqrt(((xx - bx) / brx) ** 2 + ((yy - by) / bry) ** 2) - 1.0) * brx, 0.04)
    img = 0.10 + 0.50 * body + 0.05 * _smooth_noise(rng, S, 6)
    img += 0.10 * body * _edge(np.abs(xx - bx) - 0.035, 0.02)  # spine / mediastinum
    hx, hy, hrx, hry = anat.heart
    heart = _edge((np.sqrt(((xx - hx) / hrx) ** 2 + ((yy - hy) / hry) ** 2) - 1.0) * hrx, 0.02)
    # the heart (soft tissue) hides the lung behind it
    lungs = np.maximum(*(_edge(anat.lung_sd(s, yy, xx), 0.02) for s in (0, 1))) * (1.0 - 0.85 * heart)
    img -= anat.lung_darkness * lungs
    img += 0.04 * heart
    cv.lungs[:] = lungs
    # ribs: 6 arcs per side sloping down laterally
    y0 = anat.lung_cy - 0.95 * np.mean(anat.lung_ry) + np.arange(6, dtype=np.float32) * 0.095
    y0 = y0 + rng.uniform(-0.01, 0.01, 6).astype(np.float32)
    rib_y = y0[:, None, None] + 0.9 * (xx - bx) ** 2
    ribs = _edge(np.min(np.abs(yy[None] - rib_y), axis=0) - 0.009, 0.012)
    img += 0.05 * ribs * body
    # vascular markings: mid-frequency texture inside the lungs
    img += 0.07 * anat.markings * np.clip(_smooth_noise(rng, S, 18), 0.0, None) * lungs
    cv.img += img


def _render_clutter(cv, anat, rng):
    """Objects in every image, made of the findings' primitives: ECG electrodes (ring + dot),
    wires / catheters (long lines), calcified specks (tiny discs)."""
    layers = []
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0.12, 0.88), rng.uniform(0.1, 0.85)
        r = rng.uniform(0.014, 0.022)
        layers += [ring(cv, cx, cy, r, 0.006, 0.25), disc(cv, cx, cy, 0.005, 0.25)]
    for _ in range(int(rng.integers(1, 3))):
        x, y = rng.uniform(0.1, 0.9), rng.uniform(0.02, 0.3)
        pts = [(x, y)]
        for _ in range(3):
            x, y = np.clip(x + rng.uniform(-0.2, 0.2), 0.05, 0.95), np.clip(y + rng.uniform(0.05, 0.25), 0.0, 0.98)
            pts.append((x, y))
        layers.append(polyline(cv, pts, rng.uniform(0.005, 0.009), rng.uniform(0.15, 0.25)))
    for _ in range(int(rng.integers(2, 7))):
        side = int(rng.integers(2))
        cx, cy = anat.sample_point(rng, side, (-0.9, 0.9), (-0.9, 0.9))
        layers.append(disc(cv, cx, cy, rng.uniform(0.005, 0.010), rng.uniform(0.18, 0.3)))
    for layer in layers:
        cv.img[layer.rows, layer.cols] += layer.contrast * layer.mask


# ============================================================================ the forms
@dataclass(frozen=True)
class Form:
    """One look of a class. ``draw(cv, anat, rng, scale) -> (layers, centre)`` for lesions;
    anatomy forms (``anatomy=True``) instead change the anatomy: ``draw(anat, rng, strength)``."""
    name: str
    primitives: tuple
    region: str
    draw: Callable
    anatomy: bool = False


def _contrast(rng, lo=0.18, hi=0.28):
    return rng.uniform(lo, hi)


def _side(rng):
    return int(rng.integers(2))


def _atelectasis_plate(cv, a, rng, k):
    cx, cy = a.sample_point(rng, _side(rng), (-0.5, 0.5), (0.2, 0.6))
    n = int(rng.integers(2, 4))
    return [stripes(cv, cx, cy, rng.uniform(0.05, 0.08) * k, n, 0.028 * k, 0.011 * k,
                    rng.uniform(-0.25, 0.25), _contrast(rng))], (cx, cy)


def _atelectasis_wedge(cv, a, rng, k):
    s = _side(rng)
    cx, cy = a.sample_point(rng, s, (-0.75, -0.45), (0.2, 0.55))
    ang = a.lateral(s) * math.pi / 2 + rng.uniform(-0.3, 0.3)  # vertex towards the lateral wall
    return [wedge(cv, cx, cy, rng.uniform(0.07, 0.10) * k, ang, _contrast(rng))], (cx, cy)


def _cardiomegaly_enlarged(a, rng, strength):
    a.heart[2] *= 1 + strength * rng.uniform(0.25, 0.40)
    a.heart[3] *= 1 + strength * rng.uniform(0.05, 0.15)


def _cardiomegaly_globular(a, rng, strength):
    r = a.heart[2] * (1 + strength * rng.uniform(0.10, 0.20))
    a.heart[1] -= 0.5 * (r - a.heart[3])
    a.heart[2] = a.heart[3] = r


def _effusion_meniscus(cv, a, rng, k):
    s = _side(rng)
    rx, ry, lcx, lcy = a.lung_rx[s], a.lung_ry[s], a.lung_cx[s], a.lung_cy
    top = lcy + ry * (1.0 - rng.uniform(0.35, 0.55) * k)  # fluid level at the medial side
    rows, cols, yy, xx = cv.local(lcx - rx, lcx + rx, top - 0.15, lcy + ry)
    lateral_dist = np.clip(a.lateral(s) * (xx - lcx) / rx + 1.0, 0.0, 2.0)  # 0 medial .. 2 lateral
    surface = top - 0.035 * lateral_dist ** 2  # meniscus: fluid climbs the lateral wall
    mask = _edge(surface - yy, 0.02) * _edge(a.lung_sd(s, yy, xx), cv.aa())
    return [_Layer(rows, cols, mask, _contrast(rng, 0.2, 0.3))], (lcx, top + 0.05)


def _effusion_blunted(cv, a, rng, k):
    s = _side(rng)
    cx, cy = a.sample_point(rng, s, (0.55, 0.75), (0.6, 0.8))
    return [wedge(cv, cx, cy, rng.uniform(0.05, 0.07) * k, rng.uniform(-0.4, 0.4), _contrast(rng, 0.2, 0.3))], (cx, cy)


def _infiltration_patchy(cv, a, rng, k):
    cx, cy = a.sample_point(rng, _side(rng), (-0.6, 0.6), (-0.6, 0.6))
    spread = rng.uniform(0.05, 0.08) * k
    pts = [(cx + rng.uniform(-spread, spread), cy + rng.uniform(-spread, spread))
           for _ in range(int(rng.integers(4, 9)))]
    return [blobs(cv, pts, rng.uniform(0.010, 0.016) * k, _contrast(rng, 0.16, 0.24))], (cx, cy)


def _infiltration_reticular(cv, a, rng, k):
    cx, cy = a.sample_point(rng, _side(rng), (-0.5, 0.5), (-0.5, 0.3))
    return [reticular(cv, cx, cy, rng.uniform(0.05, 0.08) * k, rng.uniform(0.05, 0.08) * k,
                      0.024, 0.007, rng.uniform(0, math.pi), _contrast(rng))], (cx, cy)


def _mass_round(cv, a, rng, k):
    cx, cy = a.sample_point(rng, _side(rng), (-0.5, 0.5), (-0.6, 0.5))
    r = rng.uniform(0.055, 0.08) * k
    return [disc(cv, cx, cy, r, _contrast(rng), soft=0.2 * r)], (cx, cy)


def _mass_lobulated(cv, a, rng, k):
    cx, cy = a.sample_point(rng, _side(rng), (-0.5, 0.5), (-0.6, 0.5))
    layers = []
    c = _contrast(rng)
    for _ in range(int(rng.integers(3, 5))):
        r = rng.uniform(0.028, 0.045) * k
        layers.append(disc(cv, cx + rng.uniform(-0.04, 0.04) * k, cy + rng.uniform(-0.04, 0.04) * k, r,
                           c / 2, soft=0.15 * r))
    return layers, (cx, cy)


def _nodule_solid(cv, a, rng, k):
    cx, cy = a.sample_point(rng, _side(rng), (-0.85, 0.85), (-0.85, 0.7))
    r = rng.uniform(0.018, 0.03) * k
    return [disc(cv, cx, cy, r, _contrast(rng, 0.22, 0.32), soft=0.3 * r)], (cx, cy)


def _nodule_rim(cv, a, rng, k):
    cx, cy = a.sample_point(rng, _side(rng), (-0.85, 0.85), (-0.85, 0.7))
    return [ring(cv, cx, cy, rng.uniform(0.02, 0.03) * k, 0.008, _contrast(rng, 0.24, 0.34))], (cx, cy)


def _pneumonia_lobar(cv, a, rng, k):
    s = _side(rng)
    cx, cy = a.sample_point(rng, s, (-0.3, 0.4), (0.0, 0.5))
    rx, ry = rng.uniform(0.07, 0.10) * k, rng.uniform(0.06, 0.09) * k
    layers = [ellipse(cv, cx, cy, rx, ry, rng.uniform(-0.5, 0.5), _contrast(rng, 0.22, 0.3), soft=0.3 * min(rx, ry))]
    # air bronchograms: dark branching tubes inside the opacity
    for _ in range(int(rng.integers(2, 4))):
        ang = rng.uniform(0, 2 * math.pi)
        mid = (cx + 0.5 * rx * math.cos(ang), cy + 0.5 * ry * math.sin(ang))
        end = (cx + 0.8 * rx * math.cos(ang + 0.3), cy + 0.8 * ry * math.sin(ang + 0.3))
        layers.append(polyline(cv, [(cx, cy), mid, end], 0.008 * k, -0.14))
    return layers, (cx, cy)


def _pneumonia_patchy(cv, a, rng, k):
    cx, cy = a.sample_point(rng, _side(rng), (-0.4, 0.4), (0.2, 0.6))
    spread = 0.05 * k
    pts = [(cx + rng.uniform(-spread, spread), cy + rng.uniform(-spread, spread))
           for _ in range(int(rng.integers(7, 12)))]
    return [blobs(cv, pts, rng.uniform(0.018, 0.026) * k, _contrast(rng, 0.24, 0.32))], (cx, cy)


def _pneumothorax(cv, a, rng, k, where):
    """Collapsed lung: a lucent rim without markings outside a thin bright pleural line."""
    s = _side(rng)
    rx, ry, lcx, lcy = a.lung_rx[s], a.lung_ry[s], a.lung_cx[s], a.lung_cy
    gap = rng.uniform(0.03, 0.05) * k
    if where == "apical":
        icx, icy, irx, iry = lcx, lcy + gap, rx - 0.3 * gap, ry - gap
        keep = lambda yy, xx: _edge(yy - (lcy - 0.3 * ry), 0.03)  # noqa: E731  upper part only
        centre = (lcx, lcy - ry + gap)
    else:
        icx, icy, irx, iry = lcx - a.lateral(s) * gap, lcy, rx - gap, ry - 0.3 * gap
        keep = lambda yy, xx: _edge(a.lateral(s) * (lcx - xx) + 0.2 * rx, 0.03)  # noqa: E731  lateral part
        centre = (lcx + a.lateral(s) * (rx - gap), lcy)
    rows, cols, yy, xx = cv.local(lcx - rx, lcx + rx, lcy - ry, lcy + ry)
    inner_sd = (np.sqrt(((xx - icx) / irx) ** 2 + ((yy - icy) / iry) ** 2) - 1.0) * irx
    lung = _edge(a.lung_sd(s, yy, xx), cv.aa())
    k_mask = keep(yy, xx)
    lucent = lung * _edge(-inner_sd, cv.aa()) * k_mask
    line = lung * _edge(np.abs(inner_sd) - 0.004, cv.aa()) * k_mask
    return [_Layer(rows, cols, lucent, -_contrast(rng, 0.10, 0.14)), _Layer(rows, cols, line, _contrast(rng, 0.2, 0.3))], centre


def _consolidation_patch(cv, a, rng, k):
    cx, cy = a.sample_point(rng, _side(rng), (-0.5, 0.5), (-0.5, 0.5))
    rx, ry = rng.uniform(0.06, 0.09) * k, rng.uniform(0.05, 0.08) * k
    return [ellipse(cv, cx, cy, rx, ry, rng.uniform(-0.5, 0.5), _contrast(rng, 0.24, 0.32), soft=0.15 * min(rx, ry))], (cx, cy)


def _consolidation_wedge(cv, a, rng, k):
    s = _side(rng)
    cx, cy = a.sample_point(rng, s, (0.4, 0.65), (-0.3, 0.3))
    ang = -a.lateral(s) * math.pi / 2 + rng.uniform(-0.3, 0.3)  # vertex towards the hilum
    return [wedge(cv, cx, cy, rng.uniform(0.07, 0.10) * k, ang, _contrast(rng, 0.22, 0.3))], (cx, cy)


def _edema_batwing(cv, a, rng, k):
    v = rng.uniform(-0.1, 0.2)
    layers, c = [], _contrast(rng, 0.16, 0.24)
    for s in (0, 1):  # bilateral, mirrored around the hila
        cx, cy = a.point(s, -0.5, v)
        layers.append(ellipse(cv, cx, cy, 0.055 * k, 0.085 * k, a.lateral(s) * 0.3, c, soft=0.04 * k))
    return layers, (0.5 * sum(a.lung_cx), a.lung_cy + v * a.lung_ry[0])


def _edema_kerley(cv, a, rng, k):
    v = rng.uniform(0.3, 0.6)
    layers, c = [], _contrast(rng, 0.24, 0.34)
    n = int(rng.integers(3, 6))
    for s in (0, 1):  # short horizontal lines at both lateral lung bases
        cx, cy = a.point(s, 0.78, v)
        layers.append(stripes(cv, cx, cy, 0.025 * k, n, 0.016 * k, 0.006, 0.0, c))
    return layers, (0.5, a.lung_cy + v * a.lung_ry[0])


def _emphysema_hyperinflation(a, rng, strength):
    for s in (0, 1):
        a.lung_rx[s] *= 1 + strength * 0.06
        a.lung_ry[s] *= 1 + strength * rng.uniform(0.08, 0.12)
    a.lung_darkness *= 1 + strength * rng.uniform(0.25, 0.4)
    a.markings *= 1 - 0.6 * strength


def _emphysema_bullae(cv, a, rng, k):
    s = _side(rng)
    layers = []
    cx0, cy0 = a.sample_point(rng, s, (-0.3, 0.5), (-0.75, -0.35))
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = cx0 + rng.uniform(-0.04, 0.04), cy0 + rng.uniform(-0.04, 0.04)
        r = rng.uniform(0.035, 0.055) * k
        layers += [disc(cv, cx, cy, r, -0.10), ring(cv, cx, cy, r, 0.006, _contrast(rng, 0.2, 0.28))]
    return layers, (cx0, cy0)


def _fibrosis_reticular(cv, a, rng, k):
    v = rng.uniform(0.3, 0.6)
    layers, c = [], _contrast(rng, 0.22, 0.3)
    for s in (0, 1):  # bilateral, basal
        cx, cy = a.point(s, rng.uniform(0.0, 0.4), v)
        layers.append(reticular(cv, cx, cy, 0.07 * k, 0.05 * k, 0.018, 0.007, rng.uniform(0, math.pi), c))
    return layers, (0.5, a.lung_cy + v * a.lung_ry[0])


def _fibrosis_honeycomb(cv, a, rng, k):
    cx, cy = a.sample_point(rng, _side(rng), (0.3, 0.7), (0.3, 0.7))
    c = _contrast(rng, 0.24, 0.34)
    layers = [ring(cv, cx + rng.uniform(-0.04, 0.04) * k, cy + rng.uniform(-0.04, 0.04) * k,
                   rng.uniform(0.010, 0.015) * k, 0.005, c) for _ in range(int(rng.integers(4, 9)))]
    return layers, (cx, cy)


def _pleural_band(cv, a, rng, k, where):
    """A thick bright arc along the lung boundary: lateral wall or apex."""
    s = _side(rng)
    rx, ry, lcx, lcy = a.lung_rx[s], a.lung_ry[s], a.lung_cx[s], a.lung_cy
    t = rng.uniform(0.012, 0.02) * k
    rows, cols, yy, xx = cv.local(lcx - rx - t, lcx + rx + t, lcy - ry - t, lcy + ry + t)
    band = _edge(np.abs(a.lung_sd(s, yy, xx) + t / 2) - t / 2, cv.aa())
    if where == "apical":
        keep = _edge(yy - (lcy - ry * rng.uniform(0.6, 0.75)), 0.02)
        centre = (lcx, lcy - ry)
    else:
        v0 = rng.uniform(-0.4, 0.2)
        keep = _edge(np.abs((yy - lcy) / ry - v0) - 0.35 * k, 0.03) * _edge(a.lateral(s) * (lcx - xx), 0.02)
        centre = (lcx + a.lateral(s) * rx, lcy + v0 * ry)
    return [_Layer(rows, cols, band * keep, _contrast(rng, 0.24, 0.32))], centre


def _hernia_gas(cv, a, rng, k):
    hx, hy, hrx, hry = a.heart
    cx, cy = hx + rng.uniform(-0.4, 0.4) * hrx, hy + rng.uniform(-0.1, 0.4) * hry
    r = rng.uniform(0.04, 0.055) * k
    return [disc(cv, cx, cy, r, -_contrast(rng, 0.12, 0.18)), ring(cv, cx, cy, r, 0.008, _contrast(rng, 0.14, 0.2))], (cx, cy)


def _hernia_fluid_level(cv, a, rng, k):
    hx, hy, hrx, hry = a.heart
    cx, cy = hx + rng.uniform(-0.4, 0.4) * hrx, hy + rng.uniform(-0.1, 0.4) * hry
    r = rng.uniform(0.04, 0.055) * k
    rows, cols, yy, xx = cv.local(cx - r, cx + r, cy - r, cy + r)
    inside = _edge(np.hypot(xx - cx, yy - cy) - r, cv.aa())
    gas = inside * _edge(yy - cy, cv.aa())  # upper half dark, lower half fluid
    return [_Layer(rows, cols, gas, -_contrast(rng, 0.12, 0.18)),
            polyline(cv, [(cx - r, cy), (cx + r, cy)], 0.007, _contrast(rng, 0.2, 0.28))], (cx, cy)


FORMS: dict[str, tuple[Form, ...]] = {
    "Atelectasis": (Form("plate", ("stripes",), "lower lung", _atelectasis_plate),
                    Form("collapse wedge", ("wedge",), "medial lower lung", _atelectasis_wedge)),
    "Cardiomegaly": (Form("enlarged heart", ("heart_shape",), "heart", _cardiomegaly_enlarged, True),
                     Form("globular heart", ("heart_shape", "disc"), "heart", _cardiomegaly_globular, True)),
    "Effusion": (Form("meniscus", ("lung_shape", "arc"), "lung base", _effusion_meniscus),
                 Form("blunted angle", ("wedge",), "lateral lung base", _effusion_blunted)),
    "Infiltration": (Form("patchy", ("blobs",), "anywhere in the lungs", _infiltration_patchy),
                     Form("reticular", ("reticular",), "mid/upper lung", _infiltration_reticular)),
    "Mass": (Form("round", ("disc",), "lungs", _mass_round),
             Form("lobulated", ("disc",), "lungs", _mass_lobulated)),
    "Nodule": (Form("solid", ("disc",), "anywhere in the lungs", _nodule_solid),
               Form("calcified rim", ("ring",), "anywhere in the lungs", _nodule_rim)),
    "Pneumonia": (Form("lobar with air bronchograms", ("ellipse", "line"), "mid/lower lung", _pneumonia_lobar),
                  Form("dense patchy", ("blobs",), "lower lung", _pneumonia_patchy)),
    "Pneumothorax": (Form("apical", ("lucency", "arc"), "lung apex", partial(_pneumothorax, where="apical")),
                     Form("lateral", ("lucency", "arc"), "lateral lung", partial(_pneumothorax, where="lateral"))),
    "Consolidation": (Form("dense patch", ("ellipse",), "lungs", _consolidation_patch),
                      Form("peripheral wedge", ("wedge",), "lateral mid lung", _consolidation_wedge)),
    "Edema": (Form("bat wing", ("ellipse",), "both perihilar regions", _edema_batwing),
              Form("Kerley lines", ("stripes",), "both lateral lung bases", _edema_kerley)),
    "Emphysema": (Form("hyperinflation", ("lung_shape", "lucency"), "both lungs", _emphysema_hyperinflation, True),
                  Form("bullae", ("ring", "lucency"), "upper lung", _emphysema_bullae)),
    "Fibrosis": (Form("basal reticular", ("reticular",), "both lung bases", _fibrosis_reticular),
                 Form("honeycomb", ("ring",), "lower lateral lung", _fibrosis_honeycomb)),
    "Pleural_Thickening": (Form("lateral band", ("arc",), "lateral lung wall", partial(_pleural_band, where="lateral")),
                           Form("apical cap", ("arc",), "lung apex", partial(_pleural_band, where="apical"))),
    "Hernia": (Form("retrocardiac gas", ("disc", "lucency", "ring"), "behind the heart", _hernia_gas),
               Form("air-fluid level", ("lucency", "line"), "behind the heart", _hernia_fluid_level)),
}
_FORM_LIST = [FORMS[n] for n in NIH_CLASS_NAMES]


def _occlude(layer, cv, centre, angle, offset):
    """Keep the part of ``layer`` on one side of a line through (near) ``centre``."""
    yy = cv.coords[layer.rows, None]
    xx = cv.coords[None, layer.cols]
    u, _ = _rotate(xx - centre[0], yy - centre[1], angle)
    return _Layer(layer.rows, layer.cols, layer.mask * _edge(u - offset, 0.01), layer.contrast)


# ============================================================================ the dataset
class SyntheticBenchmark(MultiLabelDataset):
    """The synthetic chest benchmark (see the module docstring and ``docs/synthetic.md``).

    Args:
        split: "train", "val" or "test".
        image_size: side of the square images (>= 32; designed for 64-256, default 128 so that
            a stride-32 trunk sees 4 x 4 = 16 positions).
        seed: dataset seed; same seed -> bitwise identical labels, metadata and images.
        num_samples: number of samples (studies when ``views`` > 1; default train 3000 / val 600 /
            test 1500).
        missed_label_rate: probability that a positive is missing (0) in the *train* labels.
        views: images per study (1: one image per sample, the default; see the module doc).
        view_only_rate: with ``views`` > 1, the probability that a positive finding is drawn in
            one view only.
        transform: optional callable uint8 image -> tensor (``build_dataset`` attaches one).

    Attributes (besides the dataset contract's; N images = ``num_samples × views``):
        clean_labels: float32 [N, 14], the truth of the sample / study (= ``labels`` for val/test).
        forms: int8 [N, 14], the form index of each finding (into ``FORMS[class]``), -1 absent.
        presentation: int8 [N, 14], index into :data:`PRESENTATIONS`, -1 absent.
        visible: bool [N, 14], the findings image j shows (= ``clean_labels > 0`` for one view).
        sample_ids: int64 [N], disjoint across splits.
        study_ids: list of N str (``"<split>-<study>"``) when ``views`` > 1, else None.
    """

    channels = "gray"
    mean = (_PIXEL_MEAN,) * 3
    std = (_PIXEL_STD,) * 3

    def __init__(self, split: str = "train", *, image_size: int = 128, seed: int = 0,
                 num_samples: int | None = None, missed_label_rate: float = 0.1, views: int = 1,
                 view_only_rate: float = 0.5, transform=None):
        self.split = check_split(split)
        if int(image_size) < 32:
            raise ValueError(f"image_size must be >= 32, got {image_size}")
        num_samples = DEFAULT_SIZES[split] if num_samples is None else num_samples
        if int(num_samples) < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if not 0.0 <= float(missed_label_rate) < 1.0:
            raise ValueError(f"missed_label_rate must be in [0, 1), got {missed_label_rate}")
        if isinstance(views, bool) or not isinstance(views, (int, np.integer)) or views < 1:
            raise ValueError(f"views must be an integer >= 1, got {views!r}")
        if not 0.0 <= float(view_only_rate) <= 1.0:
            raise ValueError(f"view_only_rate must be in [0, 1], got {view_only_rate}")
        self.name = "synthetic"
        self.class_names = list(NIH_CLASS_NAMES)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.num_samples = int(num_samples)
        self.missed_label_rate = float(missed_label_rate) if split == "train" else 0.0
        self.views = int(views)
        self.view_only_rate = float(view_only_rate) if self.views > 1 else 0.0
        self.transform = transform
        n_images = self.num_samples * self.views
        self.sample_ids = SPLIT_CODES[split] * 1_000_000_000 + np.arange(n_images, dtype=np.int64)
        self._sample_labels()
        if self.views > 1:
            self._sample_views()
        self._images = None     # uint8 [N, S, S], allocated on first render
        self._rendered = None   # bool [N]

    # -- labels and metadata --------------------------------------------------------------------
    def _rng(self, i: int, stream: int, view: int = 0) -> np.random.Generator:
        """The generator of sample (study) ``i``'s ``stream``; view 0 keeps the single-view key."""
        key = [self.seed, SPLIT_CODES[self.split], int(i), stream, 0x5C4E] + ([int(view)] if view else [])
        return np.random.default_rng(key)

    def _sample_views(self):
        """Repeat the study-level arrays per view and draw which view shows each finding."""
        V, N, C = self.views, self.num_samples, len(self.class_names)
        visible = np.repeat(self.clean_labels > 0, V, axis=0).reshape(N, V, C)
        for i in range(N):
            u = self._rng(i, _VIEW_STREAM).random(2 * C)
            only = (self.clean_labels[i] > 0) & (u[:C] < self.view_only_rate)
            which = np.minimum((u[C:] * V).astype(np.int64), V - 1)
            for c in np.flatnonzero(only):
                visible[i, :, c] = np.arange(V) == which[c]
        for name in ("clean_labels", "labels", "forms", "presentation"):
            setattr(self, name, np.repeat(getattr(self, name), V, axis=0))
        self.visible = visible.reshape(N * V, C)
        self.study_ids = [f"{self.split}-{i}" for i in range(N) for _ in range(V)]

    def _sample_labels(self):
        vectors, probs = label_vector_table()
        cdf = np.cumsum(probs)
        cdf[-1] = 1.0
        N, C = self.num_samples, len(self.class_names)
        n_forms = np.array([len(f) for f in _FORM_LIST])
        pres_cdf = np.cumsum(PRESENTATION_PROBS)
        clean = np.zeros((N, C), np.uint8)
        forms = np.full((N, C), -1, np.int8)
        pres = np.full((N, C), -1, np.int8)
        missed = np.zeros((N, C), bool)
        for i in range(N):
            # a fixed number of draws per sample, so every quantity is independent of the others
            # and a larger missed_label_rate misses a superset of the positives
            u = self._rng(i, _LABEL_STREAM).random(1 + 3 * C)
            y = vectors[min(int(np.searchsorted(cdf, u[0], side="right")), len(cdf) - 1)]
            pos = y.astype(bool)
            clean[i] = y
            forms[i, pos] = np.minimum((u[1:1 + C] * n_forms).astype(np.int64), n_forms - 1)[pos]
            pres[i, pos] = np.minimum(np.searchsorted(pres_cdf, u[1 + C:1 + 2 * C], side="right"),
                                      len(PRESENTATIONS) - 1)[pos]
            missed[i] = pos & (u[1 + 2 * C:] < self.missed_label_rate)
        self.clean_labels = clean.astype(np.float32)
        self.labels = (clean & ~missed).astype(np.float32)
        self.forms = forms
        self.presentation = pres
        self.visible = clean.astype(bool)

    # -- images ---------------------------------------------------------------------------------
    def render_one(self, i: int, findings=None) -> np.ndarray:
        """Render image ``i`` (uint8 [S, S]) without touching the cache.

        ``findings``: class indices to draw (default: the findings the image shows, ``visible``);
        each must be one of the sample's (study's) findings, since its form and presentation are
        the sample's.
        """
        i = self._index(i)
        study, view = divmod(i, self.views)
        present = np.flatnonzero(self.clean_labels[i])
        if findings is None:
            findings = np.flatnonzero(self.visible[i])
        findings = sorted({int(c) for c in findings})
        extra = [c for c in findings if c not in set(present.tolist())]
        if extra:
            raise ValueError(f"findings: classes {extra} are not findings of sample {i} "
                             f"(its findings: {present.tolist()})")
        rng = self._rng(study, _BACKGROUND_STREAM, view)
        anat = _Anatomy.draw(rng)
        instances = []
        for c in findings:
            form = _FORM_LIST[c][self.forms[i, c]]
            presentation = PRESENTATIONS[self.presentation[i, c]]
            instances.append((form, presentation, self._rng(study, _INSTANCE_STREAM + c, view)))
        for form, presentation, irng in instances:
            if form.anatomy:  # shape changes first: the background is drawn from the anatomy
                form.draw(anat, irng, 1.0 if presentation == "clear" else 0.5)
        cv = _Canvas(self.image_size)
        _render_background(cv, anat, rng)
        _render_clutter(cv, anat, self._rng(study, _CLUTTER_STREAM, view))
        for form, presentation, irng in instances:
            if form.anatomy:
                continue
            scale = irng.uniform(0.55, 0.7) if presentation == "small" else 1.0
            faint = irng.uniform(0.35, 0.55) if presentation == "faint" else 1.0
            cut = (irng.uniform(0, 2 * math.pi), irng.uniform(-0.01, 0.02))
            layers, centre = form.draw(cv, anat, irng, scale)
            for layer in layers:
                if presentation == "occluded":
                    layer = _occlude(layer, cv, centre, *cut)
                # silhouette: an opacity shows less over dense tissue (heart, diaphragm) than over
                # aerated lung; gas (negative contrast) shows everywhere
                visibility = 0.35 + 0.65 * cv.lungs[layer.rows, layer.cols] if layer.contrast > 0 else 1.0
                cv.img[layer.rows, layer.cols] += faint * layer.contrast * layer.mask * visibility
        # exposure: per-image window and film grain
        gain, offset = rng.uniform(0.75, 1.25), rng.uniform(-0.08, 0.08)
        img = (cv.img - 0.4) * gain + 0.4 + offset
        img += 0.02 * rng.standard_normal(img.shape).astype(np.float32)
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)

    def load_raw(self, i: int) -> np.ndarray:
        if self._images is None:
            S = self.image_size
            self._images = np.empty((len(self), S, S), np.uint8)
            self._rendered = np.zeros(len(self), bool)
        if not self._rendered[i]:
            self._images[i] = self.render_one(i)
            self._rendered[i] = True
        return self._images[i]

    @property
    def images(self) -> np.ndarray:
        """All images as uint8 [N, S, S] (the missing ones rendered now)."""
        for i in range(len(self)):
            self.load_raw(i)
        if self._images is None:
            return np.empty((0, self.image_size, self.image_size), np.uint8)
        return self._images

    def form_name(self, i: int, c: int) -> str | None:
        """Name of the form of class ``c`` in sample ``i`` (None if absent)."""
        f = int(self.forms[i, c])
        return None if f < 0 else _FORM_LIST[c][f].name
