"""fact_fast.data: datasets, the on-disk image cache, the label co-occurrence graph and label text
embeddings.

Imports torch, numpy and the standard library (PIL, torchvision lazily).
"""
from .base import IMAGENET_MEAN, IMAGENET_STD, SPLITS, MultiLabelDataset, MultiViewDataset, collate
from .cache import ImageCache, attach_cache
from .datasets import (DATASETS, ChestMNIST, CheXpert, CSVImageDataset, NIHChestXray14, build_dataset,
                       read_image_file, register_dataset)
from .labels import (CHEXPERT_CLASS_NAMES, CXR_LT_2023_CLASS_NAMES, CXR_LT_CLASS_NAMES, DEFAULT_GRAPH,
                     EMBEDDING_DIM, GRAPH_METHODS, LABEL_SETS, NIH_CLASS_NAMES, ODIR_CLASS_NAMES,
                     RSNA_IHD_CLASS_NAMES, SYNTHETIC_CLASS_NAMES, CooccurrenceCounts, LabelGraph,
                     cooccurrence_counts, cooccurrence_probabilities, graph_report, hashed_embeddings,
                     label_embeddings, label_graph, shipped_label_sets)
from .readers import CXRLT, ODIR5K, RSNAIHD
from .synthetic import SyntheticBenchmark, SyntheticComorbidity
from .transforms import ImagePipeline

__all__ = [
    "MultiLabelDataset", "MultiViewDataset", "collate", "ImagePipeline", "SyntheticBenchmark", "SyntheticComorbidity",
    "CSVImageDataset", "ChestMNIST", "NIHChestXray14", "CheXpert", "ODIR5K", "CXRLT", "RSNAIHD",
    "DATASETS", "build_dataset", "register_dataset", "read_image_file", "attach_cache", "ImageCache",
    "SPLITS", "IMAGENET_MEAN", "IMAGENET_STD",
    "label_graph", "LabelGraph", "graph_report", "GRAPH_METHODS", "DEFAULT_GRAPH", "cooccurrence_counts",
    "CooccurrenceCounts", "cooccurrence_probabilities",
    "label_embeddings", "hashed_embeddings", "shipped_label_sets", "EMBEDDING_DIM",
    "SYNTHETIC_CLASS_NAMES", "NIH_CLASS_NAMES", "ODIR_CLASS_NAMES", "RSNA_IHD_CLASS_NAMES",
    "CXR_LT_CLASS_NAMES", "CXR_LT_2023_CLASS_NAMES", "CHEXPERT_CLASS_NAMES", "LABEL_SETS",
]
