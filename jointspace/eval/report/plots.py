"""The reports' plots: matplotlib (Agg backend, no display) drawn to base64 PNGs.

Every plot labels its axes; directions are written as the pair names them
(``text → image``), never as hard-coded modality names.
"""
from __future__ import annotations

import base64
import io
from typing import Any, Mapping, Sequence

import numpy as np

from ..pairs import direction_keys
from .html import direction_words

#: the plots are embedded in the page as PNG (matplotlib's ``format=``): a format of the
#: report itself, which the image plug-in's shard key happens to spell the same way
USER_FACING_DEFAULTS = ("png",)
PLOT_FORMAT = USER_FACING_DEFAULTS[0]


def _plt() -> Any:
    from ...extras import require
    matplotlib = require("matplotlib", "report", "report.html", instead="jointspace eval --no-report "
                         "(evaluate(..., report=False)): results.json is written before the report")
    matplotlib.use("Agg")  # no display, no GUI toolkit
    return require("matplotlib.pyplot", "report")


def _png(fig: Any) -> str:
    plt = _plt()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=PLOT_FORMAT, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def recall_bars(retrieval: dict[str, Any], names: Sequence[str]) -> str:
    """Recall@1/5/10 per direction, plain and CSLS-scored, with each direction's chance level."""
    plt = _plt()
    a, b = names
    directions = list(direction_keys((a, b)))
    ks = [k for k in ("R@1", "R@5", "R@10") if k in retrieval[directions[0]]]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.2
    for i, (direction, scoring) in enumerate([(d, s) for d in directions for s in ("", "csls_")]):
        values = [retrieval[direction].get(scoring + k, np.nan) for k in ks]
        label = direction_words(direction) + (" (CSLS)" if scoring else "")
        ax.bar(np.arange(len(ks)) + (i - 1.5) * width, values, width, label=label)
    for i, direction in enumerate(directions):  # chance differs by direction (gallery sizes)
        ax.plot(np.arange(len(ks)) + (2 * i - 1) * width, [retrieval["chance"][direction][k] for k in ks],
                "k_", markersize=12, label="chance" if i == 0 else None)
    ax.set_xticks(np.arange(len(ks)), ks)
    ax.set_ylim(0, 1)
    ax.set_xlabel("K (a hit: a positive among the first K)")
    ax.set_ylabel("recall@K")
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


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
    bins = np.linspace(float(sims.min()), float(sims.max()) + 1e-9, 60)
    ax.hist(sims[~same], bins=bins, density=True, alpha=0.6, label="negative pairs")
    ax.hist(sims[same], bins=bins, density=True, alpha=0.6, label="positive pairs")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return _png(fig)


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
    ax.set_xlabel("principal axis 1")
    ax.set_ylabel("principal axis 2")
    ax.legend(fontsize=8)
    return _png(fig)


#: the most bars :func:`per_class_bars` draws
MAX_BARS = 60


def per_class_bars(per_class: Mapping[str, float], chance: float) -> str:
    """Each class's top-1 recall as a horizontal bar, worst at the top, chance marked; above
    :data:`MAX_BARS` classes only the worst and the best half of that many (a bar per class
    of 1,000 would be a plot 200 inches tall)."""
    plt = _plt()
    order = sorted(per_class, key=lambda c: (per_class[c], c))
    if len(order) > MAX_BARS:
        half = MAX_BARS // 2
        order = order[:half] + [f"… {len(order) - 2 * half} classes …"] + order[-half:]
        per_class = {**per_class, order[half]: float("nan")}
    fig, ax = plt.subplots(figsize=(6, max(2.0, 0.22 * len(order) + 0.8)))
    ax.barh(np.arange(len(order)), [per_class[c] for c in order], color="#3b73b9")
    ax.axvline(chance, color="k", linestyle="--", linewidth=1, label=f"chance {chance:.3f}")
    ax.set_yticks(np.arange(len(order)), order, fontsize=7 if len(order) > 30 else 8)
    ax.set_xlim(0, 1)
    ax.set_ylim(len(order) - 0.4, -0.6)  # the worst class at the top
    ax.set_xlabel("top-1 recall of the class")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def confusion_plot(confusion: list[list[int]], classes: Sequence[str]) -> str:
    plt = _plt()
    m = np.asarray(confusion, dtype=float)
    m = m / np.maximum(m.sum(1, keepdims=True), 1)
    size = max(4.0, 0.2 * len(classes) + 1.5)
    fig, ax = plt.subplots(figsize=(size, size))
    shown = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return _png(fig)


