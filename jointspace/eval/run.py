"""``evaluate``: every metric for a model on a labelled, paired test manifest.

Retrieval follows the multi-caption protocol of :mod:`.retrieval` (COCO-style data: a
file named on several rows is one item, whatever the spelling of its path; ``<b>→<a>``
is averaged over rows, ``<a>→<b>`` over distinct ``a`` items) and is reported in three
views (directions ``<a>_to_<b>`` and ``<b>_to_<a>``):

* ``retrieval`` (the headline): Recall@1/5/10, median rank and mAP@10, a hit being
  any item paired with the query's key. A row's key is its manifest ``group`` value
  when it has one, else its exact item of the pair's text-like field (its caption; the
  second field when neither is text-like), so identical captions are interchangeable answers.
* ``retrieval["strict"]``: only an item's own pairs count, with their ``ceiling``
  (the best any model could reach given identical captions) and chance level.
* ``retrieval_by_label``: a hit is any item with the query's label (only when every
  row has a label).

Zero-shot classification (when the model has a text-like tower and every row a label)
classifies the pair's non-text-like side against prompts built from the class names
and templates, embedded by the model's first text-like tower
(:func:`.pairs.class_name_modality`). The linear probe and k-NN classifier
(:mod:`.probe`) are fitted on a training manifest's embeddings of that same side.
``geometry`` holds the measures of :mod:`.geometry` (alignment, uniformity, RankMe,
IsoScore, modality gap, hubness with the top hubs as ``(row, count)``).

``report.html`` (:mod:`.report`) says which model (read from its folder) and data, states
the headline figures in words, and shows the items as their plug-ins' previews.

``results.json`` (retrieval blocks as in :mod:`.retrieval`, plus ``grouped_by``), here for
the default pair image:text; for a pair ``a:b`` the directions are ``b_to_a`` and
``a_to_b`` (``text_to_audio``, ``audio_to_text``)::

    {"manifest": …, "pair": ["image", "text"], "n": 700, "quarantined": 0, "device": "cpu",
     "retrieval": {"grouped_by": "text", "n": 700, "n_groups": 586,
                   "gallery": {"image": 700, "text": 700},     # distinct images, caption rows
                   "text_to_image": {"R@1", "R@5", "R@10", "median_rank", "mean_rank", "mAP@10", "csls_…"},
                   "image_to_text": {…}, "chance": {"text_to_image": {…}, "image_to_text": {…}},
                   "strict": {"text_to_image": {…}, "image_to_text": {…},
                              "ceiling": {<direction>: {…}}, "chance": {<direction>: {…}}}},
     "retrieval_by_label": {"grouped_by": "label", "n", "n_groups", "gallery", "text_to_image",
                            "image_to_text", "chance"},                # if every row has a label
     "zero_shot": {"top1", "top5", "chance_top1", "n_classes", "n", "per_class_top1", "templates"},
     "zero_shot_<subset>": {…}, "retrieval_<subset>": {…}, "retrieval_by_label_<subset>": {…},
     "minimal_pairs": {…},    # with a ``pair`` column: 2-way accuracy etc. (:mod:`.minimal_pairs`)
     "matryoshka": {"<dim>": {"retrieval": {…}, "zero_shot": {"top1", "top5", "chance_top1"}}},
     "seconds": 1.2}
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.manifest import OnBadRow
from ..errors import ConfigError
from ..extras import install_hint, installed
from ..progress import logger
from ..fileio import atomic_write_json
from ..model import JointModel
from ..vectors import prefix_normalise
from .embed import ModelSource, cached_array, embed_manifest
from .geometry import geometry_metrics
from .metric_names import flat_metrics
from .minimal_pairs import PAIR_COLUMN, pair_test, read_pair_ids
from .pairs import DEFAULT_PAIR, class_name_modality, parse_pair, query_side
from .probe import knn_accuracy, linear_probe
from .ranking import retrieval_extras
from .report import describe_folder, describe_model, write_report
from .retrieval import group_field, group_keys, item_identity, retrieval_metrics
from .zeroshot import DEFAULT_TEMPLATES, class_embeddings, zero_shot_metrics

RESULTS_FILE = "results.json"
#: what ``evaluate(tasks=...)`` can run
TASKS = ("retrieval", "zero_shot", "probe", "geometry", "matryoshka", "minimal_pairs")
#: below this many rows the geometry measures say nothing (and a held-out split is empty)
MIN_GEOMETRY_ROWS = 10


def evaluate(model: JointModel | str | Path, manifest: str | Path, *,
             out_dir: str | Path | None = None, classes: Sequence[str] | None = None,
             templates: Sequence[str] = DEFAULT_TEMPLATES, on_bad_row: OnBadRow = "skip",
             subsets: dict[str, Sequence[str]] | None = None, device: str | None = None,
             batch_size: int = 256, columns: Mapping[str, str] | None = None,
             pair: tuple[str, str] | str = DEFAULT_PAIR, report: bool = True,
             tasks: Sequence[str] | None = None, train_manifest: str | Path | None = None,
             probe_c: float | None = None) -> dict[str, Any]:
    """Retrieval, zero-shot, probes and geometry between two modalities (module docstring).

    ``pair`` names the two fields evaluated against each other (:data:`.pairs.DEFAULT_PAIR`
    by default; any two of the model's modalities, also written ``"audio:text"``, whether or
    not the model was trained on that pair). ``classes`` are zero-shot's class names
    (default: the manifest's distinct labels), ``templates`` its prompts. ``train_manifest``
    (labelled) fits the linear probe (``C``: ``probe_c``, else chosen on a validation
    split) and the k-NN classifier. ``tasks`` names the work, some of :data:`TASKS`; a task
    named that cannot run (no labels, no training manifest, no nested dims …) is a
    :class:`~jointspace.errors.ConfigError` saying why; default: every task the inputs allow.
    ``subsets`` maps a name to labels whose rows are also scored on their own
    (``zero_shot_<name>``, ``retrieval_<name>``, ``retrieval_by_label_<name>``). ``device``:
    ``"auto"`` picks CUDA when available; ``None`` is ``"auto"`` for a folder and leaves a
    given model where it is. ``columns`` maps fields to the manifest's columns (e.g.
    ``{"image": "filepath", "text": "caption"}``), as in ``read_manifest``. With ``out_dir``
    the results go to ``out_dir/results.json`` (and, with ``report``, ``report.html``) and
    the embeddings are cached there: evaluating again embeds nothing. Returns the results.

    >>> evaluate("runs/bound", "shapes/test.csv", pair="audio:text")  # doctest: +SKIP
    """
    started = time.perf_counter()
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    names = parse_pair(pair)
    source = ModelSource(model, device)  # a folder is built only if something is not cached yet
    for m in names:
        source.check(m)  # a clear error before any file is read
    plan = _TaskPlan(tasks, source, train_manifest)
    settings = _Settings(classes, templates, subsets or {}, batch_size, out_dir, on_bad_row,
                         columns, train_manifest, probe_c)
    embedded = _embed_pair(source, manifest, names, settings)
    run = plan.runnable(embedded.labels is not None, embedded.n, manifest, embedded.pairs is not None)
    results: dict[str, Any] = {"manifest": str(manifest), "pair": list(names), "n": embedded.n,
                               "quarantined": embedded.quarantined,
                               "embeddings_from_cache": embedded.from_cache,
                               "device": source.device_name, "tasks": sorted(run)}
    results.update(_scores(source, embedded, run, settings))
    results["metrics"] = flat_metrics(results)
    results["seconds"] = round(time.perf_counter() - started, 2)
    if out_dir is not None:
        _write(out_dir, results, embedded, source if report else None)
    return results


def _write(out_dir: str | Path, results: dict[str, Any], e: "_Embedded",
           report_of: ModelSource | None) -> None:
    """``results.json``, and with ``report_of`` (the model evaluated) ``report.html``."""
    atomic_write_json(Path(out_dir) / RESULTS_FILE, results)
    if report_of is not None and not installed("matplotlib"):
        logger.warning("report.html not written: its plots need matplotlib (%s); results.json "
                       "has every figure", install_hint("report"))
    elif report_of is not None:
        model = (describe_folder(report_of.folder) if report_of.folder is not None
                 else describe_model(report_of.get()))
        write_report(out_dir, results, e.a_emb, e.b_emb, e.keys, e.items, a_ids=e.a_ids,
                     b_ids=e.views.b_ids, model=model)


@dataclass(frozen=True)
class _Settings:
    """The arguments of :func:`evaluate` that its tasks read."""

    classes: Sequence[str] | None
    templates: Sequence[str]
    subsets: dict[str, Sequence[str]]
    batch_size: int
    out_dir: str | Path | None
    on_bad_row: OnBadRow
    columns: Mapping[str, str] | None
    train_manifest: str | Path | None
    probe_c: float | None


@dataclass(frozen=True)
class _Embedded:
    """One pair's embeddings of a manifest, with what the tasks score them by."""

    names: tuple[str, str]
    a_emb: np.ndarray
    b_emb: np.ndarray
    labels: list[str] | None  # None unless every row has a label
    keys: list                # each row's retrieval key (:func:`.retrieval.group_keys`)
    a_ids: list[str]          # each row's ``a`` item identity
    views: "_Views"
    n: int
    quarantined: int
    from_cache: bool
    items: dict[str, list[str]]
    pairs: list[str] | None   # each row's minimal-pair id (:mod:`.minimal_pairs`), if any
    path: str

    @property
    def side(self) -> int:
        """The side zero-shot and the probes classify: the pair's non-text-like one."""
        return query_side(self.names)

    @property
    def query_emb(self) -> np.ndarray:
        return (self.a_emb, self.b_emb)[self.side]


