"""Export a trained checkpoint: ``python -m fact_fast.export CHECKPOINT --format onnx|torchscript --out FILE``.

The exported model maps preprocessed images float32 ``[B, 3, S, S]`` (``images``) to the
per-class scores float32 ``[B, C]`` (``scores``), runs without fact_fast, and is checked against
the PyTorch model before it is kept: the max abs difference on a batch of random images is
printed and must be within ``--atol`` (how: :mod:`fact_fast.inference.export`).

Beside ``FILE`` a sidecar ``FILE.json`` holds what a user of the exported model needs: the class
names, the preprocessing (image size, channels, mean, std, resize), the thresholds (``fixed``
and, when stored, ``val-f1`` / ``val-youden``; positive means ``score > threshold``), the
input/output names and the check's max abs difference.

ONNX needs the ``onnx`` and ``onnxruntime`` packages (``pip install onnx onnxruntime``).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

import torch

from fact_fast.inference.export import FORMATS, ExportError, export_model
from fact_fast.utils.checkpoint import CheckpointError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fact_fast.export",
                                description="Export a trained checkpoint to ONNX or TorchScript (runs without "
                                            "fact_fast's compiled ops), checked against PyTorch.")
    p.add_argument("checkpoint", help="checkpoint file (best.pt) or a run directory")
    p.add_argument("--format", required=True, choices=FORMATS, help="export format")
    p.add_argument("--out", required=True, metavar="FILE", help="output file (.onnx / .pt); FILE.json is the sidecar")
    p.add_argument("--atol", type=float, default=1e-4, help="max abs score difference accepted (default: 1e-4)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            # tracing warns about Python-side shape checks it bakes in; the check below verifies
            # the export on another batch size instead
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # torch >= 2.9 marks torch.jit and the TorchScript-based ONNX exporter deprecated; both
            # still work and are what the formats asked for need
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message="no signature found")
            info = export_model(args.checkpoint, args.format, args.out, atol=args.atol, opset=args.opset)
    except (CheckpointError, ExportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.format}) and {args.out}.json; max abs difference to PyTorch on a batch of "
          f"{info['check_batch']}: {info['max_abs_diff']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
