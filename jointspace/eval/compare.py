"""``compare``: how alike two models' spaces are on the same inputs.

Both models embed the same manifest rows (each with its own embedding cache
in the output folder); for every modality they share, or the ones asked for,
:func:`~.similarity.compare_spaces` measures mutual k-NN alignment, linear
CKA and cross-space retrieval through an orthogonal map. With two compared
modalities (model A's trained pair among them, else the first two) each model is
also scored by itself on that pair, as ``evaluate`` would (retrieval; zero-shot
when every row has a label and the model a text-like tower). The models may
differ in embedding size. ``results.json``::

    {"model_a", "model_b", "manifest", "n", "quarantined", "modalities": ["image", "text"],
     "<modality>": {"mutual_knn@10": …, "linear_cka": …,
                    "procrustes": {"R@1", "R@5", "R@10", "n_test", "fit_residual"},
                    "similarity_correlation": …,   # Pearson r of sampled item–item cosines, A vs B
                    "least_shared_neighbours": [{"row", "shared"}, …]},  # of the k neighbours
     "pair": ["image", "text"],                       # with two compared modalities:
     "own": {"a": {"retrieval": {…as evaluate's…}, "zero_shot": {"top1", "top5", "chance_top1",
                                                                 "n_classes", "mean_per_class_recall"}},
             "b": {…}},
     "pair_similarity": {"correlation", "correlation_all", "n_paired", "n_unpaired"},
     "disagreements": {"text_to_image": [{"row", "rank_a", "rank_b", "answer_a", "answer_b"}, …],
                       "image_to_text": […]},
     "seconds": …}

Chance Procrustes R@1 is ``1 / n_test``. ``pair_similarity`` correlates cos(a_i, b_j) in
the two spaces for the same pairs (``correlation``: the paired rows ``i = j``;
``correlation_all``: with seeded unpaired ones). ``disagreements`` are the queries whose
best positive's (1-based) rank differs most between the models (on a log scale; a repeated
query once); a ``row`` is a manifest row (an ``a`` item's first row for ``a→b``),
``answer_a`` the row of model A's first answer.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..config import modality_of
from ..data.manifest import OnBadRow, column_advice, manifest_columns, read_manifest
from ..errors import ConfigError
from ..fileio import atomic_write_json
from ..model import JointModel, load, resolve_device
from .embed import embed_manifest
from .geometry import unit_rows
from .pairs import class_name_modality, query_side
from .report import describe_folder
from .report.compare_page import write_compare_report
from .report.qualitative import ranked_directions
from .retrieval import group_field, group_keys, item_identity, retrieval_metrics
from .run import RESULTS_FILE
from .similarity import compare_spaces, shared_neighbours
from .zeroshot import DEFAULT_TEMPLATES, class_embeddings, zero_shot_metrics

#: queries and items shown (and listed in results.json) where the two models disagree most
SHOWN = 8
#: pairs of items whose similarity the scatter plots in both spaces
SCATTER_POINTS = 1500
ZERO_SHOT_KEYS = ("top1", "top5", "chance_top1", "n_classes", "mean_per_class_recall")


def compare(model_a: str | Path, model_b: str | Path, manifest: str | Path, *,
            modalities: Sequence[str] | None = None, out_dir: str | Path | None = None,
            k: int = 10, seed: int = 0, device: str = "auto", batch_size: int = 256,
            on_bad_row: OnBadRow = "skip",
            columns: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Compare the spaces of two model folders on ``manifest``'s rows.

    ``modalities`` defaults to every modality both models have a tower for and
    the manifest has a column for. With ``out_dir``: ``results.json``,
    ``report.html`` and both models' embedding caches there (without it nothing
    is written; ``jointspace compare`` defaults to ``MODEL_A/compare-<B's name>``,
    see :func:`default_out`). ``k`` (mutual k-NN's neighbours) must be in
    ``[1, N − 1]`` for the ``N`` rows compared, which must be at least 4 (half fit
    the Procrustes map, half test it): a :class:`ConfigError` otherwise, raised
    before anything is embedded.

    >>> compare("runs/a", "runs/b", "shapes/test.csv", out_dir="runs/a_vs_b")  # doctest: +SKIP
    """
    started = time.perf_counter()
    if k < 1:
        raise ConfigError(f"k (-k) must be at least 1: the neighbours mutual k-NN compares; got {k}")
    models: list[JointModel] = [load(m).to(resolve_device(device)) for m in (model_a, model_b)]
    shared = [m for m in models[0].towers if m in models[1].towers]
    if modalities is None:
        header = manifest_columns(manifest)
        modalities = [m for m in shared if (columns or {}).get(m, m) in header]
        if not modalities and shared:
            wanted = {m: (columns or {}).get(m, m) for m in shared}
            raise ConfigError(f"manifest {manifest} has no column for the modalities both models "
                              f"have ({', '.join(shared)}; columns: {', '.join(header) or 'none'}) — "
                              + column_advice(manifest, header, wanted))
    missing = [m for m in modalities if m not in shared]
    if missing or not modalities:
        raise ConfigError(f"both models need a tower for each compared modality; shared: "
                          f"{', '.join(shared) or 'none'}, asked for: {', '.join(modalities) or 'none'}")
    data = read_manifest(manifest, required=tuple(modalities), on_bad_row=on_bad_row,
                         columns=columns, quarantine_dir=out_dir)
    if len(data) < 4:
        raise ConfigError(f"compare needs at least 4 valid rows (half fit the Procrustes map, half "
                          f"test it); {manifest} has {len(data)}")
    if k > len(data) - 1:
        raise ConfigError(f"k (-k) is {k}, but each of the {len(data)} rows compared has only "
                          f"{len(data) - 1} others; choose k well below that (at k = {len(data) - 1} "
                          "every row's neighbours are all the others, in any two spaces)")
    results: dict[str, Any] = {"model_a": str(model_a), "model_b": str(model_b),
                               "manifest": str(manifest), "n": len(data),
                               "quarantined": len(data.bad_rows), "modalities": list(modalities)}
    emb = [{m: embed_manifest(model, data, [m], batch_size=batch_size,
                              cache_dir=out_dir).embeddings[m] for m in modalities} for model in models]
    scatters: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # the report's plots
    for modality in modalities:
        results[modality], scatters[f"pairs of {modality} items"] = _space_figures(
            emb[0][modality], emb[1][modality], k, seed)
    pair = _pair(models[0], modalities)
    if pair is not None:
        figures, scatters[f"{pair[0]}–{pair[1]} pairs"] = _pair_figures(models, data, emb, pair, seed)
        results.update(figures)
    results["seconds"] = round(time.perf_counter() - started, 2)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / RESULTS_FILE, results)
        write_compare_report(Path(out_dir), results, emb, _items(data, modalities),
                             [describe_folder(m) for m in (model_a, model_b)], scatters)
    return results


