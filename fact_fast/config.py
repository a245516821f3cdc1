"""Training configuration: one dataclass = every option of ``python -m fact_fast.train``.

Values are resolved as: dataclass defaults ← ``--config file.yaml|json`` ← command-line flags.
The argparse parser is generated from the dataclass fields (help text lives in field metadata),
so an option added here shows up in ``--help`` and in config files automatically.
"""
from __future__ import annotations

import argparse
import json
import os
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Sequence

__all__ = ["TrainConfig", "build_parser", "parse_config", "load_config_file", "model_overrides"]

BACKEND_CHOICES = ("auto", "reference", "cpu", "cuda", "triton")


def _opt(default, help: str, choices: Sequence | None = None, metavar: str | None = None, flag: str | None = None):
    md = {"help": help}
    if choices is not None:
        md["choices"] = tuple(choices)
    if metavar is not None:
        md["metavar"] = metavar
    if flag is not None:
        md["flag"] = flag
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=md)
    return field(default=default, metadata=md)


@dataclass
class TrainConfig:
    # -- data --------------------------------------------------------------------------------
    dataset: str = _opt("synthetic", "dataset name (fact_fast.data.DATASETS)")
    data_root: str | None = _opt(None, "dataset root directory (real datasets)", metavar="DIR")
    image_size: int = _opt(64, "input image side in pixels")
    dataset_kwargs: dict = _opt({}, "extra dataset keyword arguments, e.g. --dataset-kwargs num_samples=200 "
                                    "(repeatable KEY=VALUE; in a config file: a mapping)", metavar="KEY=VALUE")
    graph_threshold: float = _opt(0.4, "label-graph binarization threshold t on P(j|i) (ML-GCN)")
    label_embeddings: str | None = _opt(None, "path to a .npy [C, D] of label text embeddings "
                                              "(default: the shipped embeddings of the dataset)", metavar="NPY")
    # -- model -------------------------------------------------------------------------------
    model: str = _opt("fact_tiny", "named model configuration (fact_fast.models.list_models())")
    backbone: str | None = _opt(None, "override the timm backbone name")
    pretrained: bool = _opt(False, "load ImageNet weights for the backbone (must be available locally)")
    out_index: int | None = _opt(None, "override which backbone stage feeds the projection (-1: last)")
    dim: int | None = _opt(None, "override the width d")
    codebook_size: int | None = _opt(None, "override the codebook size K")
    gcn_hidden: int | None = _opt(None, "override the GCN hidden width")
    vq_restart_every: int | None = _opt(None, "override: re-seed dead codebook entries every N steps (0: off)")
    vq: bool = _opt(True, "use the atomic visual space (VQ); --no-vq ablates it (V = Z)")
    gcn: bool = _opt(True, "use the comorbidity GCN anchors; --no-gcn uses free learned anchors")
    membership: str = _opt("gaussian", "fuzzy membership kernel",
                           choices=("gaussian", "linear", "cosine", "laplacian", "polynomial"))
    loss: str = _opt("fuzzy", "objective: FACT fuzzy loss or the BCE ablation", choices=("fuzzy", "bce"))
    interface_bias: str | None = _opt(None, "semantic interface attention bias", choices=("zero", "neg_log_m"))
    alpha: float | None = _opt(None, "override α (weight of the set loss)")
    beta: float | None = _opt(None, "override β (encoder commitment weight)")
    gamma: float | None = _opt(None, "override γ (weight of the commitment loss)")
    logit_scale: float | None = _opt(None, "override λ (logit scale of the point loss)")
    threshold: float | None = _opt(None, "override δ (decision threshold on μ)")
    # -- optimisation --------------------------------------------------------------------------
    epochs: int = _opt(20, "number of training epochs")
    batch_size: int = _opt(64, "batch size per process")
    eval_batch_size: int | None = _opt(None, "evaluation batch size (default: 2 × batch size)")
    lr: float = _opt(2e-3, "peak learning rate (AdamW)")
    codebook_lr_scale: float = _opt(10.0, "learning-rate multiplier for the VQ codebook (it only learns through "
                                          "the commitment loss and must keep up with the encoder)")
    weight_decay: float = _opt(1e-4, "AdamW weight decay (not applied to biases, norms, codebook, τ)")
    warmup_epochs: float = _opt(1.0, "linear warm-up length in epochs, then cosine decay")
    min_lr_ratio: float = _opt(0.01, "final learning rate as a fraction of --lr")
    grad_clip: float | None = _opt(5.0, "clip the gradient norm to this value (none: off)")
    max_steps: int | None = _opt(None, "stop after this many optimizer steps in total (smoke tests; the LR schedule still spans --epochs)")
    amp: bool = _opt(False, "mixed precision: bf16 autocast (CUDA; on CPU also bf16, usually slower)")
    seed: int = _opt(0, "random seed (model init, data order, synthetic data)")
    # -- runtime -------------------------------------------------------------------------------
    device: str = _opt("auto", "device", choices=("auto", "cpu", "cuda"))
    backend: str = _opt("auto", "fact_fast.ops backend", choices=BACKEND_CHOICES)
    workers: int = _opt(0, "DataLoader worker processes")
    threads: int | None = _opt(None, "torch CPU threads (default: torch's choice)")
    out: str | None = _opt(None, "output directory (default: runs/<name or timestamp>)", metavar="DIR")
    name: str | None = _opt(None, "run name used for the default output directory")
    resume: str | None = _opt(None, "resume from a checkpoint PATH, or 'auto' (last.pt of --out, else the "
                                    "newest runs/*/last.pt)", metavar="PATH|auto")
    eval_test: bool = _opt(True, "evaluate the best checkpoint on the test split at the end")
    progress: bool = _opt(True, "tqdm progress bars (off automatically when stderr is not a TTY)")
    nvtx: bool = _opt(False, "NVTX ranges around each stage for Nsight (CUDA only)")
    compile: bool = _opt(False, "torch.compile the model")

    def to_dict(self) -> dict:
        return asdict(self)


