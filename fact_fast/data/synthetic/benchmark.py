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

import numpy as np

from ..base import MultiLabelDataset, check_split
from ..labels.sets import NIH_CLASS_NAMES
from .forms import FORM_LIST
from .label_model import PRESENTATIONS, sample_labels
from .render import render_image
from .views import view_visibility

__all__ = ["SyntheticBenchmark"]

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 3000, "val": 600, "test": 1500}

# stream ids of the per-sample generators
_LABEL_STREAM, _BACKGROUND_STREAM, _CLUTTER_STREAM, _VIEW_STREAM, _INSTANCE_STREAM = 0, 1, 2, 3, 100

# Normalisation constants of the rendered uint8 images (default train split, 128 px; see
# docs/synthetic.md). Only roughly zero-mean / unit-std is needed.
_PIXEL_MEAN = 117.0 / 255.0
_PIXEL_STD = 51.0 / 255.0


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
        V, N = self.views, self.num_samples
        self.visible = view_visibility(self.clean_labels, V, self.view_only_rate,
                                       lambda i: self._rng(i, _VIEW_STREAM))
        for name in ("clean_labels", "labels", "forms", "presentation"):
            setattr(self, name, np.repeat(getattr(self, name), V, axis=0))
        self.study_ids = [f"{self.split}-{i}" for i in range(N) for _ in range(V)]

    def _sample_labels(self):
        n_forms = np.array([len(f) for f in FORM_LIST])
        clean, self.forms, self.presentation, missed = sample_labels(
            lambda i: self._rng(i, _LABEL_STREAM), self.num_samples, n_forms, self.missed_label_rate)
        self.clean_labels = clean.astype(np.float32)
        self.labels = (clean & ~missed).astype(np.float32)
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
        instances = []
        for c in findings:
            form = FORM_LIST[c][self.forms[i, c]]
            presentation = PRESENTATIONS[self.presentation[i, c]]
            instances.append((form, presentation, self._rng(study, _INSTANCE_STREAM + c, view)))
        return render_image(self.image_size, self._rng(study, _BACKGROUND_STREAM, view),
                            self._rng(study, _CLUTTER_STREAM, view), instances)

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
        return None if f < 0 else FORM_LIST[c][f].name
