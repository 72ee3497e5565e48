"""More retrieval views over the same embeddings: mAP@k, and hubness-reduced scoring.

**mAP@k** (group-aware, as :mod:`.retrieval`): a query's positives are the
gallery items of its group. Gallery items are ranked by score with ties
broken against the query (negatives before positives at equal score, the
pessimistic rule of :mod:`.retrieval`), and

    AP@k = (1 / min(k, #positives)) · Σ_{r ≤ k} precision@r · [item r is a positive]

averaged over queries. A query whose positives fill its first
``min(k, #positives)`` places scores 1.

**CSLS** (cross-domain similarity local scaling, Conneau et al. 2018): a
gallery item ``g`` that is close to many queries (a *hub*) is penalised by
its mean similarity ``r(g)`` to its ``k`` nearest queries;
``CSLS(q, g) = 2 cos(q, g) − r(g) − r(q)``. For one query ``r(q)`` is a
constant, so the ranking is that of ``2 cos(q, g) − r(g)``, which
:func:`csls_embeddings` turns into a dot product of augmented vectors, so the
group-aware ranks of :func:`~.retrieval.positive_ranks` apply unchanged.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .ranks import Keys, Positives, rank_summary, ranks_of, score_blocks
from .retrieval import directions


def mean_average_precision(queries: np.ndarray, gallery: np.ndarray, query_groups: Keys | None = None,
                           gallery_groups: Keys | None = None, k: int = 10,
                           block: int = 256, *, positives: Positives | None = None) -> float:
    """mAP@k of queries against a gallery (module docstring): strict pairing without
    groups, group-aware with them, or any relation given as ``positives``."""
    queries, gallery = np.asarray(queries), np.asarray(gallery)
    if positives is None and query_groups is None:
        if len(queries) != len(gallery):
            raise ValueError(f"paired retrieval needs equal sizes, got {len(queries)} and {len(gallery)}")
        positives = Positives.paired(len(queries))
    elif positives is None:
        positives = Positives.from_groups(query_groups, gallery_groups)
    n_pos = positives.counts()
    if (n_pos == 0).any():
        raise ValueError("every query needs at least one gallery item in its group")
    k = min(k, len(gallery))
    total = 0.0
    for idx, sims in score_blocks(queries, gallery, block):
        positive = positives.mask(idx)
        # sort by score descending, negatives first at equal score (pessimistic ties)
        order = np.lexsort((positive, -sims), axis=-1)[:, :k]
        hits = np.take_along_axis(positive, order, axis=1).astype(np.float64)
        precision = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
        total += float(((precision * hits).sum(axis=1) / np.minimum(k, n_pos[idx])).sum())
    return total / len(queries)


def csls_embeddings(queries: np.ndarray, gallery: np.ndarray, k: int = 10,
                    block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``(q', g')`` with ``q'·g' = 2 q·g − r(g)``: CSLS ranking as plain dot products.

    ``r(g)`` is the mean cosine of ``g`` to its ``k`` most similar queries
    (computed blockwise over the gallery, O(block · N) memory).
    """
    queries, gallery = np.asarray(queries, np.float64), np.asarray(gallery, np.float64)
    k = min(k, len(queries))
    r = np.empty(len(gallery))
    for start in range(0, len(gallery), block):
        sims = gallery[start:start + block] @ queries.T
        r[start:start + len(sims)] = np.partition(sims, -k, axis=1)[:, -k:].mean(axis=1)
    q = np.hstack([2 * queries, -np.ones((len(queries), 1))])
    g = np.hstack([gallery, r[:, None]])
    return q, g


def retrieval_extras(a_emb: np.ndarray, b_emb: np.ndarray, groups: Keys | None,
                     names: tuple[str, str], ks: Sequence[int] = (1, 5, 10),
                     map_k: int = 10, csls_k: int = 10, *,
                     image_keys: Keys | None = None) -> dict[str, dict[str, float]]:
    """Per direction (``a_to_b``, ``b_to_a``), under the protocol of :mod:`.retrieval`
    (``image_keys`` marks rows naming the same ``a`` item): ``mAP@k`` with plain
    scoring, and Recall@K, median rank and mAP@k with CSLS scoring."""
    out: dict[str, dict[str, float]] = {}
    for d in directions(a_emb, b_emb, groups, image_keys, names):
        cq, cg = csls_embeddings(d.queries, d.gallery, csls_k)
        ranks = ranks_of(cq, cg, d.positives)
        out[d.name] = {
            f"mAP@{map_k}": mean_average_precision(d.queries, d.gallery, k=map_k, positives=d.positives),
            **{f"csls_{key}": value for key, value in rank_summary(ranks, ks).items()},
            f"csls_mAP@{map_k}": mean_average_precision(cq, cg, k=map_k, positives=d.positives)}
    return out
