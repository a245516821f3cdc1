"""Put runs side by side: ``python -m fact_fast.compare RUN_DIR... [--out DIR]``.

A RUN_DIR is a training output directory (``metrics_test.json`` + ``best.pt``) or a ``--seeds``
directory (``summary.json`` over ``seed<k>/`` runs). Writes ``compare.md`` and ``compare.csv``
(test mAP, macro AUC, the paper's F1 (= accuracy of the flattened label matrix) and Avg.,
head/medium/tail AP and AUC as mean ± std over seeds, parameters, multiply-accumulates at the
run's resolution, training time) and two plots: per-class AP against train prevalence per model
(``per_class_ap.png``) and grouped bars of the summary metrics (``summary_bars.png``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from fact_fast.reporting.comparison import (collect_run, comparison_table, plot_per_class_ap, plot_summary_bars,
                                            to_markdown, write_csv)

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fact_fast.compare",
                                description="Compare trained runs (FACT, ablations, baselines): a Markdown/CSV "
                                            "table of test metrics (mean ± std over seeds) and plots.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (single runs or --seeds directories)")
    p.add_argument("--out", default="compare", metavar="DIR", help="output directory (default: ./compare)")
    p.add_argument("--no-cost", action="store_true", help="skip counting parameters and MACs")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        runs = [collect_run(r, with_cost=not args.no_cost) for r in args.runs]
    except (FileNotFoundError, json.JSONDecodeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    datasets = {r["dataset"] for r in runs}
    if len(datasets) > 1:
        print(f"warning: the runs use different datasets {sorted(map(str, datasets))}", file=sys.stderr)
    rows = comparison_table(runs)
    os.makedirs(args.out, exist_ok=True)
    md = to_markdown(rows)
    with open(os.path.join(args.out, "compare.md"), "w") as fh:
        fh.write(md)
    write_csv(rows, os.path.join(args.out, "compare.csv"))
    if not args.no_plots:
        plot_per_class_ap(runs, os.path.join(args.out, "per_class_ap.png"))
        plot_summary_bars(rows, os.path.join(args.out, "summary_bars.png"))
    print(md)
    print(f"wrote {args.out}/compare.md, compare.csv" + ("" if args.no_plots else ", per_class_ap.png, summary_bars.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
