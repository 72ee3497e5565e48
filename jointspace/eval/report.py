"""``report.html``: one self-contained page explaining an evaluation with plots.

Everything is inside the file (plots as base64 PNGs drawn with matplotlib's
Agg backend, thumbnails as base64 too, CSS inline): it opens offline, makes
no network request and can be mailed as one attachment.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..fileio import atomic_write_text
from .pairs import DEFAULT_PAIR

#: the plots are embedded in the page as PNG (matplotlib's ``format=``): a format of the
#: report itself, which the image plug-in's shard key happens to spell the same way
USER_FACING_DEFAULTS = ("png",)
REPORT_FILE = "report.html"
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.5em}figcaption{font-size:.85em;color:#555}
.hubs img{width:64px;height:64px;image-rendering:pixelated}"""


def _figure_png(fig: Any) -> str:
    plt = _plt()

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(png_b64: str, alt: str, caption: str = "") -> str:
    figure = f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png_b64}">'
    return f"<figure>{figure}<figcaption>{html.escape(caption or alt)}</figcaption></figure>"


def _plt() -> Any:
    from ..extras import require
    matplotlib = require("matplotlib", "report", "report.html", instead="jointspace eval --no-report "
                         "(evaluate(..., report=False)): results.json is written before the report")
    matplotlib.use("Agg")  # no display, no GUI toolkit
    return require("matplotlib.pyplot", "report")


def recall_bars(retrieval: dict[str, Any], names: Sequence[str]) -> str:
    """Recall@1/5/10 per direction, plain and CSLS-scored, with the chance level."""
    plt = _plt()
    a, b = names
    directions = [f"{b}_to_{a}", f"{a}_to_{b}"]
    ks = [k for k in ("R@1", "R@5", "R@10") if k in retrieval[directions[0]]]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.2
    for i, (direction, scoring) in enumerate([(d, s) for d in directions for s in ("", "csls_")]):
        values = [retrieval[direction].get(scoring + k, np.nan) for k in ks]
        label = direction.replace("_to_", "→") + (" (CSLS)" if scoring else "")
        ax.bar(np.arange(len(ks)) + (i - 1.5) * width, values, width, label=label)
    for i, direction in enumerate(directions):  # chance differs by direction (gallery sizes)
        ax.plot(np.arange(len(ks)) + (2 * i - 1) * width, [retrieval["chance"][direction][k] for k in ks],
                "k_", markersize=12, label="chance" if i == 0 else None)
    ax.set_xticks(np.arange(len(ks)), ks)
    ax.set_ylim(0, 1)
    ax.set_ylabel("recall")
    ax.legend(fontsize=7, ncol=2)
    return _figure_png(fig)


def similarity_histogram(a_emb: np.ndarray, b_emb: np.ndarray, groups: Sequence[Any],
                         max_items: int = 2000, a_ids: Sequence[Any] | None = None) -> str:
    """Cosine similarities of positive pairs (same group, or the same ``a`` item on
    another row) against negative ones."""
    plt = _plt()
    n = min(len(a_emb), max_items)
    sims = a_emb[:n] @ b_emb[:n].T
    _, gid = np.unique(np.array([str(g) for g in groups[:n]]), return_inverse=True)
    same = gid[:, None] == gid[None, :]
    if a_ids is not None:  # another caption of the same image is a positive too
        _, aid = np.unique(np.array([str(x) for x in a_ids[:n]]), return_inverse=True)
        same |= aid[:, None] == aid[None, :]
    fig, ax = plt.subplots(figsize=(5, 3))
    bins = np.linspace(float(sims.min()), float(sims.max()), 60)
    ax.hist(sims[~same], bins=bins, density=True, alpha=0.6, label="negatives")
    ax.hist(sims[same], bins=bins, density=True, alpha=0.6, label="positives")
    ax.set_xlabel("cosine similarity")
    ax.legend()
    return _figure_png(fig)


def gap_projection(a_emb: np.ndarray, b_emb: np.ndarray, names: Sequence[str],
                   max_items: int = 1000) -> str:
    """Both modalities projected on the two principal axes of their union: the modality gap."""
    plt = _plt()
    a, b = a_emb[:max_items], b_emb[:max_items]
    both = np.vstack([a, b])
    centred = both - both.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(*xy[:len(a)].T, s=4, alpha=0.5, label=names[0])
    ax.scatter(*xy[len(a):].T, s=4, alpha=0.5, label=names[1])
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend()
    return _figure_png(fig)


