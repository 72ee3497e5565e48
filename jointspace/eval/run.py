"""``evaluate``: every metric for a model on a labelled, paired test manifest.

``results.json`` (retrieval blocks as in :mod:`.retrieval`, plus ``grouped_by``)::

    {"manifest": …, "n": 700, "quarantined": 0, "device": "cpu",
     "retrieval": {"grouped_by": "text", "n": 700, "n_groups": 586,
                   "text_to_image": {"R@1", "R@5", "R@10", "median_rank"}, "image_to_text": {…},
                   "chance": {…}, "strict": {"text_to_image": {…}, "image_to_text": {…},
                                             "ceiling": {…}, "chance": {…}}},
     "retrieval_by_label": {"grouped_by": "label", "n", "n_groups", "text_to_image",
                            "image_to_text", "chance"},                # if every row has a label
     "zero_shot": {"top1", "top5", "chance_top1", "n_classes", "n", "per_class_top1", "templates"},
     "zero_shot_<subset>": {…}, "retrieval_<subset>": {…}, "retrieval_by_label_<subset>": {…},
     "matryoshka": {"<dim>": {"retrieval": {…}, "zero_shot": {"top1", "top5", "chance_top1"}}},
     "seconds": 1.2}
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.manifest import OnBadRow, read_manifest
from ..errors import ConfigError
from ..fileio import atomic_write_json
from ..model import JointModel, load, resolve_device
from .retrieval import group_keys, retrieval_metrics
from .zeroshot import DEFAULT_TEMPLATES, class_embeddings, zero_shot_metrics

RESULTS_FILE = "results.json"


def evaluate(model: JointModel | str | Path, manifest: str | Path, *,
             out_dir: str | Path | None = None, classes: Sequence[str] | None = None,
             templates: Sequence[str] = DEFAULT_TEMPLATES, on_bad_row: OnBadRow = "skip",
             subsets: dict[str, Sequence[str]] | None = None, device: str | None = None,
             batch_size: int = 256, columns: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Zero-shot accuracy (if the manifest has labels) and image↔text retrieval.

    Retrieval is reported in three views (layout in :mod:`.retrieval`):

    * ``retrieval`` (the headline): group-aware Recall@1/5/10 and median rank,
      a hit being any item of the query's group. A row's group is its
      manifest ``group`` value when it has one, else its exact caption, so
      identical captions are interchangeable answers.
    * ``retrieval["strict"]``: the per-row figures (only the paired item
      counts) with their ``ceiling``, the best any model could reach given
      the duplicate captions, and their chance level.
    * ``retrieval_by_label``: a hit is any item with the query's label (only
      when every row has a label).

    ``classes`` defaults to the distinct labels of the manifest. ``subsets``
    maps a name to labels whose rows are also scored on their own
    (``zero_shot_<name>``, ``retrieval_<name>``, ``retrieval_by_label_<name>``;
    retrieval there searches only the subset's rows). ``device`` is where the
    model runs: ``"auto"`` picks CUDA when available, else CPU; ``None`` is
    ``"auto"`` for a model folder and leaves a given model where it is.
    ``columns`` maps fields to the manifest's column names (e.g.
    ``{"image": "filepath", "text": "caption"}``), as in ``read_manifest``.
    With ``out_dir`` the results are written to ``out_dir/results.json``.
    Returns the results mapping.

    >>> results = evaluate("runs/demo/model", "shapes/test.csv")  # doctest: +SKIP
    """
    started = time.perf_counter()
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if not isinstance(model, JointModel):
        model = load(model)
        device = device or "auto"
    if device is not None:
        model.to(resolve_device(device))
    data = read_manifest(manifest, required=("image", "text"), on_bad_row=on_bad_row,
                         quarantine_dir=out_dir, columns=columns)
    records = data.records
    texts = [r.text for r in records]
    # each distinct image file is embedded once too, so repeated images tie exactly
    paths = [str(r.image) for r in records]
    distinct_paths, image_rows = np.unique(np.array(paths, dtype=object), return_inverse=True)
    image_emb = model.encode_image(list(distinct_paths), batch_size=batch_size,
                                   show_progress=True)[image_rows.reshape(-1)]
    # each distinct caption is embedded once, so identical captions get identical vectors
    distinct, inverse = np.unique(np.array(texts, dtype=object), return_inverse=True)
    text_emb = model.encode_text(list(distinct), batch_size=batch_size,
                                 show_progress=True)[inverse.reshape(-1)]
    keys, grouped_by = group_keys(records)
    labels = data.labels()
    labelled = len(labels) == len(data)
    results: dict[str, Any] = {"manifest": str(manifest), "n": len(data),
                               "quarantined": len(data.bad_rows),
                               "device": str(next(model.parameters()).device)}
    results.update(_retrieval_views(image_emb, text_emb, keys, texts, paths, grouped_by,
                                    labels if labelled else None))
    if labelled:
        classes = sorted(set(labels)) if classes is None else list(classes)
        class_emb = class_embeddings(model, classes, templates, batch_size=batch_size)
        results["zero_shot"] = zero_shot_metrics(image_emb, labels, classes, class_emb)
        results["zero_shot"]["templates"] = list(templates)
        for name, subset_labels in (subsets or {}).items():
            wanted = set(subset_labels)
            rows = [i for i, label in enumerate(labels) if label in wanted]
            if not rows:
                continue
            results[f"zero_shot_{name}"] = zero_shot_metrics(
                image_emb[rows], [labels[i] for i in rows], classes, class_emb)
            views = _retrieval_views(image_emb[rows], text_emb[rows], [keys[i] for i in rows],
                                     [texts[i] for i in rows], [paths[i] for i in rows], grouped_by,
                                     [labels[i] for i in rows])
            results.update({f"{view}_{name}": value for view, value in views.items()})
    if len(model.config.nested_dims()) > 1:
        results["matryoshka"] = _per_size(model, image_emb, text_emb, keys, texts, paths, grouped_by,
                                          labels, classes, templates)
    results["seconds"] = round(time.perf_counter() - started, 2)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / RESULTS_FILE, results)
    return results


