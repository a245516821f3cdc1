"""Labels: the built-in label sets (``sets``), their text embeddings (``embeddings``, read from
``shipped_embeddings/``) and the label co-occurrence graph of a run (``graph``).

``sets`` imports nothing, so scripts can load it by file path without importing torch.
"""
from .embeddings import EMBEDDING_DIM, hashed_embeddings, label_embeddings, shipped_label_sets
from .graph import (DEFAULT_GRAPH, GRAPH_METHODS, CooccurrenceCounts, LabelGraph, cooccurrence_counts,
                    cooccurrence_probabilities, graph_report, label_graph)
from .sets import (CHEXPERT_CLASS_NAMES, CXR_LT_2023_CLASS_NAMES, CXR_LT_CLASS_NAMES, DATASET_TO_LABEL_SET,
                   LABEL_SETS, NIH_CLASS_NAMES, ODIR_CLASS_NAMES, RSNA_IHD_CLASS_NAMES, SYNTHETIC_CLASS_NAMES)

__all__ = ["label_embeddings", "hashed_embeddings", "shipped_label_sets", "EMBEDDING_DIM",
           "label_graph", "LabelGraph", "graph_report", "GRAPH_METHODS", "DEFAULT_GRAPH", "cooccurrence_counts",
           "CooccurrenceCounts", "cooccurrence_probabilities",
           "LABEL_SETS", "DATASET_TO_LABEL_SET", "SYNTHETIC_CLASS_NAMES", "NIH_CLASS_NAMES", "ODIR_CLASS_NAMES",
           "RSNA_IHD_CLASS_NAMES", "CXR_LT_CLASS_NAMES", "CXR_LT_2023_CLASS_NAMES", "CHEXPERT_CLASS_NAMES"]
