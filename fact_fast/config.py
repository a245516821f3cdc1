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
from typing import Any
from collections.abc import Sequence

__all__ = ["TrainConfig", "build_parser", "parse_config", "load_config_file", "model_overrides", "config_from_dict",
           "TRUNK_FIELDS", "LEGACY_MODEL_FIELDS"]

BACKEND_CHOICES = ("auto", "reference", "cpu", "cuda", "triton")
LOGGER_CHOICES = ("none", "tensorboard", "wandb", "mlflow")


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
    resize: int | None = _opt(None, "eval: resize to this side, then centre-crop --image-size (default: no crop)")
    crop: str | None = _opt(None, "train-time crop (default: the dataset's)", choices=("none", "random_resized", "random"))
    hflip: float | None = _opt(None, "train-time horizontal-flip probability")
    rotate: float | None = _opt(None, "train-time random rotation, degrees")
    translate: float | None = _opt(None, "train-time random translation, fraction of the side")
    cache_dir: str | None = _opt(None, "on-disk cache of decoded, resized images (built once per split)", metavar="DIR")
    graph: str = _opt("topk", "label-graph construction from the train labels (docs/label_graph.md): top-k "
                              "partners by lift (default), ML-GCN's threshold or re-weighted graph, the top-k graph "
                              "with ML-GCN's re-weighting, or a lift threshold",
                      choices=("topk", "threshold", "reweighted", "topk_reweighted", "lift"))
    graph_kwargs: dict = _opt({}, "label-graph parameters, e.g. --graph-kwargs k=5 or threshold=0.3 "
                                  "(defaults in fact_fast.data.GRAPH_METHODS)", metavar="KEY=VALUE")
    label_embeddings: str | None = _opt(None, "path to a .npy [C, D] of label text embeddings "
                                              "(default: the shipped embeddings of the dataset)", metavar="NPY")
    groups: str | None = _opt(None, "JSON file mapping class name -> head/medium/tail (default: from train "
                                    "prevalence, head > 10 %%, tail < 1 %%)", metavar="JSON")
    # -- model -------------------------------------------------------------------------------
    model: str = _opt("fact_tiny", "registered model (python -m fact_fast.train --list-models)")
    model_kwargs: dict = _opt({}, "the model's options, any field of its configuration, e.g. --model-kwargs "
                                  "use_vq=false --model-kwargs dim=128 (repeatable KEY=VALUE; in a config file: "
                                  "a mapping); an unknown key is an error that lists the model's options "
                                  "(FACT's: FACTConfig in fact_fast/models/fact.py; the baselines': "
                                  "docs/baselines.md)",
                              metavar="KEY=VALUE")
    stage: str | None = _opt(None, "run only this training stage of a multi-stage model (default: all)")
    backbone: str | None = _opt(None, "override the backbone: a timm model name, or fact_fast's fact_resnet_tiny")
    pretrained: bool | None = _opt(None, "load ImageNet weights for the backbone from the local timm/HF cache "
                                         "or --pretrained-file (never downloaded by fact_fast)")
    pretrained_file: str | None = _opt(None, "backbone weights file (.safetensors/.pth) for --pretrained", metavar="FILE")
    out_index: int | None = _opt(None, "which backbone stage's feature map the head sees (-1: the last)")
    # -- optimisation --------------------------------------------------------------------------
    epochs: int = _opt(20, "number of training epochs (per stage, unless the stage sets its own)")
    batch_size: int = _opt(64, "batch size per process")
    eval_batch_size: int | None = _opt(None, "evaluation batch size (default: 2 × batch size)")
    optimizer: str = _opt("adamw", "optimizer", choices=("adamw", "adam", "sgd"))
    lr: float = _opt(2e-3, "peak learning rate of the head")
    adam_beta2: float = _opt(0.999, "β2 (second-moment decay) of adam / adamw")
    backbone_lr_scale: float = _opt(1.0, "learning-rate multiplier of the backbone (e.g. 0.1 when fine-tuning)")
    weight_decay: float = _opt(1e-4, "weight decay (not applied to biases, norms and model-specific parameters)")
    warmup_epochs: float = _opt(1.0, "linear warm-up length in epochs, then cosine decay")
    min_lr_ratio: float = _opt(0.01, "final learning rate as a fraction of --lr")
    grad_clip: float | None = _opt(5.0, "clip the gradient norm to this value (none: off)")
    max_steps: int | None = _opt(None, "stop after this many optimizer steps per stage (smoke tests; the LR schedule still spans --epochs)")
    sampler: str = _opt("random", "training sampler: random, class_aware (class drawn at random, then a positive "
                                  "image of it) or cycle (classes in turn)", choices=("random", "class_aware", "cycle"))
    sampler_no_finding: bool = _opt(True, "class_aware / cycle samplers: the images without a positive label form "
                                          "one more class, 'no finding', drawn like the others (off: they are never "
                                          "drawn)")
    ema_decay: float | None = _opt(None, "keep an EMA of the weights (timm ModelEmaV3) with this decay and "
                                         "validate/test it (e.g. 0.9998)")
    amp: bool = _opt(False, "mixed precision: bf16 autocast (CUDA; on CPU also bf16, usually slower)")
    channels_last: bool = _opt(False, "channels-last memory format for the backbone (faster convs on GPU)")
    freeze_bn: bool = _opt(False, "keep BatchNorm running statistics frozen while training (fine-tuning with "
                                  "small per-device batches; makes DDP equal to one process with the global batch)")
    select_metric: str = _opt("mAP", "validation metric that picks best.pt", choices=("mAP", "macro_auc", "paper_avg"))
    seed: int = _opt(0, "random seed (model init, data order, synthetic data)")
    seeds: str | None = _opt(None, "train once per seed, e.g. 0,1,2 (runs in OUT/seed<k>) and summarise mean ± std")
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
    logger: str = _opt("none", "live training curves beside metrics.jsonl: none, tensorboard (event files in "
                               "OUT/tensorboard), wandb (offline unless WANDB_MODE is set) or mlflow (file store "
                               "OUT/mlruns unless MLFLOW_TRACKING_URI is set); several comma-separated",
                       metavar="{" + ",".join(LOGGER_CHOICES) + "}")

    def __post_init__(self):
        def need(name, ok, what):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and ok(value)):
                raise ValueError(f"--{name.replace('_', '-')} must be {what}, got {value!r}")

        for name in ("epochs", "batch_size", "eval_batch_size", "max_steps", "threads"):
            need(name, lambda v: v >= 1, "at least 1")
        need("image_size", lambda v: v >= 8, "at least 8 pixels")
        need("lr", lambda v: v > 0, "positive")
        need("grad_clip", lambda v: v > 0, "positive (or none)")
        for name in ("backbone_lr_scale", "weight_decay", "warmup_epochs", "workers"):
            need(name, lambda v: v >= 0, "non-negative")
        need("min_lr_ratio", lambda v: 0 <= v <= 1, "in [0, 1]")
        need("adam_beta2", lambda v: 0 <= v < 1, "in [0, 1)")
        need("ema_decay", lambda v: 0 < v < 1, "in (0, 1)")
        if not isinstance(self.logger, str):
            raise TypeError(f"--logger must be a string such as 'tensorboard' or 'tensorboard,mlflow', "
                            f"got {type(self.logger).__name__}")
        unknown = [n for n in self.logger.split(",") if n.strip().lower() not in LOGGER_CHOICES]
        if unknown:
            raise ValueError(f"--logger: unknown logger(s) {unknown}; choose from {', '.join(LOGGER_CHOICES)} "
                             f"(several comma-separated)")

    def to_dict(self) -> dict:
        return asdict(self)


