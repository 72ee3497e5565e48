"""``evaluate``: every metric for a model on a labelled, paired test manifest.

``results.json`` (retrieval blocks as in :mod:`.retrieval`, plus ``grouped_by``), here for
the default pair image:text; for a pair ``a:b`` the directions are ``b_to_a`` and
``a_to_b`` (``text_to_audio``, ``audio_to_text``)::

    {"manifest": …, "pair": ["image", "text"], "n": 700, "quarantined": 0, "device": "cpu",
     "retrieval": {"grouped_by": "text", "n": 700, "n_groups": 586,
                   "gallery": {"image": 700, "text": 700},     # distinct images, caption rows
                   "text_to_image": {"R@1", "R@5", "R@10", "median_rank", "mAP@10", "csls_…"},
                   "image_to_text": {…}, "chance": {"text_to_image": {…}, "image_to_text": {…}},
                   "strict": {"text_to_image": {…}, "image_to_text": {…},
                              "ceiling": {<direction>: {…}}, "chance": {<direction>: {…}}}},
     "retrieval_by_label": {"grouped_by": "label", "n", "n_groups", "gallery", "text_to_image",
                            "image_to_text", "chance"},                # if every row has a label
     "zero_shot": {"top1", "top5", "chance_top1", "n_classes", "n", "per_class_top1", "templates"},
     "zero_shot_<subset>": {…}, "retrieval_<subset>": {…}, "retrieval_by_label_<subset>": {…},
     "matryoshka": {"<dim>": {"retrieval": {…}, "zero_shot": {"top1", "top5", "chance_top1"}}},
     "seconds": 1.2}
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.manifest import OnBadRow
from ..errors import ConfigError
from ..fileio import atomic_write_json
from ..model import JointModel
from .embed import ModelSource, cached_array, embed_manifest
from .geometry import geometry_metrics
from .probe import knn_accuracy, linear_probe
from .ranking import retrieval_extras
from .report import write_report
from .retrieval import group_field, group_keys, item_identity, retrieval_metrics
from .zeroshot import DEFAULT_TEMPLATES, class_embeddings, zero_shot_metrics

RESULTS_FILE = "results.json"
#: what ``evaluate(tasks=...)`` can run
TASKS = ("retrieval", "zero_shot", "probe", "geometry", "matryoshka")
#: below this many rows the geometry measures say nothing (and a held-out split is empty)
MIN_GEOMETRY_ROWS = 10


def evaluate(model: JointModel | str | Path, manifest: str | Path, *,
             out_dir: str | Path | None = None, classes: Sequence[str] | None = None,
             templates: Sequence[str] = DEFAULT_TEMPLATES, on_bad_row: OnBadRow = "skip",
             subsets: dict[str, Sequence[str]] | None = None, device: str | None = None,
             batch_size: int = 256, columns: Mapping[str, str] | None = None,
             pair: tuple[str, str] | str = ("image", "text"), report: bool = True,
             tasks: Sequence[str] | None = None, train_manifest: str | Path | None = None,
             probe_c: float | None = None) -> dict[str, Any]:
    """Zero-shot accuracy (if the manifest has labels) and retrieval between two modalities.

    ``pair`` names the two fields evaluated against each other, ``("image", "text")``
    by default; any two of the model's modalities work (``("audio", "text")``,
    also written ``"audio:text"``), whether or not the model was trained on
    that pair. Retrieval follows the multi-caption protocol of :mod:`.retrieval`
    (COCO-style data: a file named on several rows is one item, whatever the
    spelling of its path; ``<b>→<a>`` is averaged over rows, ``<a>→<b>`` over
    distinct ``a`` items) and is reported in three views (directions
    ``<a>_to_<b>`` and ``<b>_to_<a>``):

    * ``retrieval`` (the headline): Recall@1/5/10, median rank and mAP@10, a
      hit being any item paired with the query's key. A row's key is its
      manifest ``group`` value when it has one, else its exact caption (the
      exact item of the pair's second field when the pair has no text), so
      identical captions are interchangeable answers.
    * ``retrieval["strict"]``: only an item's own pairs count, with their
      ``ceiling`` (the best any model could reach given identical captions)
      and chance level.
    * ``retrieval_by_label``: a hit is any item with the query's label (only
      when every row has a label).

    Zero-shot classification (when the model has a text tower and every row a
    label) classifies the pair's non-text side against prompts built from
    ``classes`` (default: the distinct labels of the manifest) and ``templates``.
    With ``train_manifest`` (labelled), a linear probe (``C`` chosen on a
    validation split unless ``probe_c`` is given) and a k-NN classifier are fitted
    on its embeddings of that same side and scored on this manifest's
    (:mod:`.probe`). ``geometry`` holds the measures of :mod:`.geometry`
    (alignment, uniformity, RankMe, IsoScore, modality gap, hubness with the
    top hubs as ``(row, count)``). ``tasks`` names the work, some of :data:`TASKS`;
    a task named that cannot run (no labels, no training manifest for the probe,
    no nested dims …) is a :class:`~jointspace.errors.ConfigError` saying why.
    Default: every task the inputs allow.
    ``subsets`` maps a name to labels whose rows are also scored on their own
    (``zero_shot_<name>``, ``retrieval_<name>``, ``retrieval_by_label_<name>``;
    retrieval there searches only the subset's rows). ``device`` is where the
    model runs: ``"auto"`` picks CUDA when available, else CPU; ``None`` is
    ``"auto"`` for a model folder and leaves a given model where it is.
    ``columns`` maps fields to the manifest's column names (e.g.
    ``{"image": "filepath", "text": "caption"}``), as in ``read_manifest``.
    With ``out_dir`` the results are written to ``out_dir/results.json`` (and, with
    ``report``, a self-contained ``out_dir/report.html`` of plots), and the
    embeddings are cached there (:mod:`.embed`): evaluating the same model on the
    same data again embeds nothing.
    Returns the results mapping.

    >>> results = evaluate("runs/demo/model", "shapes/test.csv")  # doctest: +SKIP
    >>> evaluate("runs/bound", "shapes/test.csv", pair="audio:text")  # doctest: +SKIP
    """
    started = time.perf_counter()
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    names = parse_pair(pair)
    # a folder is built only if something is not cached yet
    source = ModelSource(model, device)
    log_path = None if source.folder is None else source.folder / "log.jsonl"
    for m in names:
        source.check(m)  # a clear error before any file is read
    side = 0 if names[0] != "text" else 1  # zero-shot and probes use the pair's non-text side
    plan = _TaskPlan(tasks, source, train_manifest)
    embedded = embed_manifest(source, manifest, names, batch_size=batch_size, cache_dir=out_dir,
                              on_bad_row=on_bad_row, columns=columns, quarantine_dir=out_dir)
    data, records = embedded.manifest, embedded.records
    a_emb, b_emb = (embedded.embeddings[f] for f in names)
    keys, grouped_by = group_keys(records, group_field(names))
    labels = data.labels()
    labelled = labels is not None and len(labels) == len(data)
    run = plan.runnable(labelled, len(data), manifest)
    results: dict[str, Any] = {"manifest": str(manifest), "pair": list(names), "n": len(data),
                               "quarantined": len(data.bad_rows),
                               "embeddings_from_cache": embedded.from_cache,
                               "device": source.device_name, "tasks": sorted(run)}
    a_ids, b_ids = ([item_identity(r.fields[f]) for r in records] for f in names)
    views = _Views(names, keys, a_ids, b_ids, grouped_by)
    if "retrieval" in run:
        results.update(views(a_emb, b_emb, labels if labelled else None))
    query_emb = (a_emb, b_emb)[side]
    if "zero_shot" in run:
        classes = sorted(set(labels)) if classes is None else list(classes)
        class_emb = _class_embeddings(source, classes, templates, None, batch_size, out_dir)
        results["zero_shot"] = zero_shot_metrics(query_emb, labels, classes, class_emb)
        results["zero_shot"]["templates"] = list(templates)
    for name, subset_labels in (subsets or {}).items() if labelled else ():
        wanted = set(subset_labels)
        rows = [i for i, label in enumerate(labels) if label in wanted]
        if not rows:
            continue
        if "zero_shot" in run:
            results[f"zero_shot_{name}"] = zero_shot_metrics(
                query_emb[rows], [labels[i] for i in rows], classes, class_emb)
        if "retrieval" in run:
            subset = views.subset(rows)(a_emb[rows], b_emb[rows], [labels[i] for i in rows])
            results.update({f"{view}_{name}": value for view, value in subset.items()})
    if "geometry" in run:
        results["geometry"] = geometry_metrics(a_emb, b_emb, names, k=min(10, len(data)))
    if "probe" in run:
        results.update(_probes(source, train_manifest, names[side], query_emb, labels, batch_size,
                               out_dir, on_bad_row, columns, probe_c))
    if "matryoshka" in run:
        results["matryoshka"] = _per_size(source, views, a_emb, b_emb, query_emb, labels,
                                          classes if "zero_shot" in run else None, templates,
                                          geometry="geometry" in run, batch_size=batch_size,
                                          cache_dir=out_dir)
    results["metrics"] = flat_metrics(results)
    results["seconds"] = round(time.perf_counter() - started, 2)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / RESULTS_FILE, results)
        if report:
            write_report(out_dir, results, a_emb, b_emb, keys, embedded.items, log_path,
                         a_ids=a_ids)
    return results


class _TaskPlan:
    """Which of :data:`TASKS` an evaluation runs. Without ``tasks``: every task the
    inputs allow. A task asked for by name that cannot run is an error saying why,
    raised as soon as it is known (before any file is read where possible)."""

    def __init__(self, tasks: Sequence[str] | None, source: ModelSource,
                 train_manifest: str | Path | None) -> None:
        self.explicit = tasks is not None
        asked = list(dict.fromkeys(TASKS if tasks is None else tasks))
        unknown = [t for t in asked if t not in TASKS]
        if unknown or not asked:
            raise ConfigError(f"unknown task(s) {', '.join(unknown) or '(none given)'}; "
                              f"tasks are {', '.join(TASKS)}")
        self.asked = set(asked)
        self._drop("zero_shot", None if "text" in source.config.towers else
                   f"zero_shot needs a text tower; this model has {', '.join(source.config.towers)}")
        self._drop("probe", None if train_manifest is not None else
                   "probe needs a labelled training manifest (train_manifest=…, CLI --train-data)")
        self._drop("matryoshka", None if len(source.config.nested_dims()) > 1 else
                   "matryoshka needs a model trained with nested dims (model.matryoshka_dims)")

    def _drop(self, task: str, reason: str | None) -> None:
        if reason is None or task not in self.asked:
            return
        if self.explicit:
            raise ConfigError(reason)
        self.asked.discard(task)

    def runnable(self, labelled: bool, n_rows: int, manifest: str | Path) -> set[str]:
        """The tasks to run, once the manifest has been read."""
        for task in ("zero_shot", "probe"):
            self._drop(task, None if labelled else f"{task} needs a label on every row of {manifest}")
        self._drop("geometry", None if n_rows >= MIN_GEOMETRY_ROWS else
                   f"geometry needs at least {MIN_GEOMETRY_ROWS} rows; {manifest} has {n_rows}")
        return set(self.asked)


def parse_pair(pair: tuple[str, str] | Sequence[str] | str) -> tuple[str, str]:
    """``"audio:text"`` or ``("audio", "text")`` → ``("audio", "text")``, checked."""
    names = tuple(pair.split(":")) if isinstance(pair, str) else tuple(pair)
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise ConfigError(f"a pair names two different modalities, like image:text; got {pair!r}")
    return names  # type: ignore[return-value]


class _Views:
    """The retrieval views of one pair over some rows (see :func:`evaluate`): ``a_ids``
    and ``b_ids`` are each row's item identities (equal ids, one item)."""

    def __init__(self, names: tuple[str, str], keys: list, a_ids: list[str], b_ids: list[str],
                 grouped_by: str) -> None:
        self.names, self.keys, self.grouped_by = names, keys, grouped_by
        self.a_ids, self.b_ids = a_ids, b_ids

    def subset(self, rows: list[int]) -> "_Views":
        pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
        return _Views(self.names, pick(self.keys), pick(self.a_ids), pick(self.b_ids),
                      self.grouped_by)

    def __call__(self, a_emb: np.ndarray, b_emb: np.ndarray,
                 labels: list[str] | None) -> dict[str, Any]:
        views = {"retrieval": {"grouped_by": self.grouped_by, **retrieval_metrics(
            a_emb, b_emb, self.keys, text_keys=self.b_ids, image_keys=self.a_ids,
            names=self.names)}}
        extras = retrieval_extras(a_emb, b_emb, self.keys, self.names, image_keys=self.a_ids)
        for direction, extra in extras.items():
            views["retrieval"][direction].update(extra)  # mAP@10, and CSLS-scored figures
        if labels is not None:
            views["retrieval_by_label"] = {"grouped_by": "label", **retrieval_metrics(
                a_emb, b_emb, labels, include_strict=False, image_keys=self.a_ids,
                names=self.names)}
        return views


