"""Live training curves beside ``metrics.jsonl``: TensorBoard, Weights & Biases, MLflow (``--logger``).

Each logger receives exactly the per-epoch row the trainer appends to ``metrics.jsonl`` and logs
every numeric value in it, so whatever a model adds to its ``epoch_stats`` (FACT: τ, codebook
perplexity and usage, and any further diagnostics) appears without a change here. Keys are
grouped by prefix: ``train_<loss>`` → ``train/<loss>``, ``val_<metric>`` → ``val/<metric>``, the
loop's bookkeeping (``lr``, ``epoch``, ``step``, ``stage_index``, ``seconds``) → ``progress/…``,
everything else (the model's statistics) → ``model/…``; nested dicts are flattened with ``/``;
strings, lists and None are left out. The x axis is the row's position in ``metrics.jsonl``
(1, 2, …): the epoch for single-stage models, counting on across the stages of two-stage ones.
At the start each logger records the run's ``config.json`` as text, and after the final
evaluation the summary test metrics as ``test/…``.

* ``tensorboard``: event files in ``<out>/tensorboard`` (``tensorboard --logdir <out>``). A
  resumed run purges the events the interrupted process wrote after its last checkpoint.
* ``wandb``: ``wandb.init(dir=<out>)`` in offline mode unless ``WANDB_MODE`` says otherwise
  (``wandb sync <out>/wandb/offline-run-*`` uploads it later); project ``WANDB_PROJECT`` or
  ``fact_fast``.
* ``mlflow``: a run in the experiment ``MLFLOW_EXPERIMENT_NAME`` (default ``fact_fast``) at
  ``MLFLOW_TRACKING_URI``, by default the file store ``<out>/mlruns`` (which MLflow 3 keeps only in
  maintenance mode: ``MLFLOW_ALLOW_FILE_STORE=true`` is set for it;
  ``mlflow ui --backend-store-uri <out>/mlruns``).

wandb and mlflow are optional and imported only when asked for; a missing package is an
ImportError naming the ``--logger`` value and the pip command. Only the main process (rank 0)
logs.
"""
from __future__ import annotations

import importlib.util
import json
import math
import numbers
import os
from collections.abc import Iterable

from fact_fast.config import LOGGER_CHOICES

__all__ = ["LOGGER_CHOICES", "parse_logger_names", "require_logger_packages", "flatten_scalars", "open_loggers",
           "Loggers", "TensorBoardLogger", "WandbLogger", "MLflowLogger"]

# --logger value -> (the module it imports, what to pip install)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow-skinny (or mlflow)")}
PROGRESS_KEYS = ("lr", "epoch", "step", "stage_index", "seconds")


def parse_logger_names(value: str | Iterable[str] | None) -> list:
    """``"none"`` / None → []; ``"tensorboard,mlflow"`` (or a list) → ``["tensorboard", "mlflow"]``.
    Raises ValueError naming ``--logger`` for an unknown name."""
    if value is None:
        return []
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise TypeError(f"--logger must be a string such as 'tensorboard' or 'tensorboard,mlflow', got "
                        f"{type(value).__name__}")
    names = []
    for item in items:
        name = str(item).strip().lower()
        if name not in LOGGER_CHOICES:
            raise ValueError(f"--logger: unknown logger {item!r}; choose from {', '.join(LOGGER_CHOICES)} "
                             f"(several comma-separated)")
        if name != "none" and name not in names:
            names.append(name)
    return names


def require_logger_packages(names: str | Iterable[str] | None) -> None:
    """Raise ImportError naming ``--logger`` and the pip command when a chosen logger's package is
    not installed (checked before training starts, without importing it)."""
    for name in parse_logger_names(names):
        module, pip = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"--logger {name} needs the {module} package, which is not installed: pip install {pip}")


def _tag(key: str) -> str:
    for prefix in ("train", "val", "test"):
        if key.startswith(prefix + "_"):
            return f"{prefix}/{key[len(prefix) + 1:]}"
    return f"progress/{key}" if key in PROGRESS_KEYS else f"model/{key}"


def flatten_scalars(row: dict, prefix: str | None = None) -> dict:
    """Every numeric value of ``row`` (bools as 0/1, numpy and 0-d tensor scalars included) as
    ``{tag: float}``: tags from :func:`_tag` (or ``prefix/key`` when ``prefix`` is given), nested
    dicts flattened with ``/``; strings, lists, None and other values are left out."""
    out: dict = {}
    for key, value in row.items():
        tag = f"{prefix}/{key}" if prefix else _tag(str(key))
        if isinstance(value, dict):
            out.update(flatten_scalars(value, tag))
            continue
        if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
            value = value.item()
        if isinstance(value, numbers.Real):
            out[tag] = float(value)
    return out