def default_out(model_a: str | Path, model_b: str | Path) -> Path:
    """Where ``jointspace compare`` writes without ``--out``: ``MODEL_A/compare-<B's folder
    name>`` (as ``eval`` writes to ``MODEL/eval``).

    >>> default_out("runs/a", "runs/b")
    PosixPath('runs/a/compare-b')
    """
    return Path(model_a) / f"compare-{Path(model_b).resolve().name}"


def _items(data: Any, modalities: Sequence[str]) -> dict[str, list[str]]:
    return {m: [str(r.fields[m]) for r in data.records] for m in modalities}


def _space_figures(x: np.ndarray, y: np.ndarray, k: int, seed: int
                   ) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`~.similarity.compare_spaces` of one modality's two spaces, the items sharing
    the fewest neighbours across them, and sampled item–item cosines in each (for the plot)."""
    out = compare_spaces(x, y, k=k, seed=seed)
    overlap = shared_neighbours(x, y, k)
    out["least_shared_neighbours"] = [{"row": int(i), "shared": int(overlap[i])}
                                      for i in np.argsort(overlap, kind="stable")[:SHOWN]]
    sx, sy = _item_similarities(x, y, seed)
    out["similarity_correlation"] = _correlation(sx, sy)
    return out, (sx, sy, np.zeros(len(sx), dtype=bool))


def _pair(model: JointModel, modalities: Sequence[str]) -> tuple[str, str] | None:
    """The two compared modalities each model is scored on by itself: model A's first
    trained pair among them, else the first two compared (None with only one)."""
    for p in model.pairs:
        fields = (modality_of(p.a), modality_of(p.b))
        if fields[0] != fields[1] and all(f in modalities for f in fields):
            return fields
    return (modalities[0], modalities[1]) if len(modalities) > 1 else None


def _pair_figures(models: list[JointModel], data: Any, emb: list[dict[str, np.ndarray]],
                  pair: tuple[str, str], seed: int
                  ) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each model's own retrieval and zero-shot on ``pair``, the similarities of the same
    pairs in both spaces (and the pairs' cosines in each, for the plot), and the queries
    whose rank the two disagree on most."""
    records = data.records
    keys, grouped_by = group_keys(records, group_field(pair))
    a_ids, b_ids = ([item_identity(r.fields[f]) for r in records] for f in pair)
    labels = data.labels()
    labels = labels if len(labels) == len(records) else None
    own = {}
    for side, model, e in zip("ab", models, emb):
        own[side] = {"retrieval": {"grouped_by": grouped_by, **retrieval_metrics(
            e[pair[0]], e[pair[1]], keys, text_keys=b_ids, image_keys=a_ids, names=pair)}}
        text_side = class_name_modality(model.modalities)
        if labels is not None and text_side is not None:
            classes = sorted(set(labels))
            z = zero_shot_metrics(e[pair[query_side(pair)]], labels, classes,
                                  class_embeddings(model, classes, DEFAULT_TEMPLATES))
            own[side]["zero_shot"] = {key: z[key] for key in ZERO_SHOT_KEYS}
    x, y, paired = _pair_similarities(emb, pair, seed)
    ranked = [ranked_directions(e[pair[0]], e[pair[1]], keys, a_ids, pair) for e in emb]
    disagreements = {}
    for ra, rb in zip(*ranked):
        gap = np.abs(np.log1p(ra.ranks) - np.log1p(rb.ranks))
        ids = b_ids if ra.query_side == pair[1] else a_ids
        seen: set[str] = set()  # identical queries (a repeated caption) are listed once
        found = disagreements[ra.direction.name] = []
        for q in np.argsort(-gap, kind="stable"):
            row = int(ra.query_row[q])
            if len(found) == SHOWN or gap[q] == 0:
                break
            if ids[row] not in seen:
                seen.add(ids[row])
                found.append({"row": row, "rank_a": int(ra.ranks[q]) + 1, "rank_b": int(rb.ranks[q]) + 1,
                              "answer_a": ra.answers(q, 1).answers[0][0],
                              "answer_b": rb.answers(q, 1).answers[0][0]})
    return {"pair": list(pair), "own": own,
            "pair_similarity": {"correlation": _correlation(x[paired], y[paired]),
                                "correlation_all": _correlation(x, y), "n_paired": int(paired.sum()),
                                "n_unpaired": int((~paired).sum())},
            "disagreements": disagreements}, (x, y, paired)


