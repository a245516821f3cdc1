"""Fit the label model of the synthetic benchmark to the NIH ChestX-ray14 label table.

The synthetic benchmark (``fact_fast.data.synthetic_v2``) draws each image's label vector from
the empirical distribution of the label vectors of NIH ChestX-ray14: the 112,120 rows of
``Data_Entry_2017_v2020.csv`` hold 801 distinct 14-class vectors (incl. "No Finding" = all
zero). Sampling whole observed vectors keeps the real marginals (Infiltration 17.7 % ... Hernia
0.20 %), the 53.8 % of images with no finding, and every pairwise and higher-order
co-occurrence (e.g. Pneumonia-Edema lift 11.6, Emphysema-Pneumothorax 6.3) without a model
assumption. This script writes that distribution as ``(bitmask, count)`` pairs (bit c =
``NIH_CLASS_NAMES[c]``) to ``fact_fast/data/tables/nih14_label_vectors.json``.

The CSV ships gzipped inside the torchxrayvision wheel (``torchxrayvision/data/
Data_Entry_2017_v2020.csv.gz``) and with the NIH release; pass either (.csv or .csv.gz)::

    python scripts/fit_synthetic_labels.py path/to/Data_Entry_2017_v2020.csv.gz
"""
from __future__ import annotations

import argparse
import collections
import csv
import gzip
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "fact_fast", "data", "tables", "nih14_label_vectors.json")


def _nih_class_names() -> list:
    # labels/sets.py is import-free on purpose; load it without importing torch
    ns: dict = {}
    path = os.path.join(HERE, "..", "fact_fast", "data", "labels", "sets.py")
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), ns)
    return list(ns["NIH_CLASS_NAMES"])


def read_label_vectors(path: str, class_names: list) -> collections.Counter:
    """Counter bitmask -> number of rows of the NIH ``Data_Entry`` table."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label table not found: {path}")
    opener = gzip.open if path.endswith(".gz") else open
    index = {n: c for c, n in enumerate(class_names)}
    counts: collections.Counter = collections.Counter()
    with opener(path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "Finding Labels" not in reader.fieldnames:
            raise ValueError(f"{path}: no 'Finding Labels' column (columns: {reader.fieldnames})")
        for row_no, row in enumerate(reader, start=2):
            mask = 0
            for finding in row["Finding Labels"].split("|"):
                finding = finding.strip()
                if finding == "No Finding":
                    continue
                if finding not in index:
                    raise ValueError(f"{path}: line {row_no}: unknown finding {finding!r}")
                mask |= 1 << index[finding]
            counts[mask] += 1
    if not counts:
        raise ValueError(f"{path}: no rows")
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", help="Data_Entry_2017_v2020.csv or .csv.gz")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output JSON (default: the shipped table)")
    args = ap.parse_args(argv)

    names = _nih_class_names()
    counts = read_label_vectors(args.csv, names)
    with open(args.csv, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    vectors = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))  # most frequent first
    table = {
        "source": os.path.basename(args.csv),
        "source_sha256": digest,
        "description": "empirical distribution of NIH ChestX-ray14 label vectors: "
                       "[bitmask, count], bit c = class_names[c]; 0 = No Finding",
        "class_names": names,
        "num_rows": sum(counts.values()),
        "vectors": [[int(m), int(n)] for m, n in vectors],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(table, f, separators=(",", ":"))
        f.write("\n")
    total = table["num_rows"]
    prev = [sum(n for m, n in vectors if m >> c & 1) / total for c in range(len(names))]
    print(f"{total} rows, {len(vectors)} distinct vectors, no finding {counts[0] / total:.4f}")
    for name, p in zip(names, prev):
        print(f"  {name:20s} {100 * p:6.2f} %")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