def _embed_pair(source: ModelSource, manifest: str | Path, names: tuple[str, str],
                settings: _Settings) -> _Embedded:
    """Read and embed ``manifest``'s two fields (cached in ``out_dir``), and key its rows."""
    out_dir = settings.out_dir
    embedded = embed_manifest(source, manifest, names, batch_size=settings.batch_size,
                              cache_dir=out_dir, on_bad_row=settings.on_bad_row,
                              columns=settings.columns, quarantine_dir=out_dir)
    data, records = embedded.manifest, embedded.records
    keys, grouped_by = group_keys(records, group_field(names))
    labels = data.labels()
    a_ids, b_ids = ([item_identity(r.fields[f]) for r in records] for f in names)
    a_emb, b_emb = (embedded.embeddings[f] for f in names)
    return _Embedded(names, a_emb, b_emb,
                     labels if labels is not None and len(labels) == len(data) else None,
                     keys, a_ids, _Views(names, keys, a_ids, b_ids, grouped_by), len(data),
                     len(data.bad_rows), embedded.from_cache, embedded.items,
                     read_pair_ids(data.path, [r.line for r in records]), str(data.path))


def _scores(source: ModelSource, e: _Embedded, run: set[str], s: _Settings) -> dict[str, Any]:
    """Every task in ``run`` on the embedded pair, in the order results.json lists them."""
    results: dict[str, Any] = {}
    if "retrieval" in run:
        results.update(e.views(e.a_emb, e.b_emb, e.labels))
    classes, class_emb = None, None
    if "zero_shot" in run:
        classes = sorted(set(e.labels)) if s.classes is None else list(s.classes)
        class_emb = _class_embeddings(source, classes, s.templates, None, s.batch_size, s.out_dir)
        results["zero_shot"] = zero_shot_metrics(e.query_emb, e.labels, classes, class_emb)
        results["zero_shot"]["templates"] = list(s.templates)
    results.update(_subset_scores(e, run, s.subsets, classes, class_emb))
    if "geometry" in run:
        results["geometry"] = geometry_metrics(e.a_emb, e.b_emb, e.names, k=min(10, e.n),
                                               a_items=np.asarray(e.a_ids))
    if "minimal_pairs" in run:
        results["minimal_pairs"] = pair_test(e.names, e.a_emb, e.b_emb, (e.a_ids, e.views.b_ids),
                                             e.pairs, labels=e.labels, keys=e.keys, where=e.path)
    if "probe" in run:
        results.update(_probes(source, s.train_manifest, e.names[e.side], e.query_emb, e.labels,
                               s.batch_size, s.out_dir, s.on_bad_row, s.columns, s.probe_c))
    if "matryoshka" in run:
        results["matryoshka"] = _per_size(source, e.views, e.a_emb, e.b_emb, e.query_emb, e.labels,
                                          classes, s.templates, geometry="geometry" in run,
                                          batch_size=s.batch_size, cache_dir=s.out_dir)
    return results


