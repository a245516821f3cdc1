"""The earlier synthetic comorbidity dataset, registered as ``"synthetic_motifs"``.

Superseded as the default by :mod:`fact_fast.data.synthetic.benchmark` (``"synthetic"``): here
each class is one always-visible motif in a fixed place and a linear probe on 32 x 32 pixels
reaches test mAP 94.4 +- 0.7 over 3 seeds (``benchmarks/linear_probe.py``). Kept for tests and
as an easy sanity set.

Procedurally generated grayscale "X-ray-like" images (two darker lung fields, smooth
low-frequency noise and grain) on which each class is a **visual motif** with its own typical
location and scale, random jitter and random intensity. The class names are disease-like so
that text embeddings are meaningful, but the classes are synthetic motifs, not pathology:

====  ==============  ===============================================  =====
 idx  name            motif                                            prior
====  ==============  ===============================================  =====
   0  Effusion        bright horizontal band at the bottom             0.45
   1  Atelectasis     patch of 3 horizontal stripes (upper left)        .
   2  Cardiomegaly    large filled disc (centre, low)                   .
   3  Infiltration    cluster of 5-8 small gaussian blobs (upper right) .
   4  Edema           plus-shaped cross (lower left)                    .
   5  Nodule          small filled disc (anywhere in the upper half)    .
   6  Consolidation   patch of 3 vertical stripes (lower right)         .
   7  Mass            filled square (upper left-centre)                 .
   8  Pneumothorax    ring / annulus (upper right corner)               .
   9  Emphysema       filled triangle (left, middle)                    .
  10  Fibrosis        patch of diagonal stripes (top centre)            .
  11  Hernia          X-shaped diagonal cross (right, middle)          0.03
====  ==============  ===============================================  =====

Labels. The configured prior prevalence is log-linear (Zipf-like) from 45 % down to 3 %
(``prevalence``). Co-occurrence follows a ground-truth comorbidity graph
(``ground_truth_graph[i, j]`` = finding i tends to bring finding j; edges go from rarer to more
common findings so the long tail is preserved): each image is either "no finding" (all-zero
labels, probability ``normal_prob``) or draws independent *root* findings from calibrated root
probabilities, and every graph child of a root is added with probability ``edge_prob`` (0.6,
one hop). Root probabilities and ``normal_prob`` are solved for exactly so that the marginal
prevalence equals ``prevalence`` and the expected fraction of all-zero images is
``empty_fraction`` (default 0.18).

Determinism. Every sample draws from its own ``numpy.random.Generator`` seeded with
``(seed, split, index)``, so labels and images are bitwise identical for the same seed,
independent of DataLoader workers and of ``num_samples``; the three splits use different
split codes in the seed and hence disjoint sample streams (``sample_ids`` are disjoint too).
Images are rendered (vectorised numpy) on first access of any sample and cached in memory as
uint8 [N, S, S] (the whole default train split renders in about 0.5 s at 64x64, 4 s at
224x224); inside DataLoader workers of a not-yet-rendered instance only the requested samples
are rendered (and cached per worker); ``__getitem__`` returns
the grayscale image replicated to 3 channels and normalized to roughly zero mean, unit std.
"""
from __future__ import annotations

import numpy as np
import torch

from ..base import MultiLabelDataset, check_split
from ..labels.sets import SYNTHETIC_CLASS_NAMES

__all__ = ["SyntheticComorbidity", "SYNTHETIC_CLASS_NAMES", "SYNTHETIC_GRAPH_EDGES"]

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 2400, "val": 400, "test": 800}
MAX_CLASSES = len(SYNTHETIC_CLASS_NAMES)

# (parent, child): the parent finding brings the child finding with probability edge_prob.
SYNTHETIC_GRAPH_EDGES = (
    (4, 0),   # Edema -> Effusion
    (4, 2),   # Edema -> Cardiomegaly
    (2, 0),   # Cardiomegaly -> Effusion
    (6, 3),   # Consolidation -> Infiltration
    (7, 5),   # Mass -> Nodule
    (8, 1),   # Pneumothorax -> Atelectasis
    (9, 8),   # Emphysema -> Pneumothorax
    (10, 3),  # Fibrosis -> Infiltration
    (11, 2),  # Hernia -> Cardiomegaly
)

# normalization constants of the rendered uint8 images (measured on the default train split)
_PIXEL_MEAN = 108.0 / 255.0
_PIXEL_STD = 39.0 / 255.0


def default_prevalence(num_classes: int, top: float = 0.45, bottom: float = 0.03) -> np.ndarray:
    """Log-linear long-tailed prior from ``top`` down to ``bottom``."""
    if num_classes == 1:
        return np.array([top])
    return top * (bottom / top) ** (np.arange(num_classes) / (num_classes - 1))


