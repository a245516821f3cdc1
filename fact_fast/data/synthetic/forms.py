"""The findings of the synthetic benchmark: two visually different forms per class (polysemy),
each drawn from the shared primitives in its own region of the lungs or heart.

A lesion form's ``draw(cv, anatomy, rng, scale)`` returns ``(layers, centre)``: the layers to add
and the point an occluding cut passes near. An anatomy form (``anatomy=True``) changes the
:class:`~fact_fast.data.synthetic.anatomy.Anatomy` instead (``draw(anatomy, rng, strength)``),
before the background is drawn from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from collections.abc import Callable

import numpy as np

from ..labels.sets import NIH_CLASS_NAMES
from .primitives import Layer, blobs, disc, edge, ellipse, polyline, reticular, ring, stripes, wedge

__all__ = ["Form", "FORMS", "FORM_LIST"]


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
    mask = edge(surface - yy, 0.02) * edge(a.lung_sd(s, yy, xx), cv.aa())
    return [Layer(rows, cols, mask, _contrast(rng, 0.2, 0.3))], (lcx, top + 0.05)


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
        keep = lambda yy, xx: edge(yy - (lcy - 0.3 * ry), 0.03)  # noqa: E731  upper part only
        centre = (lcx, lcy - ry + gap)
    else:
        icx, icy, irx, iry = lcx - a.lateral(s) * gap, lcy, rx - gap, ry - 0.3 * gap
        keep = lambda yy, xx: edge(a.lateral(s) * (lcx - xx) + 0.2 * rx, 0.03)  # noqa: E731  lateral part
        centre = (lcx + a.lateral(s) * (rx - gap), lcy)
    rows, cols, yy, xx = cv.local(lcx - rx, lcx + rx, lcy - ry, lcy + ry)
    inner_sd = (np.sqrt(((xx - icx) / irx) ** 2 + ((yy - icy) / iry) ** 2) - 1.0) * irx
    lung = edge(a.lung_sd(s, yy, xx), cv.aa())
    k_mask = keep(yy, xx)
    lucent = lung * edge(-inner_sd, cv.aa()) * k_mask
    line = lung * edge(np.abs(inner_sd) - 0.004, cv.aa()) * k_mask
    return [Layer(rows, cols, lucent, -_contrast(rng, 0.10, 0.14)), Layer(rows, cols, line, _contrast(rng, 0.2, 0.3))], centre


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
    band = edge(np.abs(a.lung_sd(s, yy, xx) + t / 2) - t / 2, cv.aa())
    if where == "apical":
        keep = edge(yy - (lcy - ry * rng.uniform(0.6, 0.75)), 0.02)
        centre = (lcx, lcy - ry)
    else:
        v0 = rng.uniform(-0.4, 0.2)
        keep = edge(np.abs((yy - lcy) / ry - v0) - 0.35 * k, 0.03) * edge(a.lateral(s) * (lcx - xx), 0.02)
        centre = (lcx + a.lateral(s) * rx, lcy + v0 * ry)
    return [Layer(rows, cols, band * keep, _contrast(rng, 0.24, 0.32))], centre


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
    inside = edge(np.hypot(xx - cx, yy - cy) - r, cv.aa())
    gas = inside * edge(yy - cy, cv.aa())  # upper half dark, lower half fluid
    return [Layer(rows, cols, gas, -_contrast(rng, 0.12, 0.18)),
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
# the forms of class c, in NIH_CLASS_NAMES order
FORM_LIST = [FORMS[n] for n in NIH_CLASS_NAMES]
