"""Mean ± std over seeds, and the fixed-width text tables of a run's metrics and its seed summary."""
from __future__ import annotations

import numpy as np

from .arrays import to_float
from .groups import GROUPS


def mean_std(values) -> tuple[float | None, float | None]:
    """``(mean, sample std)`` of the numbers in ``values`` (None skipped): std with ddof = 1, None
    for fewer than two values (one seed has no spread to report); mean None for none."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return (to_float(x.mean()) if len(x) else None), (to_float(x.std(ddof=1)) if len(x) > 1 else None)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def mean_std_over_seeds(runs) -> dict:
    """Mean ± std of metric dicts from runs that differ only in their seed (``--seeds``).

    Every numeric leaf of the dicts (nested dicts followed) becomes ``{"mean", "std", "n"}``
    over the runs where it is defined (None skipped; ``std`` is the sample standard deviation,
    ddof = 1, None for n < 2; ``mean`` None for n = 0). Any other leaf (class lists, group
    names) is kept when all runs agree and becomes the list of per-run values otherwise.
    """
    runs = list(runs)
    if not runs or not all(isinstance(r, dict) for r in runs):
        raise ValueError("mean_std_over_seeds needs a non-empty list of metric dicts")

    def merge(values):
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, dict) for v in present):
            keys = list(dict.fromkeys(k for v in present for k in v))
            return {k: merge([v.get(k) for v in present]) for k in keys}
        if all(_is_number(v) for v in present):
            mean, std = mean_std(present)
            return {"mean": mean, "std": std, "n": len(present)}
        return values[0] if all(v == values[0] for v in values) else list(values)

    return merge(runs)


_SUMMARY = [("mAP", "mAP"), ("prevalence_baseline_map", "prevalence baseline mAP"), ("macro_auc", "macro AUC"),
            ("accuracy", "accuracy (paper F1) {at}"), ("paper_avg", "paper Avg."), ("f1_micro", "F1 micro {at}"),
            ("f1_macro", "F1 macro {at}"), ("odir_score", "ODIR score")]


def _summary_items(d: dict, at: str) -> list[tuple[str, object]]:
    """(label, value) of the summary lines of a metrics dict or of its seed summary."""
    items = [(label.format(at=at), d.get(key)) for key, label in _SUMMARY]
    for key, label in (("group_ap", "AP"), ("group_auc", "AUC")):
        if isinstance(d.get(key), dict):
            items += [(f"{label} {g}", d[key].get(g)) for g in GROUPS]
    return items


def _fmt(v, width=8):
    return "-".rjust(width) if v is None else f"{100 * v:{width}.2f}"


def format_metrics_table(metrics: dict) -> str:
    """A fixed-width text table: summary lines (%), excluded classes, then per-class prevalence,
    AP, AUC and F1 (%) with the class's group."""
    thr = metrics.get("threshold", 0.5)
    at = "per-class thr." if isinstance(thr, list) else f"@ {thr:g}"
    w0 = 32
    lines = ["metric".ljust(w0) + "value".rjust(10), "-" * (w0 + 10),
             "samples".ljust(w0) + str(metrics.get("num_samples", "-")).rjust(10)]
    lines += [name.ljust(w0) + _fmt(v, 10) for name, v in _summary_items(metrics, at)]
    for key, label in (("ap", "no positive (no AP)"), ("auc", "no AUC")):
        excluded = (metrics.get("excluded_classes") or {}).get(key)
        if excluded:
            lines.append(f"excluded, {label}: {', '.join(excluded)}")
    ap = metrics.get("per_class_ap") or {}
    if ap:
        auc, f1 = metrics.get("per_class_auc") or {}, metrics.get("per_class_f1") or {}
        prev, grp = metrics.get("per_class_prevalence") or {}, metrics.get("groups") or {}
        w = max(12, max(len(n) for n in ap) + 1)
        lines += ["", "class".ljust(w) + "".join(h.rjust(8) for h in ("group", "prev%", "AP%", "AUC%", "F1%")),
                  "-" * (w + 40)]
        for name in ap:
            lines.append(name.ljust(w) + str(grp.get(name, "")).rjust(8) + _fmt(prev.get(name))
                         + _fmt(ap[name]) + _fmt(auc.get(name)) + _fmt(f1.get(name)))
    return "\n".join(lines)


def format_seed_summary(summary: dict) -> str:
    """The summary lines of :func:`format_metrics_table` as ``mean ± std (n)`` in %, from
    :func:`mean_std_over_seeds`."""
    def cell(v):
        if not isinstance(v, dict) or v.get("mean") is None:
            return "-"
        std = "-" if v.get("std") is None else f"{100 * v['std']:.2f}"
        return f"{100 * v['mean']:.2f} ± {std} (n={v['n']})"

    thr = summary.get("threshold")
    at = f"@ {thr['mean']:g}" if isinstance(thr, dict) and thr.get("mean") is not None else "per-class thr."
    w0 = 32
    lines = ["metric".ljust(w0) + "mean ± std over seeds", "-" * (w0 + 28)]
    lines += [name.ljust(w0) + cell(v) for name, v in _summary_items(summary, at)]
    return "\n".join(lines)