def _calibrate(prevalence, graph, edge_prob, empty_fraction):
    """Root probabilities r and no-finding probability q giving the exact marginals.

    Within the non-normal branch: P(y_j = 0) = (1 - r_j) * prod_{i -> j} (1 - edge_prob r_i)
    and P(all zero) = prod_j (1 - r_j). Overall: p_j = (1 - q) m_j, empty = q + (1 - q) P0.
    """
    C = len(prevalence)
    parents = [np.flatnonzero(graph[:, j]) for j in range(C)]

    def roots_for(q):
        m = np.minimum(prevalence / (1.0 - q), 0.999)
        r = m.copy()
        for _ in range(200):
            through = np.array([np.prod(1 - edge_prob * r[parents[j]]) for j in range(C)])
            r_new = np.clip(1 - (1 - m) / through, 0.0, 0.999)
            if np.max(np.abs(r_new - r)) < 1e-12:
                r = r_new
                break
            r = r_new
        return r

    def empty_for(q):
        return q + (1 - q) * np.prod(1 - roots_for(q))

    lo, hi = 0.0, min(empty_fraction, 1 - float(np.max(prevalence)) - 1e-6)
    if empty_for(lo) >= empty_fraction:  # already enough empty images without normals
        return roots_for(0.0), 0.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if empty_for(mid) < empty_fraction:
            lo = mid
        else:
            hi = mid
    q = 0.5 * (lo + hi)
    return roots_for(q), q


def _rotate(xx, yy, cx, cy, angle):
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = xx - cx, yy - cy
    return c * dx + s * dy, -s * dx + c * dy