def matryoshka_curves(per_size: dict[str, Any], names: Sequence[str]) -> str:
    plt = _plt()
    a, b = names
    dims = sorted(per_size, key=int)
    fig, ax = plt.subplots(figsize=(5, 3))
    for direction in direction_keys((a, b)):
        ax.plot([int(d) for d in dims], [per_size[d]["retrieval"][direction]["R@1"] for d in dims],
                "o-", label=direction_words(direction) + " R@1")
    if all("zero_shot" in per_size[d] for d in dims):
        ax.plot([int(d) for d in dims], [per_size[d]["zero_shot"]["top1"] for d in dims], "s--",
                label="zero-shot top-1")
    ax.set_xscale("log", base=2)
    ax.set_xticks([int(d) for d in dims], [str(d) for d in dims])
    ax.set_xlabel("embedding size (the first N dimensions, renormalised)")
    ax.set_ylabel("R@1 / top-1")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return _png(fig)


def training_curves(rows: Sequence[dict[str, Any]]) -> str | None:
    """Loss (training and validation), validation R@1 per direction and the logit scale
    (1 / temperature) against the step, from a run's ``log.jsonl`` rows (None: no
    training row)."""
    train = [r for r in rows if "loss" in r and "step" in r]
    if not train:
        return None
    plt = _plt()
    val = [r for r in rows if "val_loss" in r and "step" in r]
    recalls = sorted({k for r in val for k in r if k.startswith("val_") and k.endswith("_R@1")})
    scales = sorted({k for r in train for k in r if k == "scale" or k.startswith("scale_")})
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    ax = axes[0]
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="training loss")
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    for key in recalls:
        points = [r for r in val if key in r]
        ax.plot([r["step"] for r in points], [r[key] for r in points], "o-",
                label=direction_words(key[len("val_"):-len("_R@1")]))
    ax.set_ylim(0, 1)
    ax.set_xlabel("step")
    ax.set_ylabel("validation R@1")
    ax.set_title("validation R@1" if recalls else "validation R@1 (no validation data)", fontsize=10)
    if recalls:
        ax.legend(fontsize=8)
    ax = axes[2]
    for key in scales:
        points = [r for r in train if key in r]
        ax.plot([r["step"] for r in points], [r[key] for r in points],
                label="logit scale" if key == "scale" else key[len("scale_"):])
    ax.set_xlabel("step")
    ax.set_ylabel("logit scale (1 / temperature)")
    ax.set_title("temperature", fontsize=10)
    if len(scales) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def similarity_scatter(x: np.ndarray, y: np.ndarray, positive: np.ndarray, names: Sequence[str],
                       what: str) -> str:
    """The same pairs' cosine similarity in two models' spaces (``x``: model A, ``y``:
    model B); ``positive`` marks the paired ones."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.scatter(x[~positive], y[~positive], s=5, alpha=0.4, label="unpaired", color="#888")
    if positive.any():
        ax.scatter(x[positive], y[positive], s=7, alpha=0.7, label="paired", color="#c2410c")
    low = float(min(x.min(), y.min()))
    ax.plot([low, 1], [low, 1], "k:", linewidth=1)
    ax.set_xlabel(f"cosine similarity in {names[0]}")
    ax.set_ylabel(f"cosine similarity in {names[1]}")
    ax.set_title(what, fontsize=9)
    ax.legend(fontsize=8)
    return _png(fig)