def _prefix(x: np.ndarray, k: int) -> np.ndarray:
    # the renormalised prefix of a unit vector equals that of the raw embedding
    p = x[:, :k]
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def _per_size(source: ModelSource, views: _Views, a_emb: np.ndarray, b_emb: np.ndarray,
              query_emb: np.ndarray, labels: list[str], classes: Sequence[str] | None,
              templates: Sequence[str], geometry: bool = False, batch_size: int = 256,
              cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Retrieval, zero-shot accuracy and (with ``geometry``) the geometry measures at
    each nested (Matryoshka) size."""
    out: dict[str, Any] = {}
    for k in source.config.nested_dims():
        a_k, b_k = _prefix(a_emb, k), _prefix(b_emb, k)
        entry: dict[str, Any] = {"retrieval": views(a_k, b_k, None)["retrieval"]}
        if classes:
            class_emb = _class_embeddings(source, classes, templates, k, batch_size, cache_dir)
            z = zero_shot_metrics(_prefix(query_emb, k), labels, classes, class_emb)
            entry["zero_shot"] = {key: z[key] for key in ("top1", "top5", "chance_top1",
                                                          "mean_per_class_recall")}
        if geometry and len(a_k) >= MIN_GEOMETRY_ROWS:
            entry["geometry"] = {key: v for key, v in geometry_metrics(
                a_k, b_k, views.names, k=min(10, len(a_k))).items() if not key.startswith("hubs_")}
        out[str(k)] = entry
    return out


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The headline numbers under flat, stable keys, named as CLIP_benchmark names them
    where it has a name: for the pair ``a:b``, ``<a>_retrieval_recall@5`` is Recall@5
    of retrieving ``a`` items from ``b`` queries (``image_retrieval_recall@5`` is
    text→image), then ``<a>_retrieval_map@10``, ``<a>_retrieval_median_rank``,
    ``<a>_retrieval_csls_recall@K``, ``<a>_retrieval_by_label_recall@K``, and
    zero-shot ``acc1``, ``acc5``, ``mean_per_class_recall``."""
    a, b = results.get("pair", ("image", "text"))
    out: dict[str, float] = {}
    for target, direction in ((a, f"{b}_to_{a}"), (b, f"{a}_to_{b}")) if "retrieval" in results else ():
        block = results["retrieval"][direction]
        for key, value in block.items():
            name = (key.replace("R@", "recall@").replace("mAP@", "map@")
                    if key != "median_rank" else key)
            out[f"{target}_retrieval_{name}"] = value
        by_label = results.get("retrieval_by_label")
        if by_label:
            for key, value in by_label[direction].items():
                if key.startswith("R@"):
                    out[f"{target}_retrieval_by_label_{key.replace('R@', 'recall@')}"] = value
    z = results.get("zero_shot")
    if z:
        out.update(acc1=z["top1"], acc5=z["top5"], mean_per_class_recall=z["mean_per_class_recall"])
    for key, value in results.get("geometry", {}).items():
        if isinstance(value, (int, float)):
            out[key] = value
    if "linear_probe" in results:
        out["linear_probe_acc1"] = results["linear_probe"]["acc1"]
        out["knn_acc1"] = results["knn"]["acc1"]
    return out


def _probes(model: ModelSource, train_manifest: str | Path, field: str, test_emb: np.ndarray,
            test_labels: list[str] | None, batch_size: int, out_dir: str | Path | None,
            on_bad_row: OnBadRow, columns: Mapping[str, str] | None,
            probe_c: float | None) -> dict[str, Any]:
    """Linear probe and k-NN fitted on ``train_manifest``'s ``field`` embeddings."""
    if test_labels is None:
        raise ConfigError("a linear probe needs a label on every test row")
    train = embed_manifest(model, train_manifest, [field], batch_size=batch_size, cache_dir=out_dir,
                           on_bad_row=on_bad_row, columns=columns, quarantine_dir=out_dir)
    train_labels = train.labels()
    if train_labels is None:
        raise ConfigError(f"a linear probe needs a label on every row of {train_manifest}")
    x = train.embeddings[field]
    return {"linear_probe": {"field": field, **linear_probe(x, train_labels, test_emb, test_labels,
                                                             C=probe_c)},
            "knn": {"field": field, **knn_accuracy(x, train_labels, test_emb, test_labels)}}


def _class_embeddings(source: ModelSource, classes: Sequence[str], templates: Sequence[str],
                      dim: int | None, batch_size: int, cache_dir: str | Path | None) -> np.ndarray:
    """:func:`.zeroshot.class_embeddings`, cached beside the manifest embeddings."""
    key = hashlib.sha256(json.dumps([list(classes), list(templates), dim]).encode()).hexdigest()[:16]
    emb, _ = cached_array(cache_dir, f"classes-{source.fingerprint}-{key}", lambda: class_embeddings(
        source.get(), classes, templates, dim=dim, batch_size=batch_size))
    return emb