def confusion_plot(confusion: list[list[int]], classes: Sequence[str]) -> str:
    plt = _plt()
    m = np.asarray(confusion, dtype=float)
    m = m / np.maximum(m.sum(1, keepdims=True), 1)
    size = max(4.0, 0.16 * len(classes))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
    ax.set_yticks(range(len(classes)), classes, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _figure_png(fig)


def matryoshka_curves(per_size: dict[str, Any], names: Sequence[str]) -> str:
    plt = _plt()
    a, b = names
    dims = sorted(per_size, key=int)
    fig, ax = plt.subplots(figsize=(5, 3))
    for direction in (f"{b}_to_{a}", f"{a}_to_{b}"):
        ax.plot([int(d) for d in dims], [per_size[d]["retrieval"][direction]["R@1"] for d in dims],
                "o-", label=direction.replace("_to_", "→") + " R@1")
    if all("zero_shot" in per_size[d] for d in dims):
        ax.plot([int(d) for d in dims], [per_size[d]["zero_shot"]["top1"] for d in dims], "s--",
                label="zero-shot top-1")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("embedding size (nested prefix)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return _figure_png(fig)


def training_curves(log_path: Path) -> str | None:
    """Loss and validation curves from a run's ``log.jsonl`` (None if it has none)."""
    rows = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a truncated last line of a killed run
    train = [r for r in rows if "loss" in r and "step" in r]
    if not train:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    val = [r for r in rows if "val_loss" in r and "step" in r]
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val loss")
    ax.set_xlabel("step")
    ax.legend()
    return _figure_png(fig)


def thumbnail(path: str, size: int = 64) -> str | None:
    """A small base64 PNG of an image file (None if it is not an image)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buffer = io.BytesIO()
            im.save(buffer, format="PNG")
    except Exception:  # not an image (audio, text): no thumbnail
        return None
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def html_table(rows: list[list[Any]], header: list[str]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out_dir: str | Path, results: dict[str, Any], a_emb: np.ndarray, b_emb: np.ndarray,
                 groups: Sequence[Any], items: dict[str, list[str]] | None = None,
                 log_path: str | Path | None = None, a_ids: Sequence[Any] | None = None) -> Path:
    """Write ``out_dir/report.html`` for one pair's results (see :func:`.run.evaluate`);
    ``a_ids`` marks rows naming the same ``a`` item."""
    names = tuple(results.get("pair", DEFAULT_PAIR))
    a, b = names
    r = results.get("retrieval")
    hit = f"; a retrieval hit = same {html.escape(r['grouped_by'])}" if r else ""
    parts = [f"<h1>jointspace evaluation: {html.escape(a)} ↔ {html.escape(b)}</h1>",
             f"<p>{results['n']} pairs from <code>{html.escape(str(results['manifest']))}</code>"
             f" ({results['quarantined']} rows quarantined){hit}.</p>", "<h2>Headline metrics</h2>",
             html_table([[k, v] for k, v in results.get("metrics", {}).items()], ["metric", "value"])]
    if r:
        rows = [[d.replace("_to_", " → ")] + [r[d].get(k, float("nan")) for k in
                                                ("R@1", "R@5", "R@10", "mAP@10", "median_rank")]
                for d in (f"{b}_to_{a}", f"{a}_to_{b}")]
        parts += ["<h2>Retrieval</h2>", _img(recall_bars(r, names), "recall at K",
                                            "Recall@K per direction, plain and CSLS-scored"),
                  html_table(rows, ["direction", "R@1", "R@5", "R@10", "mAP@10", "median rank"]),
                  _img(similarity_histogram(a_emb, b_emb, groups, a_ids=a_ids), "similarity histogram",
                       "cosine similarity of positive and negative pairs")]
    parts.append(_img(gap_projection(a_emb, b_emb, names), "modality gap projection",
                      f"{a} and {b} embeddings on their first two principal axes"))
    z = results.get("zero_shot")
    if z:
        parts += ["<h2>Zero-shot classification</h2>",
                  html_table([["top-1", z["top1"]], ["top-5", z["top5"]],
                          ["mean per-class recall", z["mean_per_class_recall"]],
                          ["chance top-1", z["chance_top1"]]], ["", "value"]),
                  _img(confusion_plot(z["confusion"], z["classes"]), "confusion matrix",
                       "confusion matrix (rows: true class, normalised)")]
    geometry = results.get("geometry")
    if geometry:
        parts += ["<h2>Geometry</h2>", html_table([[k, v] for k, v in geometry.items()
                                                if isinstance(v, (int, float))], ["measure", "value"])]
        for side in names:
            hubs = geometry.get(f"hubs_{side}") or []
            if hubs and items and side in items:
                cells = []
                for index, count in hubs[:10]:
                    label = html.escape(items[side][index])
                    thumb = thumbnail(items[side][index])
                    shown = (f'<img alt="hub {index}" src="data:image/png;base64,{thumb}">' if thumb
                             else label)
                    cells.append(f"<td>{shown}<br>{count}×</td>")
                parts.append(f"<p>Top hubs among the {html.escape(side)} items (how often each is "
                             f"in a query's top-k):</p><table class='hubs'><tr>{''.join(cells)}</tr></table>")
    if results.get("matryoshka"):
        parts += ["<h2>Matryoshka</h2>", _img(matryoshka_curves(results["matryoshka"], names),
                                               "matryoshka curve", "metrics at each nested size")]
    if log_path is not None and Path(log_path).is_file():
        curve = training_curves(Path(log_path))
        if curve:
            parts += ["<h2>Training</h2>", _img(curve, "training curves", f"from {log_path}")]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>jointspace report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    return atomic_write_text(Path(out_dir) / REPORT_FILE, page)