def model_overrides(cfg: TrainConfig) -> dict:
    """FACTConfig overrides implied by a TrainConfig (None = keep the named model's value)."""
    out: dict[str, Any] = {"use_vq": cfg.vq, "use_gcn": cfg.gcn, "membership": cfg.membership,
                           "loss": cfg.loss, "pretrained": cfg.pretrained}
    for k in ("backbone", "out_index", "dim", "codebook_size", "gcn_hidden", "interface_bias", "alpha", "beta", "gamma", "vq_restart_every",
              "logit_scale", "threshold"):
        v = getattr(cfg, k)
        if v is not None:
            out[k] = v
    return out


# -- argparse from the dataclass ---------------------------------------------------------------
def _optional(tp) -> bool:
    return type(None) in typing.get_args(tp)


def _base_type(tp) -> type:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args:
        return args[0]
    return tp


def _parse_kv(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        import yaml

        val = yaml.safe_load(v)
    except Exception:
        val = v
    return k.strip(), val


def _positive_or_none(tp):
    def conv(text: str):
        if text.lower() in ("none", "null", "off"):
            return None
        return tp(text)
    conv.__name__ = tp.__name__
    return conv


def build_parser(prog: str = "python -m fact_fast.train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train FACT (Fuzzy Alignment with Comorbidity Topology). Options resolve as "
                    "defaults <- --config file <- command-line flags.")
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                   help="YAML or JSON file with option values (keys as below, '-' or '_')")
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        md = f.metadata
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        default = f.default if f.default is not MISSING else f.default_factory()
        kw: dict[str, Any] = {"dest": f.name, "help": md.get("help", ""), "default": argparse.SUPPRESS}
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
            kw["help"] += f" (default: {default})"
        elif tp is dict:
            kw.update(action="append", type=_parse_kv, metavar=md.get("metavar", "KEY=VALUE"))
        else:
            kw["type"] = _positive_or_none(tp) if _optional(hints[f.name]) else tp
            if "choices" in md:
                kw["choices"] = md["choices"]
            if "metavar" in md:
                kw["metavar"] = md["metavar"]
            kw["help"] += f" (default: {default})"
        p.add_argument(flag, **kw)
    return p


def load_config_file(path: str) -> dict:
    """Read a YAML/JSON config file into a dict of TrainConfig fields (validated)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, "r", encoding="utf-8") as fh:
        text = fh.read()
    if path.endswith(".json"):
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of option: value")
    return _validate_dict({k.replace("-", "_"): v for k, v in data.items()}, where=path)


def _validate_dict(d: dict, where: str) -> dict:
    names = {f.name: f for f in fields(TrainConfig)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}")
    hints = typing.get_type_hints(TrainConfig)
    for k, v in d.items():
        choices = names[k].metadata.get("choices")
        if choices is not None and v is not None and v not in choices:
            raise ValueError(f"{where}: {k} must be one of {list(choices)}, got {v!r}")
        tp = _base_type(hints[k])
        if v is None or tp is dict:
            continue
        if tp is float and isinstance(v, int) and not isinstance(v, bool):
            d[k] = float(v)
        elif tp in (int, float, str, bool) and not isinstance(v, tp):
            raise ValueError(f"{where}: {k} must be {tp.__name__}, got {v!r}")
    return d


def parse_config(argv: Sequence[str] | None = None) -> tuple[TrainConfig, set[str]]:
    """Parse argv into a TrainConfig. Returns ``(config, explicitly_set_field_names)``."""
    parser = build_parser()
    ns = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    if "config" in ns:
        try:
            values.update(load_config_file(ns.pop("config")))
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
    if "dataset_kwargs" in ns:
        base = dict(values.get("dataset_kwargs") or {})
        base.update(dict(ns.pop("dataset_kwargs")))
        values["dataset_kwargs"] = base
    values.update(ns)
    return TrainConfig(**values), set(values)
