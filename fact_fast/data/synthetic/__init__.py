"""The synthetic datasets, generated in memory (no root): the default benchmark ``"synthetic"``
(:class:`SyntheticBenchmark`) and the earlier motif set ``"synthetic_motifs"``
(:class:`SyntheticComorbidity`, in ``motifs``).

The benchmark's generator, bottom up: ``primitives`` (canvas and shapes), ``anatomy`` (the chest
and the clutter every image shows), ``forms`` (two looks per finding), ``render`` (one image from
those), ``label_model`` (which findings a sample has, their forms and presentations, missed
training labels), ``views`` (which view of a study shows each finding) and ``benchmark`` (the
dataset, seeding every part per sample).
"""
from .benchmark import SyntheticBenchmark
from .forms import FORMS, Form
from .label_model import LABEL_TABLE, PRESENTATION_PROBS, PRESENTATIONS, label_vector_table
from .motifs import SyntheticComorbidity
from .primitives import PRIMITIVES

__all__ = ["SyntheticBenchmark", "SyntheticComorbidity", "Form", "FORMS", "PRIMITIVES", "PRESENTATIONS",
           "PRESENTATION_PROBS", "LABEL_TABLE", "label_vector_table"]
