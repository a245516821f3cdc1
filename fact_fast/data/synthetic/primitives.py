"""The drawing vocabulary of the synthetic benchmark: a canvas over [0, 1]² and the shape
primitives every finding, the anatomy and the clutter are built from.

A primitive returns a :class:`Layer`: a float32 mask in [0, 1] on the window of the canvas it
covers, and the contrast it is added with (negative = darker). Edges are soft (:func:`edge`) so
that shapes stay anti-aliased at any image size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PRIMITIVES", "Canvas", "Layer", "edge", "rotate", "disc", "ring", "ellipse", "stripes", "blobs",
           "reticular", "wedge", "polyline"]

PRIMITIVES = ("disc", "ring", "stripes", "blobs", "reticular", "wedge", "ellipse", "arc", "line",
              "lucency", "heart_shape", "lung_shape")


def edge(sd, width):
    """Soft inside-indicator of a signed distance (negative inside): 1 inside, 0 outside."""
    return np.clip(0.5 - sd / width, 0.0, 1.0)


def rotate(dx, dy, angle):
    c, s = math.cos(angle), math.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


class Canvas:
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
class Layer:
    """A primitive's mask on a window, added to the image with ``contrast`` (negative = darker)."""
    rows: slice
    cols: slice
    mask: np.ndarray
    contrast: float


def disc(cv, cx, cy, r, contrast, soft=0.0):
    rows, cols, yy, xx = cv.local(cx - r - soft, cx + r + soft, cy - r - soft, cy + r + soft)
    return Layer(rows, cols, edge(np.hypot(xx - cx, yy - cy) - r, cv.aa(soft)), contrast)


def ring(cv, cx, cy, r, t, contrast):
    e = r + t
    rows, cols, yy, xx = cv.local(cx - e, cx + e, cy - e, cy + e)
    return Layer(rows, cols, edge(np.abs(np.hypot(xx - cx, yy - cy) - r) - t / 2, cv.aa()), contrast)


def ellipse(cv, cx, cy, rx, ry, angle, contrast, soft=0.0):
    e = max(rx, ry) + soft
    rows, cols, yy, xx = cv.local(cx - e, cx + e, cy - e, cy + e)
    u, v = rotate(xx - cx, yy - cy, angle)
    sd = (np.sqrt((u / rx) ** 2 + (v / ry) ** 2) - 1.0) * min(rx, ry)
    return Layer(rows, cols, edge(sd, cv.aa(soft)), contrast)


def stripes(cv, cx, cy, half_length, n, spacing, t, angle, contrast):
    """``n`` parallel lines of length 2*half_length and thickness t, ``spacing`` apart."""
    e = half_length + n * spacing
    rows, cols, yy, xx = cv.local(cx - e, cx + e, cy - e, cy + e)
    u, v = rotate(xx - cx, yy - cy, angle)
    offsets = (np.arange(n, dtype=np.float32) - (n - 1) / 2) * spacing
    dist = np.min(np.abs(v[None] - offsets[:, None, None]), axis=0)
    sd = np.maximum(np.abs(u) - half_length, dist - t / 2)
    return Layer(rows, cols, edge(sd, cv.aa()), contrast)


def blobs(cv, centres, sigma, contrast):
    centres = np.asarray(centres, dtype=np.float32)
    e = 3 * sigma
    rows, cols, yy, xx = cv.local(centres[:, 0].min() - e, centres[:, 0].max() + e,
                                  centres[:, 1].min() - e, centres[:, 1].max() + e)
    out = np.zeros(np.broadcast_shapes(yy.shape, xx.shape), np.float32)
    for cx, cy in centres:
        out = np.maximum(out, np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma * sigma)))
    return Layer(rows, cols, np.clip(out * 1.3, 0.0, 1.0), contrast)


def reticular(cv, cx, cy, rx, ry, period, t, angle, contrast):
    """Two crossing families of thin lines (a net) inside a soft ellipse."""
    e = max(rx, ry)
    rows, cols, yy, xx = cv.local(cx - e, cx + e, cy - e, cy + e)
    u, v = rotate(xx - cx, yy - cy, angle)
    inside = edge((np.sqrt((u / rx) ** 2 + (v / ry) ** 2) - 1.0) * min(rx, ry), 0.3 * min(rx, ry))
    net = 0.0
    for a in (0.0, 1.2):  # second family at ~70 degrees
        p, _ = rotate(u, v, a)
        d = np.abs(np.mod(p, period) - period / 2)
        net = np.maximum(net, edge(d - t / 2, cv.aa()))
    return Layer(rows, cols, inside * net, contrast)


def wedge(cv, cx, cy, r, angle, contrast):
    """Filled triangle of circumradius r; ``angle`` turns it (0: one vertex pointing up)."""
    rows, cols, yy, xx = cv.local(cx - r, cx + r, cy - r, cy + r)
    u, v = rotate(xx - cx, yy - cy, angle)
    sd = None
    for k in range(3):
        th = math.pi / 2 + k * 2 * math.pi / 3
        d = u * math.cos(th) + v * math.sin(th) - r / 2
        sd = d if sd is None else np.maximum(sd, d)
    return Layer(rows, cols, edge(sd, cv.aa()), contrast)


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
    return Layer(rows, cols, edge(dist - t / 2, cv.aa()), contrast)
