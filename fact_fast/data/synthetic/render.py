"""One synthetic image from its anatomy, clutter and finding instances: the order they are drawn
in, the presentations (faint, small, occluded), the silhouette effect and the exposure.
"""
from __future__ import annotations

import math

import numpy as np

from .anatomy import Anatomy, render_background, render_clutter
from .primitives import Canvas, Layer, edge, rotate

__all__ = ["render_image"]


def _occlude(layer, cv, centre, angle, offset):
    """Keep the part of ``layer`` on one side of a line through (near) ``centre``."""
    yy = cv.coords[layer.rows, None]
    xx = cv.coords[None, layer.cols]
    u, _ = rotate(xx - centre[0], yy - centre[1], angle)
    return Layer(layer.rows, layer.cols, layer.mask * edge(u - offset, 0.01), layer.contrast)


def render_image(image_size: int, rng: np.random.Generator, clutter_rng: np.random.Generator,
                 instances: list) -> np.ndarray:
    """Draw one image, uint8 ``[image_size, image_size]``.

    ``rng`` draws the anatomy, the background and the exposure; ``clutter_rng`` the clutter;
    ``instances`` holds one ``(form, presentation, rng)`` per finding drawn, presentation a name of
    :data:`~fact_fast.data.synthetic.label_model.PRESENTATIONS`.
    """
    anat = Anatomy.draw(rng)
    for form, presentation, irng in instances:
        if form.anatomy:  # shape changes first: the background is drawn from the anatomy
            form.draw(anat, irng, 1.0 if presentation == "clear" else 0.5)
    cv = Canvas(image_size)
    render_background(cv, anat, rng)
    render_clutter(cv, anat, clutter_rng)
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
