"""The synthetic datasets, generated in memory (no root): the default benchmark ``"synthetic"``
(:class:`SyntheticBenchmark`, in ``benchmark``) and the earlier motif set ``"synthetic_motifs"``
(:class:`SyntheticComorbidity`, in ``motifs``).
"""
from .benchmark import (FORMS, LABEL_TABLE, PRESENTATION_PROBS, PRESENTATIONS, PRIMITIVES, Form, SyntheticBenchmark,
                        label_vector_table)
from .motifs import SyntheticComorbidity

__all__ = ["SyntheticBenchmark", "SyntheticComorbidity", "Form", "FORMS", "PRIMITIVES", "PRESENTATIONS",
           "PRESENTATION_PROBS", "LABEL_TABLE", "label_vector_table"]
