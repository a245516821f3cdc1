"""The chest every synthetic image shows: per-image anatomy (lungs, heart, body), the background
(silhouette, spine, ribs, vascular markings, texture) and the clinical clutter (ECG electrodes,
wires and catheters, calcified specks) drawn on every image whatever its labels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .primitives import disc, edge, polyline, ring

__all__ = ["Anatomy", "render_background", "render_clutter"]


@dataclass
class Anatomy:
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


def render_background(cv, anat, rng):
    S = cv.size
    rows, cols, yy, xx = cv.full()
    bx, by, brx, bry = anat.body
    body = edge((np.sqrt(((xx - bx) / brx) ** 2 + ((yy - by) / bry) ** 2) - 1.0) * brx, 0.04)
    img = 0.10 + 0.50 * body + 0.05 * _smooth_noise(rng, S, 6)
    img += 0.10 * body * edge(np.abs(xx - bx) - 0.035, 0.02)  # spine / mediastinum
    hx, hy, hrx, hry = anat.heart
    heart = edge((np.sqrt(((xx - hx) / hrx) ** 2 + ((yy - hy) / hry) ** 2) - 1.0) * hrx, 0.02)
    # the heart (soft tissue) hides the lung behind it
    lungs = np.maximum(*(edge(anat.lung_sd(s, yy, xx), 0.02) for s in (0, 1))) * (1.0 - 0.85 * heart)
    img -= anat.lung_darkness * lungs
    img += 0.04 * heart
    cv.lungs[:] = lungs
    # ribs: 6 arcs per side sloping down laterally
    y0 = anat.lung_cy - 0.95 * np.mean(anat.lung_ry) + np.arange(6, dtype=np.float32) * 0.095
    y0 = y0 + rng.uniform(-0.01, 0.01, 6).astype(np.float32)
    rib_y = y0[:, None, None] + 0.9 * (xx - bx) ** 2
    ribs = edge(np.min(np.abs(yy[None] - rib_y), axis=0) - 0.009, 0.012)
    img += 0.05 * ribs * body
    # vascular markings: mid-frequency texture inside the lungs
    img += 0.07 * anat.markings * np.clip(_smooth_noise(rng, S, 18), 0.0, None) * lungs
    cv.img += img


def render_clutter(cv, anat, rng):
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