def _pair_similarities(emb: list[dict[str, np.ndarray]], pair: tuple[str, str], seed: int,
                       n: int = SCATTER_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cos(a_i, b_j) in model A's and model B's space for the same ``(i, j)``: every paired
    row (up to ``n``) and ``n`` seeded unpaired ones; and which are paired."""
    rows = len(emb[0][pair[0]])
    rng = np.random.default_rng(seed)
    i_pos = np.sort(rng.choice(rows, size=min(n, rows), replace=False))
    i_neg, j_neg = rng.integers(0, rows, n), rng.integers(0, rows, n)
    keep = i_neg != j_neg
    i = np.concatenate([i_pos, i_neg[keep]])
    j = np.concatenate([i_pos, j_neg[keep]])
    x, y = ((unit_rows(e[pair[0]][i]) * unit_rows(e[pair[1]][j])).sum(1) for e in emb)
    return x, y, np.arange(len(i)) < len(i_pos)


def _item_similarities(x: np.ndarray, y: np.ndarray, seed: int,
                       n: int = SCATTER_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """cos(item_i, item_j) of ``n`` seeded pairs ``i ≠ j`` in both spaces."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(x), n), rng.integers(0, len(x), n)
    keep = i != j
    i, j = i[keep], j[keep]
    sims = [(unit_rows(e[i]) * unit_rows(e[j])).sum(1) for e in (x, y)]
    return sims[0], sims[1]


def _correlation(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's r (None for fewer than 3 points or a constant side)."""
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])
