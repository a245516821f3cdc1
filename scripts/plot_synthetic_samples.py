"""Pictures of the synthetic benchmark for ``docs/synthetic.md`` (needs matplotlib).

* ``docs/synthetic_forms.png``: per class, each form as the only finding of an image (clear),
  then each form again in a faint, small or occluded presentation.
* ``docs/synthetic_samples.png``: random training images with their labels; a positive that the
  training labels miss is shown in brackets.

    python scripts/plot_synthetic_samples.py [--image-size 128] [--seed 0] [--out-dir docs]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from fact_fast.data import NIH_CLASS_NAMES, SyntheticBenchmark  # noqa: E402
from fact_fast.data.synthetic import FORMS, PRESENTATIONS  # noqa: E402

SHORT = {"Pleural_Thickening": "Pl.Thick.", "Consolidation": "Consol.", "Infiltration": "Infiltr.",
         "Atelectasis": "Atelect.", "Cardiomegaly": "Cardiomeg.", "Pneumothorax": "Pneumoth."}


def _first(ds, mask):
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else None


def _save_gray(plt, fig, path):
    """Save as an 8-bit grayscale PNG (the figures have no colour; a third of the RGBA size)."""
    from PIL import Image

    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    with Image.open(path) as im:
        gray = im.convert("L")
    gray.save(path, optimize=True)


def forms_figure(plt, ds, path, classes_per_row=2):
    """Per class: each form clear, then each form faint / small / occluded; as the only finding."""
    y = ds.clean_labels == 1
    alone = y.sum(axis=1) == 1
    per_class = 2 * max(len(f) for f in FORMS.values())
    nrows = -(-len(NIH_CLASS_NAMES) // classes_per_row)
    ncols = per_class * classes_per_row
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.85 * nrows))
    for ax in axes.ravel():
        ax.axis("off")
    for c, name in enumerate(NIH_CLASS_NAMES):
        row, col = divmod(c, classes_per_row)
        col *= per_class
        for hard in (False, True):
            for f, form in enumerate(FORMS[name]):
                ax = axes[row, col]
                col += 1
                has = y[:, c] & (ds.forms[:, c] == f)
                pres = ds.presentation[:, c]
                want = (pres > 0) if hard else (pres == 0)
                i = _first(ds, has & want & alone)
                if i is None:
                    i = _first(ds, has & want)
                if i is None:
                    continue
                ax.imshow(ds.render_one(i, findings=[c]), cmap="gray", vmin=0, vmax=255)
                ax.set_title(f"{SHORT.get(name, name)}\n{form.name} ({PRESENTATIONS[pres[i]]})", fontsize=7)
    _save_gray(plt, fig, path)


def samples_figure(plt, ds, path, rows=4, cols=6):
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.15 * rows))
    for k, ax in enumerate(axes.ravel()):
        ax.imshow(ds.load_raw(k), cmap="gray", vmin=0, vmax=255)
        ax.axis("off")
        words = []
        for c in np.flatnonzero(ds.clean_labels[k]):
            w = SHORT.get(NIH_CLASS_NAMES[c], NIH_CLASS_NAMES[c])
            words.append(w if ds.labels[k, c] == 1 else f"[{w}]")
        text = ", ".join(words) or "no finding"
        lines, line = [], ""
        for w in text.split(" "):
            if len(line) + len(w) > 24:
                lines.append(line)
                line = ""
            line = f"{line} {w}".strip()
        ax.set_title("\n".join(lines + [line]), fontsize=7)
    _save_gray(plt, fig, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default=os.path.join(HERE, "..", "docs"))
    args = ap.parse_args(argv)
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("plot_synthetic_samples.py needs matplotlib (pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.out_dir, exist_ok=True)
    gallery = SyntheticBenchmark("train", num_samples=20000, seed=args.seed, image_size=args.image_size)
    forms_figure(plt, gallery, os.path.join(args.out_dir, "synthetic_forms.png"))
    train = SyntheticBenchmark("train", num_samples=24, seed=args.seed, image_size=args.image_size)
    samples_figure(plt, train, os.path.join(args.out_dir, "synthetic_samples.png"))
    print(f"wrote {args.out_dir}/synthetic_forms.png and synthetic_samples.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
