"""Runs side by side: their test metrics (mean ± std over seeds), model size and cost, training
time, as a table (Markdown, CSV) and plots.

A run directory is a training output directory (``metrics_test.json`` + ``best.pt``) or a
``--seeds`` directory (``summary.json`` over ``seed<k>/`` runs).
"""
from __future__ import annotations

import csv
import glob
import json
import os
import re

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from fact_fast import ops
from fact_fast.inference import load_trained_model
from fact_fast.metrics import mean_std

from .figures import pyplot

__all__ = ["collect_run", "comparison_table", "to_markdown", "write_csv", "plot_per_class_ap", "plot_summary_bars",
           "METRICS"]

# column name -> how to read it from a test-metrics dict
METRICS = {
    "mAP": lambda m: m.get("mAP"),
    "AUC": lambda m: m.get("macro_auc"),
    "F1 (paper)": lambda m: m.get("accuracy"),
    "Avg. (paper)": lambda m: m.get("paper_avg"),
    # at the model's own decision threshold (FACT: μ > δ; the others: σ > 0.5)
    "F1 micro": lambda m: m.get("f1_micro"),
    "F1 macro": lambda m: m.get("f1_macro"),
    "AP head": lambda m: (m.get("group_ap") or {}).get("head"),
    "AP medium": lambda m: (m.get("group_ap") or {}).get("medium"),
    "AP tail": lambda m: (m.get("group_ap") or {}).get("tail"),
    "AUC head": lambda m: (m.get("group_auc") or {}).get("head"),
    "AUC medium": lambda m: (m.get("group_auc") or {}).get("medium"),
    "AUC tail": lambda m: (m.get("group_auc") or {}).get("tail"),
}


def _read_json(path: str) -> dict:
    with open(path) as fh:
        return json.load(fh)


def _seed_dirs(run_dir: str) -> list:
    """The runs of ``run_dir``: its ``seed<k>`` subdirectories for a ``--seeds`` run, else itself."""
    if os.path.isfile(os.path.join(run_dir, "summary.json")):
        dirs = sorted(d for d in glob.glob(os.path.join(run_dir, "seed*")) if os.path.isdir(d))
    else:
        dirs = [run_dir]
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir}: not a directory")
    missing = [d for d in dirs if not os.path.isfile(os.path.join(d, "metrics_test.json"))]
    if missing or not dirs:
        raise FileNotFoundError(f"{(missing or [run_dir])[0]}: no metrics_test.json (was the run finished with "
                                f"--eval-test?)")
    return dirs


def _model_cost(run_dir: str) -> tuple[int | None, float | None]:
    """(parameters, multiply-accumulates per image at the run's resolution) of ``best.pt``."""
    path = os.path.join(run_dir, "best.pt")
    if not os.path.isfile(path):
        return None, None
    model, ckpt = load_trained_model(path, "cpu")
    params = sum(p.numel() for p in model.parameters())
    size = int(ckpt.preprocessing["image_size"])
    with ops.use_backend("reference"), FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return params, fc.get_total_flops() / 2


def _run_name(run_dir: str) -> str:
    """The folder's name; ``<parent>/seed<k>`` for one seed of a ``--seeds`` run."""
    path = os.path.normpath(run_dir)
    name = os.path.basename(path)
    if re.fullmatch(r"seed\d+", name):
        name = f"{os.path.basename(os.path.dirname(os.path.abspath(path)))}/{name}"
    return name


def _stage_tests(dirs: list) -> dict:
    """``{stage: [test metrics per seed]}`` from the seeds' ``metrics_test-<stage>.json`` (a
    multi-stage run writes one per stage); only stages every seed has, in training order."""
    per_seed = []
    for d in dirs:
        found = {}
        for path in glob.glob(os.path.join(d, "metrics_test-*.json")):
            found[os.path.basename(path)[len("metrics_test-"):-len(".json")]] = _read_json(path)
        per_seed.append(found)
    names = sorted(set.intersection(*(set(f) for f in per_seed)) if per_seed else set(),
                   key=lambda n: (per_seed[0][n].get("stage_index", 0), per_seed[0][n].get("epoch") is None, n))
    return {n: [f[n] for f in per_seed] for n in names} if len(names) > 1 else {}


