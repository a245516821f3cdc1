"""fact_fast.data: datasets, the label co-occurrence graph and label text embeddings.

Imports only torch, numpy and the standard library (PIL lazily, for real image files).
"""
from .base import IMAGENET_MEAN, IMAGENET_STD, SPLITS, MultiLabelDataset
from .datasets import (DATASETS, ChestMNIST, CSVImageDataset, NIHChestXray14, build_dataset,
                       register_dataset)
from .label_embeddings import EMBEDDING_DIM, hashed_embeddings, label_embeddings, shipped_label_sets
from .label_graph import (cooccurrence_probabilities, csr_to_dense, dense_to_csr, frequency_groups,
                          label_graph)
from .label_sets import (CXR_LT_CLASS_NAMES, LABEL_SETS, NIH_CLASS_NAMES, ODIR_CLASS_NAMES,
                         RSNA_IHD_CLASS_NAMES, SYNTHETIC_CLASS_NAMES)
from .synthetic import SyntheticComorbidity
from .synthetic_benchmark import SyntheticBenchmark

__all__ = [
    "MultiLabelDataset", "SyntheticBenchmark", "SyntheticComorbidity", "CSVImageDataset", "ChestMNIST", "NIHChestXray14",
    "DATASETS", "build_dataset", "register_dataset", "SPLITS", "IMAGENET_MEAN", "IMAGENET_STD",
    "label_graph", "cooccurrence_probabilities", "frequency_groups", "dense_to_csr", "csr_to_dense",
    "label_embeddings", "hashed_embeddings", "shipped_label_sets", "EMBEDDING_DIM",
    "SYNTHETIC_CLASS_NAMES", "NIH_CLASS_NAMES", "ODIR_CLASS_NAMES", "RSNA_IHD_CLASS_NAMES",
    "CXR_LT_CLASS_NAMES", "LABEL_SETS",
]
