"""The page of a run report: one self-contained HTML file, every figure embedded as a base64
PNG (readable offline and mailable)."""
from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass

from fact_fast.utils.checkpoint import RunCheckpoint

from .statistics import fmt_pct

__all__ = ["Section", "render_page"]


@dataclass
class Section:
    """One figure of the report: its heading, the PNG file written beside the page, the PNG's
    bytes and the caption that says how to read it."""

    title: str
    file: str
    png: bytes
    caption: str


def render_page(run_dir: str, ckpt: RunCheckpoint, metrics: dict, source: str, label: str, sections: list,
                table: list) -> str:
    """The report's HTML: a summary table (run, model, dataset, best checkpoint, test metrics under
    the thresholds ``label`` names, where the test ``source`` scores came from), each
    :class:`Section` with its figure embedded, and the threshold ``table`` (rows of strings, the
    first the header)."""
    e = html.escape
    cfg = ckpt.config
    summary = [("run", os.path.abspath(run_dir)), ("model", ckpt.model_spec.get("name")),
               ("dataset", cfg.get("dataset")), ("best checkpoint", f"stage {ckpt.stage}, epoch "
                                                                    f"{ckpt.epoch}"),
               ("test images", metrics["num_samples"]), ("classes", metrics["num_classes"]),
               ("test mAP", fmt_pct(metrics["mAP"])), ("test macro AUC", fmt_pct(metrics["macro_auc"])),
               (f"test F1 micro / macro ({label})", f"{fmt_pct(metrics['f1_micro'])} / "
                                                     f"{fmt_pct(metrics['f1_macro'])}"),
               ("test scores", source)]
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             f"<title>fact_fast report: {e(os.path.basename(os.path.abspath(run_dir)))}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "img{max-width:100%;border:1px solid #ddd}p.caption{color:#444;max-width:900px}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}</style></head><body>",
             f"<h1>Run report: {e(os.path.basename(os.path.abspath(run_dir)))}</h1><table>"]
    parts += [f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in summary]
    parts.append("</table>")
    for sec in sections:
        b64 = base64.b64encode(sec.png).decode("ascii")
        parts.append(f"<h2>{e(sec.title)}</h2><img alt='{e(sec.title)}' src='data:image/png;base64,{b64}'>"
                     f"<p class='caption'>{e(sec.caption)} <i>({e(sec.file)})</i></p>")
    parts.append("<h2>Decision thresholds per class</h2><table>")
    parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in table[0]) + "</tr>")
    parts += ["<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>" for r in table[1:]]
    parts.append("</table><p class='caption'>A class is called positive when its score is above the threshold. "
                 "<b>fixed</b>: the model's default; <b>val-f1</b> / <b>val-youden</b>: chosen per class on the "
                 "validation split at training time to maximise F1 / Youden's J (sensitivity + specificity − 1). "
                 "Next to each, the F1 it gives on the test split (– where the class has no test positive). "
                 "Use them with <code>predict --thresholds</code>. <i>(thresholds.csv)</i></p></body></html>")
    return "\n".join(parts)