def collect_run(run_dir: str, with_cost: bool = True) -> dict:
    """Test metrics of every seed of ``run_dir`` (``tests``: of best.pt, the stage chosen on
    validation; ``stage_tests``: ``{stage: [...]}`` of each stage's best checkpoint for a
    multi-stage model) plus its model name, size, cost and train time."""
    dirs = _seed_dirs(run_dir)
    tests = [_read_json(os.path.join(d, "metrics_test.json")) for d in dirs]
    cfg = _read_json(os.path.join(dirs[0], "config.json")) if os.path.isfile(os.path.join(dirs[0], "config.json")) \
        else {}
    params, macs = _model_cost(dirs[0]) if with_cost else (None, None)
    return {"name": _run_name(run_dir), "dir": run_dir, "model": tests[0].get("model"),
            "dataset": tests[0].get("dataset"), "image_size": cfg.get("image_size"), "tests": tests,
            "stage_tests": _stage_tests(dirs),
            "params": params, "macs": macs,
            "train_seconds": [t.get("train_seconds") for t in tests if t.get("train_seconds") is not None]}


def comparison_table(runs: list) -> list:
    """One row per run: name, model, seeds, ``<metric>`` = (mean, std) in %, params, MACs, seconds;
    a multi-stage run's row (best.pt: the stage chosen on validation, per seed) is followed by
    one row per stage, ``<run> [stage <name>]``, from that stage's own best checkpoint."""
    rows = []
    for r in runs:
        variants = [(r["name"], r["tests"])]
        variants += [(f"{r['name']} [stage {stage}]", tests) for stage, tests in (r.get("stage_tests") or {}).items()]
        for name, tests in variants:
            row = {"run": name, "model": r["model"], "seeds": len(tests)}
            for col, get in METRICS.items():
                mean, std = mean_std([get(t) for t in tests])
                row[col] = None if mean is None else (100 * mean, None if std is None else 100 * std)
            row["params (M)"] = None if r["params"] is None else r["params"] / 1e6
            row["GMACs"] = None if r["macs"] is None else r["macs"] / 1e9
            row["train s"] = mean_std(r["train_seconds"])[0]
            rows.append(row)
    return rows


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, tuple):
        return f"{v[0]:.2f}" if v[1] is None else f"{v[0]:.2f} ± {v[1]:.2f}"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def to_markdown(rows: list) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: list, path: str) -> None:
    cols = list(rows[0])
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        header = []
        for c in cols:
            header += [f"{c} mean", f"{c} std"] if any(isinstance(r[c], tuple) for r in rows) else [c]
        w.writerow(header)
        for r in rows:
            line = []
            for c in cols:
                if any(isinstance(x[c], tuple) for x in rows):
                    line += ["" if x is None else x for x in r[c]] if r[c] is not None else ["", ""]
                else:
                    line.append("" if r[c] is None else r[c])
            w.writerow(line)


def plot_per_class_ap(runs: list, path: str) -> None:
    """Per-class test AP (mean over seeds) against train prevalence, one marker series per run."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        first = r["tests"][0]
        names = list(first.get("per_class_ap") or {})
        prev = first.get("train_prevalence") or first.get("per_class_prevalence") or {}
        xs, ys = [], []
        for n in names:
            aps = [t["per_class_ap"].get(n) for t in r["tests"]]
            aps = [a for a in aps if a is not None]
            if aps and prev.get(n):
                xs.append(100 * prev[n])
                ys.append(100 * float(np.mean(aps)))
        order = np.argsort(xs)
        ax.plot(np.asarray(xs)[order], np.asarray(ys)[order], marker="o", ms=4, lw=1, label=r["name"])
    ax.set_xscale("log")
    ax.set_xlabel("train prevalence (%)")
    ax.set_ylabel("test AP (%)")
    ax.set_title("per-class AP against prevalence")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_summary_bars(rows: list, path: str) -> None:
    """Grouped bars (mean ± std over seeds) of mAP, AUC and head/medium/tail AP per run."""
    plt = pyplot()

    metrics = ["mAP", "AUC", "AP head", "AP medium", "AP tail"]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics) + 0.4 * len(rows)), 4.5))
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(metrics))
    for k, r in enumerate(rows):
        means = [r[m][0] if r[m] else np.nan for m in metrics]
        stds = [r[m][1] if r[m] and r[m][1] is not None else 0 for m in metrics]
        ax.bar(x + (k - (len(rows) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=r["run"])
    ax.set_xticks(x, metrics)
    ax.set_ylabel("test (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