def _retrieval_views(image_emb: np.ndarray, text_emb: np.ndarray, keys: list, texts: list[str],
                     paths: list[str],
                     grouped_by: str, labels: list[str] | None) -> dict[str, Any]:
    views = {"retrieval": {"grouped_by": grouped_by,
                           **retrieval_metrics(image_emb, text_emb, keys, text_keys=texts,
                                              image_keys=paths)}}
    if labels is not None:
        views["retrieval_by_label"] = {"grouped_by": "label", **retrieval_metrics(
            image_emb, text_emb, labels, include_strict=False)}
    return views


def _prefix(x: np.ndarray, k: int) -> np.ndarray:
    # the renormalised prefix of a unit vector equals that of the raw embedding
    p = x[:, :k]
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def _per_size(model: JointModel, image_emb: np.ndarray, text_emb: np.ndarray, keys: list,
              texts: list[str], paths: list[str], grouped_by: str, labels: list[str],
              classes: Sequence[str] | None, templates: Sequence[str]) -> dict[str, Any]:
    """Retrieval and zero-shot accuracy at each nested (Matryoshka) size."""
    out: dict[str, Any] = {}
    for k in model.config.nested_dims():
        img, txt = _prefix(image_emb, k), _prefix(text_emb, k)
        entry: dict[str, Any] = {
            "retrieval": _retrieval_views(img, txt, keys, texts, paths, grouped_by, None)["retrieval"]}
        if classes and len(labels) == len(img):
            class_emb = class_embeddings(model, classes, templates, dim=k)
            z = zero_shot_metrics(img, labels, classes, class_emb)
            entry["zero_shot"] = {key: z[key] for key in ("top1", "top5", "chance_top1")}
        out[str(k)] = entry
    return out
