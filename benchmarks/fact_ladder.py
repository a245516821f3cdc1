"""The FACT ladder: from the plain CNN + BCE to full FACT, one change per rung, read on validation.

Every rung trains with the bundled benchmark's recipe and trunk (``fact_resnet_tiny`` to its
stride-16 stage; 20 epochs at 64 px on the default ``synthetic`` dataset) and is read on the
**validation** split: the best validation epoch's mAP and macro AUC, and the head's diagnostics
at that epoch (``FACT.diagnostics``: the anchors' mean pairwise cosine, how alike two classes'
embeddings E_c are in one image, the interface gates, the logit the point loss sees; and the
mean correlation between classes' scores over the validation images). No test split is read.

The main ladder (R0 … R8) walks the head of the paper's structure with the default choices of
``fact_tiny``; ``--ladder paper`` walks it with the choices the project started from (the
bounded logit f = 10(μ − 0.5), S⁰ as shipped, queries at std 0.02), and side branches
(``--rows``) change one open choice at the rung where the ladder drops::

    python -m benchmarks.fact_ladder                         # the default ladder, seed 0
    python -m benchmarks.fact_ladder --rows r6 r7 r8 --seeds 0,1,2 --out runs/ladder3
    python -m benchmarks.fact_ladder --list

Outputs: ``OUT/<row>/`` (the runs), ``OUT/batch.json``, and ``OUT/ladder.md`` /
``OUT/ladder.json`` (one line per row: mean ± sample std over the seeds that finished).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from benchmarks.batch import add_batch_arguments, run_batch
from benchmarks.bundled_benchmark import TRUNK
from fact_fast.metrics import mean_std
from fact_fast.models.fact import PAPER_CHOICES

__all__ = ["ROWS", "LADDER", "PAPER_LADDER", "SIDE_BRANCHES", "read_row", "table", "main"]

PROBE = ["--model", "fact_head_probe"]
NO_VQ_NO_GCN = ["--model-kwargs", "use_vq=false", "--model-kwargs", "use_gcn=false"]


def _kw(**values) -> list[str]:
    out = []
    for k, v in values.items():
        out += ["--model-kwargs", f"{k}={v}"]
    return out


# fact_tiny's projection as the ladder ran it: PyTorch's initialisation at the full rate (the default
# since keeps it at the identity)
LEARNED_PROJECTION = {"projection_init": "default", "projection_lr_scale": 1}

# The model the project started from (before the ladder): the paper read literally (PAPER_CHOICES) but
# with l2-normalised embeddings, and fact_tiny at d = 64, K = 256.
STARTING_POINT = _kw(**{k: str(v).lower() if isinstance(v, bool) else v for k, v in PAPER_CHOICES.items()
                        if k != "embedding_norm"}, dim=64, codebook_size=256)

#: name -> (rung, what changes, fact_fast.train flags)
ROWS: dict[str, tuple[str, str, list[str]]] = {
    "r0_cnn": ("R0", "CNN + BCE: mean pool, linear layer", ["--model", "resnet50_bce", *TRUNK]),
    "r1_projection": ("R1", "+ 1×1 projection to d = 128", PROBE),
    "r2_interface": ("R2", "mean pool → the interface E_c, linear read-out", PROBE + _kw(pool="interface")),
    "r3_cosine16": ("R3", "linear → 16·cos(E_c, w_c) + b_c read-out",
                    PROBE + _kw(pool="interface", readout="cosine", cosine_scale=16)),
    "r3b_cosine5": ("R3b", "the same at scale 5",
                    PROBE + _kw(pool="interface", readout="cosine", cosine_scale=5)),
    "r4_gaussian_bce": ("R4", "Gaussian membership μ vs free anchors, BCE on the point loss's logit",
                        NO_VQ_NO_GCN + _kw(loss="bce")),
    "r5_point": ("R5", "BCE → the point loss (ZLPR)", NO_VQ_NO_GCN + _kw(alpha=0)),
    "r6_point_set": ("R6", "+ the set loss (= FACT without VQ and GCN)", NO_VQ_NO_GCN),
    "r7_gcn": ("R7", "free anchors → GCN anchors (= FACT without VQ)", _kw(use_vq="false")),
    "r8_fact": ("R8", "+ the atomic visual space (= FACT)", []),
    # the same rungs with the starting point's choices
    "p4_gaussian_bce": ("R4", "starting point: BCE", STARTING_POINT + NO_VQ_NO_GCN + _kw(loss="bce")),
    "p5_point": ("R5", "starting point: point loss", STARTING_POINT + NO_VQ_NO_GCN + _kw(alpha=0)),
    "p6_point_set": ("R6", "starting point: point + set", STARTING_POINT + NO_VQ_NO_GCN),
    "p7_gcn": ("R7", "starting point: GCN anchors", STARTING_POINT + _kw(use_vq="false")),
    "p8_fact": ("R8", "starting point: FACT", STARTING_POINT),
    # side branches: one open choice of FACT back to the starting point's, or another value
    "s_logit_scaled": ("R8", "point-loss logit λ(μ − δ) instead of λ·log(μ/δ)", _kw(point_logit="scaled")),
    "s_lambda5": ("R8", "λ = 5", _kw(logit_scale=5)),
    "s_lambda20": ("R8", "λ = 20", _kw(logit_scale=20)),
    "s_tau_fixed": ("R8", "τ initialised at 1.25 (slope 2λ/τ = 16 per unit cosine) instead of the median",
                    _kw(init_tau=1.25)),
    "s_s0_raw": ("R8", "S⁰ as shipped (not centred)", _kw(label_embedding_transform="none")),
    "s_anchors_uncentred": ("R8", "GCN output not centred", _kw(center_anchors="false")),
    "s_no_residual": ("R8", "no per-class residual on the anchors", _kw(anchor_residual="false")),
    "s_query_std002": ("R8", "queries initialised at std 0.02", _kw(query_init_std=0.02)),
    "s_bias_neglogm": ("R8", "interface bias b = −ln M", _kw(interface_bias="neg_log_m")),
    "s_logit_bias": ("R8", "a learned per-class bias in the point loss's logit", _kw(logit_bias="true")),
    "s_codebook256": ("R8", "K = 256", _kw(codebook_size=256)),
    "s_codebook_lr10": ("R8", "codebook learning rate ×10", _kw(codebook_lr_scale=10)),
    "s_no_restarts": ("R8", "no dead-code restarts", _kw(vq_restart_every=0)),
    "s_codebook4096": ("R8", "K = 4096", _kw(codebook_size=4096)),
    "s_gamma01": ("R8", "γ = 0.1 (the commitment's pull on the trunk 10× weaker)", _kw(gamma=0.1)),
    "s_gamma3": ("R8", "γ = 3 (the commitment's pull on the trunk 3× stronger)", _kw(gamma=3)),
    "s_no_vq_token_noise": ("R7", "no VQ, V perturbed in training by noise of the quantiser's relative energy",
                            _kw(use_vq="false", token_noise=0.2)),
    "s_alpha0": ("R8", "α = 0 (no set loss)", _kw(alpha=0)),
    "s_unnormalised": ("R8", "E and S not l2-normalised (the paper's literal kernel)", _kw(embedding_norm="none")),
    # an identity projection needs d = the trunk's 128 channels
    "s_dim64": ("R8", "d = 64 (the projection learned from PyTorch's initialisation)",
                _kw(dim=64, **LEARNED_PROJECTION)),
    "s_projection_learned": ("R8", "the projection at PyTorch's initialisation, trained at the full rate",
                             _kw(**LEARNED_PROJECTION)),
    # what R1's projection costs, and why: only a projection that leaves the trunk's channels unmixed
    # (the identity, kept there) scores like no projection
    "s_r1_no_projection": ("R1", "the probe without the projection", PROBE + _kw(dim="null")),
    "s_r1_orthogonal": ("R1", "projection initialised orthogonal", PROBE + _kw(projection_init="orthogonal")),
    "s_r1_orthogonal_fixed": ("R1", "projection orthogonal, trained 1000× slower (a fixed rotation)",
                              PROBE + _kw(projection_init="orthogonal", projection_lr_scale=0.001)),
    "s_r1_identity": ("R1", "projection initialised as the identity", PROBE + _kw(projection_init="identity")),
    "s_r1_identity_fixed": ("R1", "projection at the identity, trained 1000× slower",
                            PROBE + _kw(projection_init="identity", projection_lr_scale=0.001)),
    "s_r1_slow": ("R1", "projection trained 10× slower", PROBE + _kw(projection_lr_scale=0.1)),
}
LADDER = ["r0_cnn", "r1_projection", "r2_interface", "r3_cosine16", "r3b_cosine5", "r4_gaussian_bce", "r5_point",
          "r6_point_set", "r7_gcn", "r8_fact"]
PAPER_LADDER = ["p4_gaussian_bce", "p5_point", "p6_point_set", "p7_gcn", "p8_fact"]
SIDE_BRANCHES = [n for n in ROWS if n.startswith("s_")]

#: (column title, metrics.jsonl key, scale)
COLUMNS = [("val mAP", "val_mAP", 100), ("val AUC", "val_macro_auc", 100),
           ("score corr.", "val_class_score_correlation", 1), ("anchor cos", "anchor_cos", 1),
           ("E_c cos", "class_embedding_cos", 1), ("gate std", "gate_std", 1), ("‖Q‖/‖a‖", "query_ratio", 1),
           ("τ", "tau", 1), ("f pos p50", "logit_pos_p50", 1), ("f neg p50", "logit_neg_p50", 1),
           ("codebook use", "codebook_usage", 1)]


def best_epoch(metrics_path: str) -> dict | None:
    """The metrics.jsonl line of the best validation-mAP epoch (None when there is none)."""
    if not os.path.isfile(metrics_path):
        return None
    with open(metrics_path) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    rows = [r for r in rows if r.get("val_mAP") is not None]
    return max(rows, key=lambda r: r["val_mAP"]) if rows else None


def read_row(run_dir: str) -> dict:
    """``{"seeds": n, key: (mean, std)}`` over the row's seed folders, at each seed's best epoch."""
    seeds = sorted(d for d in os.listdir(run_dir) if d.startswith("seed")) if os.path.isdir(run_dir) else []
    best = [b for b in (best_epoch(os.path.join(run_dir, d, "metrics.jsonl")) for d in seeds) if b is not None]
    out: dict = {"seeds": len(best)}
    for _, key, _ in COLUMNS:
        values = [b[key] for b in best if b.get(key) is not None]
        out[key] = mean_std(values) if values else (None, None)
    return out


def _cell(mean, std, scale) -> str:
    if mean is None:
        return "–"
    digits = 2 if scale == 100 else 3
    text = f"{scale * mean:.{digits}f}"
    return text if std is None else f"{text} ± {scale * std:.{digits}f}"


def table(out: str, names: list[str]) -> tuple[str, dict]:
    """The Markdown table of ``names`` (rows without a finished seed are left out) and its data."""
    data = {n: read_row(os.path.join(out, n)) for n in names}
    head = "| row | rung | change | seeds | " + " | ".join(c for c, _, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (4 + len(COLUMNS))]
    for n in names:
        if not data[n]["seeds"]:
            continue
        rung, what, _ = ROWS[n]
        cells = [_cell(*data[n][key], scale) for _, key, scale in COLUMNS]
        lines.append(f"| {n} | {rung} | {what} | {data[n]['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_batch_arguments(p, out="runs/fact_ladder", seeds="0")
    p.add_argument("--ladder", choices=("default", "paper", "side", "all"), default="default",
                   help="which rows when --rows is not given: the ladder, the starting point's rungs, the side "
                        "branches, or all of them")
    p.add_argument("--rows", nargs="+", choices=sorted(ROWS), help="rows to run (default: the ladder's)")
    args = p.parse_args(argv)
    if args.list:
        for name, (rung, what, flags) in ROWS.items():
            print(f"{name:18s} {rung:4s} {what}  [{' '.join(flags)}]")
        return 0
    names = args.rows or {"default": LADDER, "paper": PAPER_LADDER, "side": SIDE_BRANCHES,
                          "all": LADDER + PAPER_LADDER + SIDE_BRANCHES}[args.ladder]
    extra = [a for a in args.extra if a != "--"] + ["--no-eval-test"]
    failed = run_batch({n: ROWS[n][2] for n in names}, args.out, args.seeds, args.jobs, args.threads, extra)
    finished = [n for n in ROWS if os.path.isdir(os.path.join(args.out, n))]
    text, data = table(args.out, finished)
    with open(os.path.join(args.out, "ladder.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(args.out, "ladder.json"), "w") as fh:
        json.dump(data, fh, indent=1)
    print(text)
    if failed:
        print("failed rows (see their logs):", ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