class TensorBoardLogger:
    """Scalars and the config text as TensorBoard event files in ``<out>/tensorboard``."""

    def __init__(self, out: str, config_text: str, first_step: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("--logger tensorboard needs the tensorboard package, which is not installed: "
                              "pip install tensorboard") from None
        # purge_step: events at or after it left by an interrupted process are dropped on reading
        self.writer = SummaryWriter(log_dir=os.path.join(out, "tensorboard"), purge_step=first_step)
        self.writer.add_text("config", "```json\n" + config_text + "\n```", global_step=first_step - 1)
        self.writer.flush()

    def log(self, scalars: dict, step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()  # so that a live `tensorboard --logdir` shows each epoch as it ends

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A Weights & Biases run under ``<out>/wandb``, offline unless ``WANDB_MODE`` is set."""

    def __init__(self, out: str, config_text: str, first_step: int):
        try:
            import wandb
        except ImportError:
            raise ImportError("--logger wandb needs the wandb package, which is not installed: pip install wandb") \
                from None
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "fact_fast"), dir=out,
                              mode=os.environ.get("WANDB_MODE", "offline"), name=os.path.basename(os.path.abspath(out)),
                              config=json.loads(config_text))

    def log(self, scalars: dict, step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class MLflowLogger:
    """An MLflow run, by default in the file store ``<out>/mlruns``."""

    def __init__(self, out: str, config_text: str, first_step: int):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ImportError("--logger mlflow needs the mlflow package, which is not installed: pip install "
                              "mlflow-skinny (or mlflow)") from None
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = "file:" + os.path.join(os.path.abspath(out), "mlruns")
            # MLflow >= 3.x refuses its file store unless asked for it: it is in maintenance mode, but
            # it is the backend that needs no database package and no server beside the run
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "fact_fast")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment is not None else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=os.path.basename(os.path.abspath(out))).info.run_id
        self.client.log_text(self.run_id, config_text, "config.json")

    def log(self, scalars: dict, step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # MLflow's stores reject NaN and infinities in some versions; the row keeps them in metrics.jsonl
        metrics = [Metric(tag, value, now, step) for tag, value in scalars.items() if math.isfinite(value)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


LOGGER_CLASSES = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger, "mlflow": MLflowLogger}


class Loggers:
    """The chosen loggers behind one interface; empty (every call a no-op) with ``--logger none``
    and on every process but rank 0."""

    def __init__(self, loggers: list, first_step: int = 1):
        self.loggers = loggers
        self.step = first_step - 1

    def log_row(self, row: dict) -> None:
        """Log one ``metrics.jsonl`` row at the next step."""
        self.step += 1
        scalars = flatten_scalars(row)
        for logger in self.loggers:
            logger.log(scalars, self.step)

    def log_test(self, metrics: dict | None) -> None:
        """The final test metrics (``metrics_test.json``) as ``test/…`` at the last step: the
        summary numbers and the per-group ones; the per-class tables stay in the JSON file, where
        they do not bury the curves under 4 × C single-point charts."""
        if metrics:
            scalars = flatten_scalars({k: v for k, v in metrics.items()
                                       if k != "train_prevalence" and not k.startswith("per_class_")}, "test")
            for logger in self.loggers:
                logger.log(scalars, max(self.step, 1))

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
        self.loggers = []


def _rows_in(path: str) -> int:
    if not os.path.isfile(path):
        return 0
    with open(path) as fh:
        return sum(1 for line in fh if line.strip())


def open_loggers(names: str | Iterable[str] | None, out: str, is_main: bool = True) -> Loggers:
    """The loggers ``names`` asks for (``--logger``), writing under the run directory ``out``
    (which holds this run's ``config.json`` and ``metrics.jsonl``, truncated to the checkpoint
    being resumed). Steps continue after the rows ``metrics.jsonl`` already holds."""
    chosen = parse_logger_names(names)
    if not chosen or not is_main:
        return Loggers([])
    first_step = _rows_in(os.path.join(out, "metrics.jsonl")) + 1
    config_path = os.path.join(out, "config.json")
    config_text = open(config_path).read() if os.path.isfile(config_path) else "{}"
    opened = []
    try:
        for name in chosen:
            opened.append(LOGGER_CLASSES[name](out, config_text, first_step))
    except BaseException:
        for logger in opened:
            logger.close()
        raise
    return Loggers(opened, first_step)
