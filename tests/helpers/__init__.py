"""Helpers shared by the tests: the repository root, op comparisons, small models and tasks, data
fixtures on disk, Triton compilation without a GPU."""
from pathlib import Path

REPO_ROOT = str(Path(__file__).resolve().parents[2])
