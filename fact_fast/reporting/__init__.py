"""Reporting on trained runs (``fact_fast.reporting``), above :mod:`fact_fast.inference`.

==============  =====================================================================================
``statistics``  the numbers: training log, co-occurrence, calibration bins, codebook use, thresholds
``figures``     one matplotlib figure per view of a run
``sections``    the run report's figures in page order, with their captions
``page``        the self-contained HTML page
``run_report``  ``build_report``: a run's report written to disk
``comparison``  runs side by side: the table and plots of ``python -m fact_fast.compare``
==============  =====================================================================================
"""
from .run_report import build_report

__all__ = ["build_report"]