class _Renderer:
    """Draws the motifs on a [S, S] grid of coordinates in [0, 1] (x right, y down)."""

    def __init__(self, size: int):
        self.size = size
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.yy, self.xx = np.meshgrid(coords, coords, indexing="ij")
        self.px = 1.0 / size
        # lung fields: two darker ellipses
        lung = np.zeros((size, size), np.float32)
        for cx in (0.3, 0.7):
            d = ((self.xx - cx) / 0.17) ** 2 + ((self.yy - 0.47) / 0.33) ** 2
            lung = np.maximum(lung, np.clip((1.0 - d) * 3.0, 0.0, 1.0))
        self.lung = lung

    # soft (anti-aliased) edge: 1 inside (sd < 0), 0 outside, linear over ~1 pixel (>=0.012)
    def _edge(self, sd):
        w = max(self.px, 0.012)
        return np.clip(0.5 - sd / w, 0.0, 1.0)

    def disc(self, cx, cy, r):
        return self._edge(np.hypot(self.xx - cx, self.yy - cy) - r)

    def ring(self, cx, cy, r, t):
        return self._edge(np.abs(np.hypot(self.xx - cx, self.yy - cy) - r) - t / 2)

    def box(self, cx, cy, hw, hh, angle=0.0):
        u, v = _rotate(self.xx, self.yy, cx, cy, angle)
        return self._edge(np.maximum(np.abs(u) - hw, np.abs(v) - hh))

    def stripes(self, cx, cy, half, n, angle, duty=0.45):
        u, v = _rotate(self.xx, self.yy, cx, cy, angle)
        inside = self._edge(np.maximum(np.abs(u) - half, np.abs(v) - half))
        period = 2 * half / n
        phase = np.mod(v + half, period) / period  # in [0, 1)
        band = self._edge((np.abs(phase - 0.5) - duty / 2) * period)
        return inside * band

    def cross(self, cx, cy, half, thick, angle):
        a = self.box(cx, cy, half, thick / 2, angle)
        b = self.box(cx, cy, thick / 2, half, angle)
        return np.maximum(a, b)

    def triangle(self, cx, cy, r, angle):
        u, v = _rotate(self.xx, self.yy, cx, cy, angle)
        sd = None
        for k in range(3):
            th = np.pi / 2 + k * 2 * np.pi / 3  # outward normals of an equilateral triangle
            d = u * np.cos(th) + v * np.sin(th) - r / 2
            sd = d if sd is None else np.maximum(sd, d)
        return self._edge(sd)

    def blobs(self, centers, sigma):
        out = np.zeros_like(self.xx)
        for cx, cy in centers:
            g = np.exp(-((self.xx - cx) ** 2 + (self.yy - cy) ** 2) / (2 * sigma**2))
            out = np.maximum(out, g)
        return np.clip(out * 1.4, 0.0, 1.0)

    def band(self, top, height):
        sd = np.maximum(top - self.yy, self.yy - (top + height))
        w = 0.04  # soft upper edge like a fluid meniscus
        return np.clip(0.5 - sd / w, 0.0, 1.0)

    def motif(self, c, rng):
        j = lambda s: rng.uniform(-s, s)  # noqa: E731  jitter
        ang = lambda s: rng.uniform(-s, s)  # noqa: E731
        if c == 0:    # Effusion: bright bottom band
            return self.band(0.80 + j(0.04), 0.22)
        if c == 1:    # Atelectasis: horizontal stripes
            return self.stripes(0.30 + j(0.06), 0.32 + j(0.06), 0.13 * rng.uniform(0.9, 1.15), 3, ang(0.15))
        if c == 2:    # Cardiomegaly: large disc
            return self.disc(0.50 + j(0.05), 0.60 + j(0.05), 0.17 * rng.uniform(0.9, 1.1))
        if c == 3:    # Infiltration: blob cluster
            n = int(rng.integers(5, 9))
            cx, cy = 0.70 + j(0.06), 0.33 + j(0.06)
            pts = [(cx + j(0.12), cy + j(0.12)) for _ in range(n)]
            return self.blobs(pts, 0.025 * rng.uniform(0.9, 1.2))
        if c == 4:    # Edema: plus cross
            return self.cross(0.28 + j(0.05), 0.68 + j(0.05), 0.12 * rng.uniform(0.9, 1.15), 0.05, ang(0.2))
        if c == 5:    # Nodule: small disc, anywhere in the upper half
            return self.disc(rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.45), 0.055 * rng.uniform(0.9, 1.2))
        if c == 6:    # Consolidation: vertical stripes
            return self.stripes(0.70 + j(0.06), 0.66 + j(0.06), 0.13 * rng.uniform(0.9, 1.15), 3, np.pi / 2 + ang(0.15))
        if c == 7:    # Mass: filled square
            return self.box(0.40 + j(0.06), 0.30 + j(0.06), 0.085 * rng.uniform(0.9, 1.15), 0.085 * rng.uniform(0.9, 1.15), ang(0.2))
        if c == 8:    # Pneumothorax: ring
            return self.ring(0.78 + j(0.05), 0.22 + j(0.05), 0.11 * rng.uniform(0.9, 1.15), 0.035)
        if c == 9:    # Emphysema: triangle
            return self.triangle(0.22 + j(0.05), 0.46 + j(0.06), 0.13 * rng.uniform(0.9, 1.15), ang(0.25))
        if c == 10:   # Fibrosis: diagonal stripes
            return self.stripes(0.50 + j(0.06), 0.18 + j(0.04), 0.12 * rng.uniform(0.9, 1.15), 4, np.pi / 4 + ang(0.15))
        if c == 11:   # Hernia: X cross
            return self.cross(0.78 + j(0.05), 0.55 + j(0.05), 0.11 * rng.uniform(0.9, 1.15), 0.045, np.pi / 4 + ang(0.2))
        raise ValueError(c)

    def background(self, rng):
        S = self.size
        # smooth low-frequency noise: a 6x6 random grid, bilinearly upsampled
        g = rng.standard_normal((6, 6)).astype(np.float32)
        t = np.linspace(0, 5, S, dtype=np.float32)
        i0 = np.minimum(t.astype(np.int64), 4)
        f = t - i0
        rows = g[i0] * (1 - f)[:, None] + g[i0 + 1] * f[:, None]                 # [S, 6]
        smooth = rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]   # [S, S]
        base = 0.42 + rng.uniform(-0.04, 0.04)
        img = base - 0.16 * self.lung + 0.05 * smooth
        # fine grain
        img += 0.035 * rng.standard_normal((S, S)).astype(np.float32)
        return img

    def render(self, label_row, rng):
        img = self.background(rng)
        for c in np.flatnonzero(label_row):
            m = self.motif(int(c), rng)
            img = img + rng.uniform(0.25, 0.45) * m
        return img