# The backbone options every registered model has (its trunk); they have their own flags. Only
# those set explicitly (flag or config file) are passed, so the model's defaults stand otherwise.
TRUNK_FIELDS = ("backbone", "pretrained", "pretrained_file", "out_index")

# Model options that older versions kept as TrainConfig fields (and flags): field -> model config
# field. A stored configuration (a checkpoint's, config.json) with them still loads: they become
# model_kwargs. On the command line and in config files they are errors naming the replacement.
LEGACY_MODEL_FIELDS = {"dim": "dim", "codebook_size": "codebook_size", "gcn_hidden": "gcn_hidden",
                       "vq_restart_every": "vq_restart_every", "vq": "use_vq", "gcn": "use_gcn",
                       "membership": "membership", "loss": "loss", "interface_bias": "interface_bias",
                       "alpha": "alpha", "beta": "beta", "gamma": "gamma", "logit_scale": "logit_scale",
                       "threshold": "threshold", "codebook_lr_scale": "codebook_lr_scale",
                       "tau_lr_scale": "tau_lr_scale"}


def model_overrides(cfg: TrainConfig) -> dict:
    """The model-configuration overrides of a run: the trunk flags that are set, then --model-kwargs."""
    out: dict[str, Any] = {name: getattr(cfg, name) for name in TRUNK_FIELDS if getattr(cfg, name) is not None}
    out.update(dict(cfg.model_kwargs or {}))
    return out


