"""ONNX and TorchScript exports of a trained checkpoint that run without fact_fast.

The exported model maps a batch of preprocessed images float32 ``[B, 3, S, S]`` (``images``;
any B, S fixed by the checkpoint) to the per-class scores float32 ``[B, C]`` in [0, 1]
(``scores``) -- the same numbers ``predict`` thresholds. The model is traced with the
``reference`` ops backend (plain PyTorch, no ``fact_fast::`` custom ops -- the graph is checked
for them) and frozen, which also folds what does not depend on the image (FACT's GCN anchors)
into constants. Training-only module state (e.g. the VQ dead-code window) is not exported.

The export is checked before it is kept: a batch of random images of the checkpoint's own
preprocessing (uint8 noise through its eval transform, a batch size different from the traced
one) is scored by the PyTorch model and by the exported one (onnxruntime for ONNX,
``torch.jit.load`` for TorchScript); the max abs difference must be within ``atol``.

ONNX needs the ``onnx`` and ``onnxruntime`` packages (``pip install onnx onnxruntime``).
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from fact_fast import ops
from fact_fast.data import ImagePipeline

from .checkpoints import load_trained_model
from .thresholds import available_thresholds

__all__ = ["export_model", "sample_batch", "ScoresOnly", "FORMATS", "ExportError"]

FORMATS = ("onnx", "torchscript")
CUSTOM_OP_PREFIX = "fact_fast::"
TRACE_BATCH, CHECK_BATCH = 2, 3


class ExportError(RuntimeError):
    """The export failed, needs a missing package, or does not match the PyTorch model."""


class ScoresOnly(torch.nn.Module):
    """``images [B, 3, S, S]`` -> ``scores [B, C]`` of a MultiLabelModel (drops logits/extras)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).scores


def _require(*packages: str) -> None:
    import importlib.util

    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ExportError(f"--format onnx needs the package(s) {missing}: pip install {' '.join(packages)}")


def sample_batch(pipeline, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` random uint8 images (noise at the model's resize side) through ``pipeline``'s eval
    transform -> float32 ``[n, 3, S, S]``."""
    rng = np.random.default_rng(seed)
    transform = pipeline.build(train=False)
    side = pipeline.resize_to
    shape = (side, side) if pipeline.channels == "gray" else (side, side, 3)
    return torch.stack([transform(rng.integers(0, 256, size=shape, dtype=np.uint8)) for _ in range(n)])


def _trace(model, example: torch.Tensor) -> torch.jit.ScriptModule:
    wrapped = ScoresOnly(model).eval()
    with ops.use_backend("reference"), torch.no_grad():
        traced = torch.jit.trace(wrapped, (example,), check_trace=False)
        frozen = torch.jit.freeze(traced)
    custom = sorted({n.kind() for n in frozen.inlined_graph.nodes() if n.kind().startswith(CUSTOM_OP_PREFIX)})
    if custom:
        raise ExportError(f"the traced graph still calls fact_fast's compiled ops {custom}; the reference "
                          f"backend should have replaced them")
    return frozen


def _onnx_export(frozen, example: torch.Tensor, path: str, opset: int) -> callable:
    _require("onnx", "onnxruntime")
    import onnx
    import onnxruntime as ort

    torch.onnx.export(frozen, (example,), path, dynamo=False, input_names=["images"], output_names=["scores"],
                      dynamic_axes={"images": {0: "batch"}, "scores": {0: "batch"}}, opset_version=opset)
    graph = onnx.load(path)
    onnx.checker.check_model(graph)
    domains = sorted({n.domain for n in graph.graph.node if n.domain not in ("", "ai.onnx")})
    if domains:
        raise ExportError(f"{path}: the ONNX graph uses custom operator domains {domains}")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda x: session.run(["scores"], {"images": x.numpy()})[0]


def _torchscript_export(frozen, path: str) -> callable:
    torch.jit.save(frozen, path)
    loaded = torch.jit.load(path, map_location="cpu")
    if CUSTOM_OP_PREFIX in str(loaded.inlined_graph):
        raise ExportError(f"{path}: the saved TorchScript graph calls {CUSTOM_OP_PREFIX} ops")

    def run(x):
        with torch.no_grad():
            return loaded(x).numpy()
    return run


def export_model(checkpoint: str, fmt: str, out: str, *, atol: float = 1e-4, opset: int = 17) -> dict:
    """Export ``checkpoint`` to ``out`` (``fmt`` in :data:`FORMATS`), check it against PyTorch,
    write the ``out + ".json"`` sidecar and return it (with ``max_abs_diff``)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    if fmt == "onnx":
        _require("onnx", "onnxruntime")
    model, ckpt = load_trained_model(checkpoint, "cpu")
    pipeline = ImagePipeline.from_dict(ckpt.preprocessing)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    example = sample_batch(pipeline, TRACE_BATCH, seed=1)
    frozen = _trace(model, example)
    run = _onnx_export(frozen, example, out, opset) if fmt == "onnx" else _torchscript_export(frozen, out)
    check = sample_batch(pipeline, CHECK_BATCH, seed=2)
    with ops.use_backend("reference"), torch.no_grad():
        expected = model(check).scores.float().numpy()
    got = np.asarray(run(check), dtype=np.float32)
    problem = None
    if got.shape != expected.shape:
        problem = f"returned shape {list(got.shape)}, expected {list(expected.shape)}"
    else:
        diff = float(np.abs(got - expected).max())
        if not diff <= atol:
            problem = f"differs from PyTorch by {diff:.3g} (> --atol {atol:g})"
    if problem:
        os.remove(out)  # never leave an export behind that failed its check
        raise ExportError(f"{out}: the exported model {problem}; removed")
    thresholds = {mode: t.tolist() for mode, t in available_thresholds(ckpt, len(ckpt.class_names)).items()}
    sidecar = {"format": fmt, "file": os.path.basename(out), "checkpoint": ckpt.path,
               "model": ckpt.model_spec.get("name"), "class_names": list(ckpt.class_names),
               "preprocessing": pipeline.to_dict(), "thresholds": thresholds,
               "decision": "positive when score > threshold",
               "input": {"name": "images", "shape": ["batch", 3, pipeline.image_size, pipeline.image_size],
                         "dtype": "float32"},
               "output": {"name": "scores", "shape": ["batch", len(ckpt.class_names)], "dtype": "float32"},
               "max_abs_diff": diff, "check_batch": CHECK_BATCH, "torch_version": torch.__version__}
    if fmt == "onnx":
        sidecar["opset"] = opset
    with open(out + ".json", "w") as fh:
        json.dump(sidecar, fh, indent=1)
    return sidecar