class SyntheticComorbidity(MultiLabelDataset):
    """Synthetic comorbidity dataset (see the module docstring).

    Args:
        split: "train", "val" or "test".
        image_size: side of the square images (any size >= 16; designed for 32..224).
        seed: dataset seed; same seed -> bitwise identical labels and images.
        num_samples: number of samples (default train 2400 / val 400 / test 800).
        num_classes: number of classes, 1..12 (the first ``num_classes`` motifs).
        prevalence: prior prevalence per class (default log-linear 0.45 -> 0.03).
        edge_prob: probability that a root finding brings each of its graph children.
        empty_fraction: expected fraction of images with no finding.
        transform: optional callable applied to the normalized image tensor.
    """

    class_names = list(SYNTHETIC_CLASS_NAMES)
    channels = "gray"
    mean = (_PIXEL_MEAN,) * 3
    std = (_PIXEL_STD,) * 3

    def __init__(self, split: str = "train", *, image_size: int = 64, seed: int = 0,
                 num_samples: int | None = None, num_classes: int = 12, prevalence=None,
                 edge_prob: float = 0.6, empty_fraction: float = 0.18, transform=None):
        self.split = check_split(split)
        if not 1 <= int(num_classes) <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}")
        if int(image_size) < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        if num_samples is None:
            num_samples = DEFAULT_SIZES[split]
        if int(num_samples) < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if not 0.0 <= edge_prob <= 1.0:
            raise ValueError(f"edge_prob must be in [0, 1], got {edge_prob}")
        if not 0.0 <= empty_fraction < 1.0:
            raise ValueError(f"empty_fraction must be in [0, 1), got {empty_fraction}")
        C = int(num_classes)
        self.name = "synthetic_motifs"
        self.num_samples = int(num_samples)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.transform = transform
        self.class_names = list(SYNTHETIC_CLASS_NAMES[:C])
        if prevalence is None:
            prevalence = default_prevalence(C)
        prevalence = np.asarray(prevalence, dtype=np.float64)
        if prevalence.shape != (C,) or np.any(prevalence <= 0) or np.any(prevalence >= 1):
            raise ValueError(f"prevalence must be {C} values in (0, 1), got {prevalence}")
        self.prevalence = prevalence
        graph = np.zeros((C, C), dtype=bool)
        for i, j in SYNTHETIC_GRAPH_EDGES:
            if i < C and j < C:
                graph[i, j] = True
        self.ground_truth_graph = graph
        self.edge_prob = float(edge_prob)
        self.root_prob, self.normal_prob = _calibrate(prevalence, graph, self.edge_prob, float(empty_fraction))
        self.expected_empty_fraction = float(
            self.normal_prob + (1 - self.normal_prob) * np.prod(1 - self.root_prob))
        # disjoint global sample ids per split (and the per-sample seeds)
        self.sample_ids = SPLIT_CODES[split] * 1_000_000_000 + np.arange(self.num_samples, dtype=np.int64)
        self.labels = self._sample_labels().astype(np.float32)
        self._images = None  # uint8 [N, S, S], rendered on first access

    # -- labels ---------------------------------------------------------------------------
    def _rng(self, i: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLIT_CODES[self.split], int(i), stream, 0xFAC7])

    def _sample_labels(self) -> np.ndarray:
        C = len(self.class_names)
        edges = np.argwhere(self.ground_truth_graph)
        labels = np.zeros((self.num_samples, C), dtype=np.uint8)
        for i in range(self.num_samples):
            rng = self._rng(i, 0)
            u = rng.random(1 + C + len(edges))  # fixed number of draws per sample
            if u[0] < self.normal_prob:
                continue
            root = u[1:1 + C] < self.root_prob
            y = root.copy()
            for (a, b), ue in zip(edges, u[1 + C:]):
                if root[a] and ue < self.edge_prob:
                    y[b] = True
            labels[i] = y
        return labels

    # -- images ---------------------------------------------------------------------------
    def render_all(self) -> np.ndarray:
        """Render (once) and return all images as uint8 [N, S, S]."""
        if self._images is None:
            r = _Renderer(self.image_size)
            out = np.empty((self.num_samples, self.image_size, self.image_size), dtype=np.uint8)
            for i in range(self.num_samples):
                out[i] = self._to_uint8(r.render(self.labels[i], self._rng(i, 1)))
            self._images = out
        return self._images

    def render_one(self, i: int) -> np.ndarray:
        """Render sample i (uint8 [S, S]) without touching the cache."""
        return self._to_uint8(_Renderer(self.image_size).render(self.labels[i], self._rng(i, 1)))

    @staticmethod
    def _to_uint8(img):
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)

    def load_raw(self, i: int) -> np.ndarray:
        if self._images is None and torch.utils.data.get_worker_info() is not None:
            # inside a DataLoader worker with nothing rendered yet: render only the samples
            # this worker is asked for (cached per worker) instead of the whole dataset
            cache = self.__dict__.setdefault("_worker_cache", {})
            if i not in cache:
                cache[i] = self.render_one(i)
            return cache[i]
        return self.render_all()[i]

    @property
    def images(self) -> np.ndarray:
        """All images as uint8 [N, S, S] (rendered on first use)."""
        return self.render_all()
