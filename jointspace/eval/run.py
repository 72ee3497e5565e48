"""``evaluate``: every metric for a model on a labelled, paired test manifest."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.manifest import OnBadRow, read_manifest
from ..errors import DataError
from ..fileio import atomic_write_json
from ..model import JointModel, load
from .retrieval import retrieval_metrics
from .zeroshot import DEFAULT_TEMPLATES, class_embeddings, zero_shot_metrics

RESULTS_FILE = "results.json"


def evaluate(model: JointModel | str | Path, manifest: str | Path, *,
             out_dir: str | Path | None = None, classes: Sequence[str] | None = None,
             templates: Sequence[str] = DEFAULT_TEMPLATES, on_bad_row: OnBadRow = "skip",
             subsets: dict[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Zero-shot accuracy (if the manifest has labels) and image↔text Recall@1/5/10.

    ``classes`` defaults to the distinct labels of the manifest. ``subsets``
    maps a name to labels whose images are also scored on their own (e.g. the
    held-out colour–shape combinations). With ``out_dir`` the results are
    written to ``out_dir/results.json``. Returns the results mapping.

    >>> results = evaluate("runs/demo/model", "shapes/test.csv")  # doctest: +SKIP
    """
    started = time.perf_counter()
    model = load(model) if not isinstance(model, JointModel) else model
    data = read_manifest(manifest, required=("image", "text"), on_bad_row=on_bad_row,
                         quarantine_dir=out_dir)
    if len(data) == 0:
        raise DataError(f"no valid rows in {manifest}")
    image_emb = model.encode_image([r.image for r in data.records], show_progress=True)
    text_emb = model.encode_text([r.text for r in data.records], show_progress=True)
    results: dict[str, Any] = {"manifest": str(manifest), "n": len(data),
                               "quarantined": len(data.bad_rows),
                               "retrieval": retrieval_metrics(image_emb, text_emb)}
    labels = data.labels()
    if len(labels) == len(data):
        classes = sorted(set(labels)) if classes is None else list(classes)
        class_emb = class_embeddings(model, classes, templates)
        results["zero_shot"] = zero_shot_metrics(image_emb, labels, classes, class_emb)
        results["zero_shot"]["templates"] = list(templates)
        for name, subset_labels in (subsets or {}).items():
            keep = np.array([l in set(subset_labels) for l in labels])
            if keep.any():
                results[f"zero_shot_{name}"] = zero_shot_metrics(
                    image_emb[keep], [l for l, k in zip(labels, keep) if k], classes, class_emb)
                results[f"retrieval_{name}"] = retrieval_metrics(image_emb[keep], text_emb[keep])
    if len(model.config.nested_dims()) > 1:
        results["matryoshka"] = _per_size(model, image_emb, text_emb, labels, classes, templates)
    results["seconds"] = round(time.perf_counter() - started, 2)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / RESULTS_FILE, results)
    return results


def _prefix(x: np.ndarray, k: int) -> np.ndarray:
    # the renormalised prefix of a unit vector equals that of the raw embedding
    p = x[:, :k]
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def _per_size(model: JointModel, image_emb: np.ndarray, text_emb: np.ndarray, labels: list[str],
              classes: Sequence[str] | None, templates: Sequence[str]) -> dict[str, Any]:
    """Retrieval and zero-shot accuracy at each nested (Matryoshka) size."""
    out: dict[str, Any] = {}
    for k in model.config.nested_dims():
        img, txt = _prefix(image_emb, k), _prefix(text_emb, k)
        entry: dict[str, Any] = {"retrieval": retrieval_metrics(img, txt)}
        if classes and len(labels) == len(img):
            class_emb = class_embeddings(model, classes, templates, dim=k)
            z = zero_shot_metrics(img, labels, classes, class_emb)
            entry["zero_shot"] = {key: z[key] for key in ("top1", "top5", "chance_top1")}
        out[str(k)] = entry
    return out


