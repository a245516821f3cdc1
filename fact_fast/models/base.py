"""The protocol every model implements (FACT and each baseline), and the registry.

The training engine only talks to :class:`MultiLabelModel`: ``forward`` gives a
:class:`ModelOutput`, ``loss`` gives a dict of scalar losses, ``stages`` says how many training
stages the method has, ``param_groups`` gives the optimiser groups. Nothing in the engine knows
which model it runs.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, NamedTuple
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["TaskInfo", "ModelOutput", "Stage", "StageContext", "MultiLabelModel", "register_model",
           "create_model", "list_models", "describe_models", "get_model_config", "model_spec", "model_from_spec"]


@dataclass
class TaskInfo:
    """What a model may know about its task; every field comes from the TRAIN split.

    * ``class_names``: C names.
    * ``label_embeddings``: float32 ``[C, E]`` text embeddings of the class names, or None.
    * ``graph``: the label co-occurrence graph as CSR, ``{"rowptr": int64 [C+1], "col": int64
      [nnz], "value": float32 [nnz] or None, "add_self_loops": bool}``, or None.
    * ``prevalence``: float64 ``[C]`` fraction of positives among the known train labels.
    * ``num_train``: number of training samples.
    """

    class_names: list
    label_embeddings: torch.Tensor | None = None
    graph: dict | None = None
    prevalence: torch.Tensor | None = None
    num_train: int = 0

    def __post_init__(self):
        self.class_names = [str(c) for c in self.class_names]
        if not self.class_names:
            raise ValueError("class_names must not be empty")
        C = len(self.class_names)
        if self.label_embeddings is not None:
            self.label_embeddings = torch.as_tensor(self.label_embeddings, dtype=torch.float32)
            if self.label_embeddings.dim() != 2 or self.label_embeddings.shape[0] != C:
                raise ValueError(f"label_embeddings must be [{C}, E], got {list(self.label_embeddings.shape)}")
        if self.prevalence is None:
            self.prevalence = torch.full((C,), float("nan"), dtype=torch.float64)
        self.prevalence = torch.as_tensor(self.prevalence, dtype=torch.float64)
        if self.prevalence.shape != (C,):
            raise ValueError(f"prevalence must be [{C}], got {list(self.prevalence.shape)}")
        if self.graph is not None:
            g = dict(self.graph)
            for key in ("rowptr", "col"):
                if key not in g:
                    raise ValueError(f"graph needs {key!r}")
                g[key] = torch.as_tensor(g[key], dtype=torch.int64)
            if g.get("value") is not None:
                g["value"] = torch.as_tensor(g["value"], dtype=torch.float32)
            g.setdefault("value", None)
            g["add_self_loops"] = bool(g.get("add_self_loops", True))
            if g["rowptr"].numel() != C + 1:
                raise ValueError(f"graph rowptr must have C + 1 = {C + 1} entries, got {g['rowptr'].numel()}")
            self.graph = g

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        return {"class_names": list(self.class_names), "label_embeddings": self.label_embeddings,
                "graph": self.graph, "prevalence": self.prevalence, "num_train": self.num_train}

    @classmethod
    def from_dict(cls, d: dict) -> TaskInfo:
        return cls(**{k: d[k] for k in ("class_names", "label_embeddings", "graph", "prevalence", "num_train")
                      if k in d})


class ModelOutput(NamedTuple):
    """``scores`` float ``[B, C]`` in [0, 1] (what metrics, thresholds and ``predict`` use);
    ``logits`` ``[B, C]`` or None; ``extras``: model-specific tensors (documented per model)."""

    scores: torch.Tensor
    logits: torch.Tensor | None = None
    extras: dict = {}


@dataclass
class Stage:
    """One training stage of a method.

    * ``epochs``: None = the run's ``--epochs``; otherwise the stage's own length.
    * ``lr_scale``: multiplies the run's ``--lr`` for this stage (on top of the per-module
      scales of :meth:`MultiLabelModel.lr_scales`).
    * ``views``: the stage consumes multi-view batches ``(images [B, V, 3, H, W], view_mask)``
      (study-level fusion); other stages see single images.
    * ``max_views``: views per item when ``views`` (extra views are dropped).
    * ``init_from_previous``: start from the previous stage's best weights.
    """

    name: str = "main"
    epochs: int | None = None
    lr_scale: float = 1.0
    views: bool = False
    max_views: int = 4
    init_from_previous: bool = True
    description: str = ""


@dataclass
class StageContext:
    """What :meth:`MultiLabelModel.begin_stage` may use: ``train_loader`` (the training set through
    the eval transform, in a fixed order, built on first use), the device, an autocast context
    factory, and a logger."""

    make_train_loader: Callable[[], Any]
    device: torch.device
    autocast: Callable
    log: Callable[[str], None] = print
    distributed: bool = False

    @property
    def train_loader(self):
        if "_loader" not in self.__dict__:
            self.__dict__["_loader"] = self.make_train_loader()
        return self.__dict__["_loader"]


class MultiLabelModel(nn.Module):
    """Base class of every model (see ``docs/architecture.md``).

    Subclasses set ``config_class`` (a dataclass of hyper-parameters) and implement
    :meth:`forward` and :meth:`loss`; the rest has working defaults.
    """

    config_class: type = None
    #: parameter-name prefixes that belong to the pretrained trunk (the backbone/head LR split)
    backbone_prefixes: tuple = ("backbone.",)

    def __init__(self, config, task: TaskInfo):
        super().__init__()
        self.config = copy.deepcopy(config)
        self.task = task
        self.registry_name: str | None = None

    @property
    def num_classes(self) -> int:
        return self.task.num_classes

    @property
    def default_threshold(self) -> float:
        """Decision threshold on ``scores`` (0.5 for sigmoid models)."""
        return 0.5

    # -- the protocol --------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, view_mask: torch.Tensor | None = None) -> ModelOutput:
        raise NotImplementedError

    def loss(self, output: ModelOutput, targets: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        """Scalar losses; ``"total"`` is optimised. ``targets`` float ``[B, C]`` 0/1 (unknown
        entries already 0), ``mask`` bool ``[B, C]`` True where the label is known (None = all)."""
        raise NotImplementedError

    def stages(self) -> list:
        return [Stage("main")]

    def begin_stage(self, stage: Stage, ctx: StageContext | None, resumed: bool = False) -> None:
        """Prepare ``stage`` (freeze parameters, estimate statistics). With ``resumed`` the state
        computed at the stage's start is already in the loaded weights: only re-apply what is
        not part of the state dict (e.g. ``requires_grad`` flags)."""

    @torch.no_grad()
    def initialize(self, images: torch.Tensor) -> None:
        """Data-dependent initialisation from the first training batch (default: none)."""

    def no_weight_decay(self) -> set:
        """Names of parameters excluded from weight decay besides biases and norm weights."""
        return set()

    def lr_scales(self) -> dict:
        """Learning-rate multipliers of parts of the model, ``{parameter-name prefix: scale}``
        (e.g. ``{"encoder.": 0.1}`` for a Transformer block that diverges at a CNN's learning
        rate); the longest matching prefix wins, other parameters get 1. Default: none."""
        return {}

    def lr_scale_of(self, name: str) -> float:
        """The :meth:`lr_scales` multiplier of parameter ``name`` (1 when no prefix matches)."""
        scale, best = 1.0, -1
        for prefix, value in self.lr_scales().items():
            if name.startswith(prefix) and len(prefix) > best:
                scale, best = float(value), len(prefix)
        return scale

    def param_groups(self, lr: float, weight_decay: float, backbone_lr_scale: float = 1.0) -> list:
        """Optimiser groups: parameter ``n`` gets ``lr * lr_scale_of(n)``, times
        ``backbone_lr_scale`` for the trunk (:attr:`backbone_prefixes`); biases, norm weights and
        :meth:`no_weight_decay` get no weight decay. Frozen parameters are left out. Each group's
        ``name`` says which it is: ``backbone`` or ``head``, ``_no_decay``, and ``_x<scale>``
        when a module scale applies (e.g. ``head_x0.1``)."""
        scales = self.lr_scales()
        for prefix, value in scales.items():
            if not isinstance(prefix, str) or isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not value > 0:
                raise ValueError(f"{type(self).__name__}.lr_scales: expected {{name prefix: positive number}}, "
                                 f"got {prefix!r}: {value!r}")
        skip = self.no_weight_decay()
        groups: dict = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            trunk = name.startswith(self.backbone_prefixes)
            decay = p.ndim >= 2 and name not in skip
            scale = self.lr_scale_of(name)
            key = (trunk, decay, scale)
            if key not in groups:
                groups[key] = {"params": [], "lr": lr * scale * (backbone_lr_scale if trunk else 1.0),
                               "weight_decay": weight_decay if decay else 0.0,
                               "name": ("backbone" if trunk else "head") + ("" if decay else "_no_decay")
                               + ("" if scale == 1.0 else f"_x{scale:g}")}
            groups[key]["params"].append(p)
        return list(groups.values())

    def epoch_stats(self, reset: bool = True) -> dict:
        """Scalars logged once per epoch (e.g. τ, codebook perplexity); default none."""
        return {}

    @torch.no_grad()
    def diagnostics(self, images: torch.Tensor, scores: torch.Tensor, targets: torch.Tensor) -> dict:
        """Scalars that show how the head is doing, logged once per epoch (default none).

        ``images`` float ``[n, 3, H, W]``: a fixed batch of validation images; ``scores`` and
        ``targets`` float ``[N, C]``: the whole validation split (targets 0/1, NaN where unknown).
        Called in eval mode."""
        return {}

    def training_state(self) -> dict:
        """Training-progress state that is not in the state dict but must survive a resume
        exactly (checkpointed beside the optimizer state); default none."""
        return {}

    def load_training_state(self, state: dict) -> None:
        """Restore :meth:`training_state`."""

    # -- explanations --------------------------------------------------------------------------
    def evidence_maps(self, images: torch.Tensor) -> dict | None:
        """The model's own spatial evidence per class, or None (then ``predict --explain`` uses
        Grad-CAM on :meth:`cam_layer`). When given: ``{"maps": float [B, C, h, w] in [0, 1]}``
        plus optional model-specific entries."""
        return None

    def cam_layer(self) -> nn.Module:
        """The module whose output feature map Grad-CAM explains (default: the backbone)."""
        return self.backbone


# -- registry --------------------------------------------------------------------------------------
_REGISTRY: dict[str, tuple[type, Any, str]] = {}


def register_model(name: str, cls: type, config=None, description: str = "", **fields_) -> Any:
    """Register ``cls`` under ``name`` with a configuration (``fields_`` override ``config`` or the
    config class defaults). Returns the registered configuration."""
    if not (isinstance(cls, type) and issubclass(cls, MultiLabelModel)):
        raise TypeError(f"cls must be a MultiLabelModel subclass, got {cls!r}")
    base = config if config is not None else cls.config_class()
    cfg = replace(base, **fields_)
    _REGISTRY[name] = (cls, cfg, description)
    return cfg


def list_models() -> list:
    return sorted(_REGISTRY)


def describe_models() -> dict:
    """name -> one-line description."""
    return {k: _REGISTRY[k][2] for k in list_models()}


def get_model_config(name: str, **overrides: Any):
    """The registered configuration of model ``name`` with ``overrides`` (``--model-kwargs``)
    applied; the config class's ``__post_init__`` validates the values. Raises ValueError naming an
    unknown option and listing the model's options. An int given for a float option (``alpha=1``
    from the command line) becomes a float."""
    if name not in _REGISTRY:
        raise ValueError(f"model: unknown model {name!r}; available: {list_models()}")
    cls, cfg, _ = _REGISTRY[name]
    known = {f.name for f in fields(cfg)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"model {name!r} ({cls.__name__}) has no option(s) {unknown}; its options: {sorted(known)}")
    overrides = {k: float(v) if isinstance(getattr(cfg, k), float) and type(v) is int else v
                 for k, v in overrides.items()}
    return replace(cfg, **overrides)


def create_model(name: str, task: TaskInfo, **overrides: Any) -> MultiLabelModel:
    """timm-style factory: ``create_model("fact_resnet50", task, use_vq=False)``."""
    cfg = get_model_config(name, **overrides)
    model = _REGISTRY[name][0](cfg, task)
    model.registry_name = name
    return model


def model_spec(model: MultiLabelModel) -> dict:
    """What a checkpoint stores to rebuild ``model`` (without its weights)."""
    return {"name": model.registry_name, "class": type(model).__name__, "config": asdict(model.config),
            "task": model.task.to_dict()}


def model_from_spec(spec: dict, state_dict: dict | None = None, strict: bool = True) -> MultiLabelModel:
    """Rebuild a model from :func:`model_spec` (and load ``state_dict`` when given)."""
    name = spec.get("name")
    if name not in _REGISTRY:
        raise ValueError(f"model: checkpoint model {name!r} is not registered; available: {list_models()}")
    cls, base, _ = _REGISTRY[name]
    known = {f.name for f in fields(base)}
    stored = {k: v for k, v in spec.get("config", {}).items() if k in known}
    cfg = replace(base, **stored)
    # the weights come from the checkpoint, not from ImageNet files that may be absent here
    cfg = replace(cfg, **{k: v for k, v in (("pretrained", False), ("pretrained_file", None)) if hasattr(cfg, k)})
    model = cls(cfg, TaskInfo.from_dict(spec["task"]))
    model.registry_name = name
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=strict)
    return model
