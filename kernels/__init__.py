"""Triton kernels, one module per op family, plus ``_launch`` (what every launcher shares). They
know tensors, not models, and import only torch and triton.

This directory sits beside ``csrc/`` and is installed as ``fact_fast.kernels`` (setup.py maps it;
from a source checkout ``fact_fast/__init__.py`` attaches it). Import the modules lazily (only
when a Triton backend runs): under ``TRITON_INTERPRET=1`` the variable must be set before the
first kernel module is imported.
"""
