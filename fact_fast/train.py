"""Train a model: ``python -m fact_fast.train [options]`` (``--help`` lists every option).

With no arguments it trains the CPU-friendly ``fact_tiny`` FACT model on the bundled synthetic
dataset, validates every epoch, keeps ``last.pt`` / ``best.pt`` in the output directory, and
evaluates ``best.pt`` on the test split. ``--model NAME`` trains any registered model (FACT
variants and the baselines; ``--list-models``), ``--seeds 0,1,2`` repeats the run per seed and
summarises mean ± std, ``--resume auto`` continues an interrupted run bit-exactly.
Multi-GPU/multi-node: launch with ``torchrun``. The engine is :mod:`fact_fast.engine`.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from fact_fast import ops
from fact_fast.config import model_overrides, parse_config
from fact_fast.engine import fit, fit_seeds
from fact_fast.engine.loggers import require_logger_packages
from fact_fast.models import describe_models, get_model_config
from fact_fast.utils import distributed as du
from fact_fast.utils.checkpoint import CheckpointError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list-models" in argv:
        for name, text in describe_models().items():
            print(f"{name:24s} {text}")
        return 0
    cfg, explicit = parse_config(argv)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    if not cfg.resume:
        # the model's options are checked before any data is read (a resumed run uses the stored ones)
        try:
            get_model_config(cfg.model, **model_overrides(cfg))
        except (ValueError, TypeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        require_logger_packages(cfg.logger)
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = du.init_distributed(cfg.device)
    try:
        with ops.use_backend(cfg.backend):
            if cfg.seeds:
                fit_seeds(cfg, explicit, info)
            else:
                fit(cfg, explicit, info)
    except (CheckpointError, FloatingPointError, FileNotFoundError, ValueError, ops.BackendUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        du.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