def _legacy_hint(name: str, value: Any) -> str:
    """The --model-kwargs spelling of a removed model flag."""
    shown = str(value).lower() if isinstance(value, bool) else value
    return f"--model-kwargs {LEGACY_MODEL_FIELDS[name]}={shown}"


def config_from_dict(d: dict) -> TrainConfig:
    """The TrainConfig stored as ``d`` (a checkpoint's ``config`` or a run's ``config.json``).
    Model options stored as fields by older versions (:data:`LEGACY_MODEL_FIELDS`) become
    ``model_kwargs`` (stored ``model_kwargs`` win, as they did then); other keys this version does
    not know (other versions', config.json's reports) are ignored."""
    known = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in d.items() if k in known}
    legacy = {LEGACY_MODEL_FIELDS[k]: v for k, v in d.items() if k in LEGACY_MODEL_FIELDS and v is not None}
    if legacy:
        values["model_kwargs"] = {**legacy, **dict(values.get("model_kwargs") or {})}
    return TrainConfig(**values)


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
                   help="YAML or JSON file with option values (keys as below, '-' or '_'), or the name of a "
                        "shipped dataset preset (configs/*.yaml: " + (", ".join(preset_names()) or "none") + ")")
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        md = f.metadata
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        default = f.default if f.default is not MISSING else f.default_factory()
        kw: dict[str, Any] = {"dest": f.name, "help": md.get("help", ""), "default": argparse.SUPPRESS}
        # the default is stated unless the help text already says what it means
        shown = "" if "(default" in kw["help"] else (" (default: the model's)" if default is None and
                                                     f.name in TRUNK_FIELDS else f" (default: {default})")
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
            kw["help"] += shown
        elif tp is dict:
            kw.update(action="append", type=_parse_kv, metavar=md.get("metavar", "KEY=VALUE"))
        else:
            kw["type"] = _positive_or_none(tp) if _optional(hints[f.name]) else tp
            if "choices" in md:
                kw["choices"] = md["choices"]
            if "metavar" in md:
                kw["metavar"] = md["metavar"]
            kw["help"] += shown
        p.add_argument(flag, **kw)
    return p


def _presets_dir() -> str:
    """Where the shipped presets are: ``fact_fast/configs`` in an installed wheel (setup.py maps the
    checkout's ``configs/`` there), else ``configs/`` beside the package in a source checkout."""
    package = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(package, "configs")
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(package), "configs")


PRESETS_DIR = _presets_dir()


def preset_names() -> list:
    """Names of the shipped per-dataset presets (``<PRESETS_DIR>/<name>.yaml``)."""
    if not os.path.isdir(PRESETS_DIR):
        return []
    return sorted(f[:-5] for f in os.listdir(PRESETS_DIR) if f.endswith(".yaml"))


def load_config_file(path: str) -> dict:
    """Read a YAML/JSON config file -- or a shipped preset by name, e.g. ``nih`` -- into a dict of
    TrainConfig fields (validated)."""
    if not os.path.isfile(path) and path in preset_names():
        path = os.path.join(PRESETS_DIR, f"{path}.yaml")
    if not os.path.isfile(path):
        hint = f" (shipped presets: {', '.join(preset_names())})" if preset_names() else ""
        raise FileNotFoundError(f"config file not found: {path}{hint}")
    with open(path, encoding="utf-8") as fh:
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
    moved = sorted(set(d) & set(LEGACY_MODEL_FIELDS))
    if moved:
        one = len(moved) == 1
        raise ValueError(f"{where}: {', '.join(moved)} {'is a model option' if one else 'are model options'}"
                         f"; give {'it' if one else 'them'} under model_kwargs: "
                         + "{" + ", ".join(f"{LEGACY_MODEL_FIELDS[k]}: {d[k]!r}" for k in moved) + "}")
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
    argv = list(argv) if argv is not None else None
    for arg in argv or ():
        flag = arg.split("=", 1)[0]
        name = flag[2:].replace("-", "_")
        negated = name.startswith("no_") and name[3:] in ("vq", "gcn")
        if flag.startswith("--") and (name in LEGACY_MODEL_FIELDS or negated):
            example = _legacy_hint(name[3:], False) if negated else _legacy_hint(name, "VALUE")
            parser.error(f"{flag} is a model option now: use {example}")
    ns = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    if "config" in ns:
        try:
            values.update(load_config_file(ns.pop("config")))
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
    for key in ("dataset_kwargs", "model_kwargs", "graph_kwargs"):
        if key in ns:
            base = dict(values.get(key) or {})
            base.update(dict(ns.pop(key)))
            values[key] = base
    values.update(ns)
    try:
        return TrainConfig(**values), set(values)
    except ValueError as exc:
        parser.error(str(exc))