def _subset_scores(e: _Embedded, run: set[str], subsets: dict[str, Sequence[str]],
                   classes: list[str] | None, class_emb: np.ndarray | None) -> dict[str, Any]:
    """Zero-shot and retrieval on each subset's rows alone (labelled manifests only)."""
    out: dict[str, Any] = {}
    for name, subset_labels in subsets.items() if e.labels is not None else ():
        wanted = set(subset_labels)
        rows = [i for i, label in enumerate(e.labels) if label in wanted]
        if not rows:
            continue
        labels = [e.labels[i] for i in rows]
        if "zero_shot" in run:
            out[f"zero_shot_{name}"] = zero_shot_metrics(e.query_emb[rows], labels, classes, class_emb)
        if "retrieval" in run:
            subset = e.views.subset(rows)(e.a_emb[rows], e.b_emb[rows], labels)
            out.update({f"{view}_{name}": value for view, value in subset.items()})
    return out


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
        self._drop("zero_shot", None if class_name_modality(source.config.towers) else
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

    def runnable(self, labelled: bool, n_rows: int, manifest: str | Path, paired: bool) -> set[str]:
        """The tasks to run, once the manifest has been read."""
        self._drop("minimal_pairs", None if paired else
                   f"minimal_pairs needs a {PAIR_COLUMN!r} column naming pairs in {manifest}")
        for task in ("zero_shot", "probe"):
            self._drop(task, None if labelled else f"{task} needs a label on every row of {manifest}")
        self._drop("geometry", None if n_rows >= MIN_GEOMETRY_ROWS else
                   f"geometry needs at least {MIN_GEOMETRY_ROWS} rows; {manifest} has {n_rows}")
        return set(self.asked)


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


def _per_size(source: ModelSource, views: _Views, a_emb: np.ndarray, b_emb: np.ndarray,
              query_emb: np.ndarray, labels: list[str], classes: Sequence[str] | None,
              templates: Sequence[str], geometry: bool = False, batch_size: int = 256,
              cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Retrieval, zero-shot accuracy and (with ``geometry``) the geometry measures at
    each nested (Matryoshka) size."""
    out: dict[str, Any] = {}
    for k in source.config.nested_dims():
        # the renormalised prefix of a unit vector equals that of the raw embedding
        a_k, b_k = prefix_normalise(a_emb, k), prefix_normalise(b_emb, k)
        entry: dict[str, Any] = {"retrieval": views(a_k, b_k, None)["retrieval"]}
        if classes:
            class_emb = _class_embeddings(source, classes, templates, k, batch_size, cache_dir)
            z = zero_shot_metrics(prefix_normalise(query_emb, k), labels, classes, class_emb)
            entry["zero_shot"] = {key: z[key] for key in ("top1", "top5", "chance_top1",
                                                          "mean_per_class_recall")}
        if geometry and len(a_k) >= MIN_GEOMETRY_ROWS:
            entry["geometry"] = {key: v for key, v in geometry_metrics(
                a_k, b_k, views.names, k=min(10, len(a_k)), a_items=np.asarray(views.a_ids)).items()
                if not key.startswith("hubs_")}
        out[str(k)] = entry
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

