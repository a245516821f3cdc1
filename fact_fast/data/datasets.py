"""The dataset registry: build any dataset by name with its image pipeline attached.

Real datasets are read from the user's disk in their published layouts (nothing is ever
downloaded) by the readers in :mod:`fact_fast.data.readers`:

* ``"synthetic"`` -- :class:`fact_fast.data.synthetic.SyntheticBenchmark`, the default
  benchmark (no root needed; see ``docs/synthetic.md``).
* ``"synthetic_motifs"`` -- :class:`fact_fast.data.synthetic.motifs.SyntheticComorbidity`, the earlier
  12-motif set (one fixed-place motif per class; a linear probe on pixels solves it).
* ``"csv"`` -- :class:`~fact_fast.data.readers.CSVImageDataset`: an image folder plus a CSV of
  0/1 (blank = unknown) label columns.
* ``"chestmnist"`` -- :class:`~fact_fast.data.readers.ChestMNIST`: MedMNIST ``.npz``.
* ``"nih"`` -- :class:`~fact_fast.data.readers.NIHChestXray14`: official or LDR random
  patient-level split, view filter.
* ``"chexpert"`` -- :class:`~fact_fast.data.readers.CheXpert`: CheXpert / MIMIC-style tables
  with the uncertainty policy.
* ``"odir"`` -- :class:`~fact_fast.data.readers.ODIR5K`: the ODIR-5K workbook, both eyes of a
  patient as one two-view item by default.
* ``"cxr_lt"`` -- :class:`~fact_fast.data.readers.CXRLT`: CXR-LT 2023 / 2024 label files over
  MIMIC-CXR-JPG.
* ``"rsna_ihd"`` -- :class:`~fact_fast.data.readers.RSNAIHD`: RSNA intracranial haemorrhage DICOM
  slices in three CT windows.

Options beyond ``root``/``image_size``/``seed`` are passed to the reader as keyword arguments.
"""
from __future__ import annotations

from .base import MultiLabelDataset, MultiViewDataset, SPLITS
from .readers import (ChestMNIST, CheXpert, CSVImageDataset, NIHChestXray14, build_cxr_lt, build_odir,
                      build_rsna_ihd, read_image_file)
from .synthetic import SyntheticBenchmark, SyntheticComorbidity
from .transforms import ImagePipeline

__all__ = ["DATASETS", "build_dataset", "CSVImageDataset", "ChestMNIST", "CheXpert", "NIHChestXray14",
           "read_image_file", "register_dataset"]


def _build_synthetic(split, root=None, image_size=128, seed=0, views=1, **kw):
    """One image per sample, or with ``views`` > 1 a :class:`MultiViewDataset` of studies."""
    ds = SyntheticBenchmark(split, image_size=image_size, seed=seed, views=views, **kw)
    return MultiViewDataset(ds, "study_ids") if ds.views > 1 else ds


def _build_synthetic_motifs(split, root=None, image_size=64, seed=0, **kw):
    return SyntheticComorbidity(split, image_size=image_size, seed=seed, **kw)


def _build_csv(split, root=None, image_size=224, seed=0, **kw):
    return CSVImageDataset(root, split, image_size=image_size, seed=seed, **kw)


def _build_chestmnist(split, root=None, image_size=64, seed=0, **kw):
    return ChestMNIST(root, split, image_size=image_size, seed=seed, **kw)


def _build_nih(split, root=None, image_size=224, seed=0, **kw):
    return NIHChestXray14(root, split, image_size=image_size, seed=seed, **kw)


def _build_chexpert(split, root=None, image_size=224, seed=0, **kw):
    return CheXpert(root, split, image_size=image_size, seed=seed, **kw)


# name -> builder(split, root=..., image_size=..., seed=..., **kwargs) -> MultiLabelDataset
DATASETS = {
    "synthetic": _build_synthetic,
    "synthetic_motifs": _build_synthetic_motifs,
    "csv": _build_csv,
    "chestmnist": _build_chestmnist,
    "nih": _build_nih,
    "odir": build_odir,
    "cxr_lt": build_cxr_lt,
    "rsna_ihd": build_rsna_ihd,
    "chexpert": _build_chexpert,
}


def register_dataset(name: str, builder) -> None:
    """Add a dataset builder ``builder(split, root=, image_size=, seed=, **kwargs)``."""
    if not callable(builder):
        raise TypeError("builder must be callable")
    DATASETS[name] = builder


def build_dataset(name: str = "synthetic", split: str = "train", *, root: str | None = None,
                  image_size: int = 64, seed: int = 0, train: bool | None = None,
                  pipeline: dict | None = None, **kwargs) -> MultiLabelDataset:
    """Build a dataset from the :data:`DATASETS` registry with its image pipeline attached.

    ``train`` (default: ``split == "train"``) picks the augmenting transform; ``pipeline``
    holds :class:`~fact_fast.data.transforms.ImagePipeline` overrides (crop, flip, resize...);
    channels and normalisation come from the dataset unless given there.
    """
    if name not in DATASETS:
        raise ValueError(f"name: unknown dataset {name!r}; valid values: {sorted(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split: unknown split {split!r}; valid values: {list(SPLITS)}")
    ds = DATASETS[name](split, root=root, image_size=image_size, seed=seed, **kwargs)
    settings = {"image_size": image_size, "channels": ds.channels, "mean": ds.mean, "std": ds.std}
    settings.update(pipeline or {})
    ds.pipeline = ImagePipeline(**settings)
    ds.transform = ds.pipeline.build(train=split == "train" if train is None else bool(train))
    return ds
