"""Cross-modal retrieval metrics: Recall@K and median rank, per row or per group.

Pure functions over numpy arrays; memory is O(block · N), never O(N²).

Ranks and the tie rule
----------------------
*Strict* (no groups): query ``i`` has exactly one positive, gallery row ``i``.
Its 0-based rank is the number of *other* gallery items scoring ``>=`` it, so
a tie counts against the positive (pessimistic).

*Group-aware* (``query_groups`` and ``gallery_groups``): the positives of query
``i`` are all gallery items whose group key equals query ``i``'s. The rank is
that of the best-scoring positive, counting only *negatives* (items of other
groups) that score ``>=`` it. Ties among positives never count; a tie between
the best positive and a negative counts against the query. So ``rank < k``
exactly when some positive is in the top k under the worst order of ties. With
one item per group the two definitions coincide.

Scores are computed once per distinct embedding row, so identical rows (the
same caption embedded twice) tie exactly; a BLAS kernel would otherwise be free
to round the same dot product differently at different positions.

Strict ceiling
--------------
With duplicate captions no model reaches strict R@K = 1. For a caption shared
by ``m`` rows (``m`` = the size of its ``text_keys`` group), any model embeds
the ``m`` texts identically, so under the pessimistic rule above:

* image→text: the paired text ties with its ``m - 1`` copies, so its rank is at
  least ``m - 1``: the best possible is a hit iff ``m <= k``;
* text→image: the ``m`` identical queries share one ranking of the images, in
  which at most ``min(k, m)`` of their ``m`` distinct positives have a
  pessimistic rank below ``k``: the best possible is ``min(k, m) / m`` of them.

``strict_ceiling`` averages these over rows: the supremum of the strict
figures over all models (a model that puts each caption's images first, in any
strict order, reaches both at once). It assumes rows with equal ``text_keys``
have identical texts and distinct images. Under a *random* tie order instead,
the expected image→text figure would be ``min(k, m) / m`` too; we use the
pessimistic rule throughout, so the ceiling bounds the strict figures reported.

Chance
------
Expected Recall@K of scores in random order (no ties): for a query with ``m``
positives among ``N`` gallery items, ``1 - C(N - m, k) / C(N, k)``, averaged
over queries; strictly (``m = 1``) that is ``k / N``.

``retrieval_metrics`` layout
----------------------------
::

    {"n": 700, "n_groups": 596,
     "text_to_image": {"R@1": …, "R@5": …, "R@10": …, "median_rank": …},  # group-aware
     "image_to_text": {…},                                                  # (strict if no groups)
     "chance": {"R@1": …, "R@5": …, "R@10": …},          # chance of the figures above
     "strict": {                                          # only with include_strict=True
         "text_to_image": {"R@1": …, …, "median_rank": …},
         "image_to_text": {…},
         "ceiling": {"text_to_image": {"R@1": …, …}, "image_to_text": {…}},
         "chance": {"R@1": …, …}}}

``median_rank`` is 1-based (the median of ``rank + 1``), as usual in the
retrieval literature; ``R@k`` is the fraction of queries with 0-based rank < k.
"""
from __future__ import annotations

from typing import Any, Hashable, Sequence

import numpy as np

Keys = Sequence[Hashable] | np.ndarray
DEFAULT_KS = (1, 5, 10)


def group_ids(*key_lists: Keys) -> tuple[np.ndarray, ...]:
    """Map each list of hashable group keys to int64 ids in one shared id space.

    Integer numpy arrays are mapped with ``np.unique``; anything else (strings,
    tuples, ``None``, mixed types) through a dictionary.
    """
    if all(isinstance(k, np.ndarray) and k.dtype.kind in "biu" for k in key_lists):
        _, inverse = np.unique(np.concatenate([k.reshape(-1) for k in key_lists]), return_inverse=True)
        inverse = inverse.reshape(-1).astype(np.int64)
    else:
        index: dict[Hashable, int] = {}
        flat = [key for keys in key_lists
                for key in (keys.tolist() if isinstance(keys, np.ndarray) else keys)]
        inverse = np.fromiter((index.setdefault(key, len(index)) for key in flat),
                              dtype=np.int64, count=len(flat))
    out, start = [], 0
    for keys in key_lists:
        out.append(inverse[start:start + len(keys)])
        start += len(keys)
    return tuple(out)


def group_field(fields: Sequence[str]) -> str:
    """The field whose exact items group rows for retrieval: the text when there is
    one (identical captions are the same answer), else the last field."""
    return "text" if "text" in fields else fields[-1]


def group_keys(records: Sequence[Any], field: str = "text") -> tuple[list[tuple[str, str]], str]:
    """One retrieval group key per record, and which field the keys came from.

    A record's ``group`` (when the manifest has that column and the row a value)
    is its key, else its exact ``field`` item (the caption, or a file's path);
    the two kinds never collide. The second value is ``field``, ``"group"`` or
    ``"group, else <field>"``.
    """
    keys = []
    for r in records:
        group = getattr(r, "group", None)
        keys.append(("group", str(group)) if group not in (None, "")
                    else (field, str(r.fields[field]) if hasattr(r, "fields") else getattr(r, field)))
    kinds = {kind for kind, _ in keys}
    return keys, "group" if kinds == {"group"} else field if kinds == {field} else f"group, else {field}"


def _unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The distinct rows of ``x`` (bytewise) and each row's index among them;
    ``(x, None)`` when every row is distinct."""
    x = np.ascontiguousarray(x)
    if len(x) == 0:
        return x, None
    rows = x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).reshape(-1)
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    return (x, None) if len(first) == len(x) else (x[first], inverse.reshape(-1))


def score_blocks(queries: np.ndarray, gallery: np.ndarray, block: int):
    """Yield ``(query indices, scores [len(indices), len(gallery)])`` in blocks of at
    most ``block`` queries. Each distinct query row is scored against each distinct
    gallery row exactly once, so identical rows get bitwise identical scores."""
    ug, ginv = _unique_rows(gallery)
    uq, qinv = _unique_rows(queries)
    if qinv is None:  # all queries distinct: plain blocks
        for start in range(0, len(queries), block):
            sims = queries[start:start + block] @ ug.T
            yield np.arange(start, start + len(sims)), sims if ginv is None else sims[:, ginv]
        return
    order = np.argsort(qinv, kind="stable")  # queries grouped by their distinct row
    bounds = np.concatenate([[0], np.cumsum(np.bincount(qinv, minlength=len(uq)))])
    for u0 in range(0, len(uq), block):
        u1 = min(u0 + block, len(uq))
        sims_u = uq[u0:u1] @ ug.T
        members = order[bounds[u0]:bounds[u1]]
        for c in range(0, len(members), block):
            idx = members[c:c + block]
            sims = sims_u[qinv[idx] - u0]
            yield idx, sims if ginv is None else sims[:, ginv]


def positive_ranks(queries: np.ndarray, gallery: np.ndarray, query_groups: Keys | None = None,
                   gallery_groups: Keys | None = None, *, block: int = 1024) -> np.ndarray:
    """0-based rank of each query's positive in the gallery (see the module docstring).

    Without groups (strict) query ``i`` is paired with gallery row ``i`` and
    ties count against it. With groups, the rank is that of the best-scoring
    gallery item in the query's group, counting the other groups' items that
    score ``>=`` it. Every query's group must occur in the gallery.

    >>> x = np.eye(2, dtype=np.float32)[[0, 0, 1]]  # rows 0 and 1 identical
    >>> positive_ranks(x, x).tolist()               # strict: each ties with the other
    [1, 1, 0]
    >>> positive_ranks(x, x, ["a", "a", "b"], ["a", "a", "b"]).tolist()
    [0, 0, 0]
    """
    queries, gallery = np.asarray(queries), np.asarray(gallery)
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}")
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"need [N, d] queries and [M, d] gallery, got {queries.shape} and {gallery.shape}")
    if (query_groups is None) != (gallery_groups is None):
        raise ValueError("give both query_groups and gallery_groups, or neither")
    if query_groups is None:
        if len(queries) != len(gallery):
            raise ValueError(f"paired retrieval needs equal shapes, got {queries.shape} and {gallery.shape}")
        qg = gg = np.arange(len(queries))
    else:
        if len(query_groups) != len(queries) or len(gallery_groups) != len(gallery):
            raise ValueError(f"{len(query_groups)} query groups for {len(queries)} queries, "
                             f"{len(gallery_groups)} gallery groups for {len(gallery)} items")
        qg, gg = group_ids(query_groups, gallery_groups)
        missing = np.flatnonzero(~np.isin(qg, gg))
        if len(missing):
            raise ValueError(f"{len(missing)} queries have no gallery item in their group "
                             f"(first: query {missing[0]})")
    if not (np.isfinite(queries).all() and np.isfinite(gallery).all()):
        raise ValueError("embeddings contain NaN or infinite values")
    # the gallery items of each group, contiguous: members[starts[g]:starts[g] + sizes[g]]
    members = np.argsort(gg, kind="stable")
    sizes = np.bincount(gg, minlength=int(max(qg.max(initial=-1), gg.max(initial=-1))) + 1)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ranks = np.empty(len(queries), dtype=np.int64)
    for idx, sims in score_blocks(queries, gallery, block):
        # every (query row, positive column) pair of the block, grouped by row
        lens = sizes[qg[idx]]
        rows = np.repeat(np.arange(len(idx)), lens)
        offsets = np.cumsum(lens) - lens
        cols = members[np.repeat(starts[qg[idx]] - offsets, lens) + np.arange(lens.sum())]
        scores = sims[rows, cols]
        best = np.maximum.reduceat(scores, offsets)
        positives_at_best = np.bincount(rows[scores >= best[rows]], minlength=len(idx))
        ranks[idx] = np.count_nonzero(sims >= best[:, None], axis=1) - positives_at_best
    return ranks


def rank_summary(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``{"R@1": …, …, "median_rank": …}`` from 0-based ranks (median rank is 1-based)."""
    out = {f"R@{k}": float((ranks < k).mean()) for k in ks}
    out["median_rank"] = float(np.median(ranks + 1))
    return out


def recall_at_k(queries: np.ndarray, gallery: np.ndarray, ks: Sequence[int] = DEFAULT_KS,
                query_groups: Keys | None = None, gallery_groups: Keys | None = None
                ) -> dict[str, float]:
    """``{"R@1": …, "R@5": …}``: the fraction of queries with a positive in the top k.

    Strict (pair ``i`` ↔ ``i``) without groups, group-aware with them.
    """
    ranks = positive_ranks(queries, gallery, query_groups, gallery_groups)
    return {f"R@{k}": float((ranks < k).mean()) for k in ks}


def chance_recall(query_groups: Keys | None, gallery_groups: Keys | None, n_gallery: int,
                  ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Expected Recall@K of a random ranking: mean of ``1 - C(N - m, k) / C(N, k)``,
    ``m`` = the number of gallery items in the query's group (1 without groups)."""
    if query_groups is None:
        m = np.ones(1)
    else:
        qg, gg = group_ids(query_groups, gallery_groups)
        m = np.bincount(gg, minlength=int(max(qg.max(initial=0), gg.max(initial=0)) + 1))[qg]
    out = {}
    for k in ks:
        miss = np.ones(len(m))
        for t in range(min(k, n_gallery)):  # P(no positive in the first k of a random order)
            miss *= np.clip((n_gallery - m - t) / (n_gallery - t), 0, None)
        out[f"R@{k}"] = float((1 - miss).mean())
    return out


def strict_ceiling(text_keys: Keys, ks: Sequence[int] = DEFAULT_KS,
                   image_keys: Keys | None = None,
                   names: tuple[str, str] = ("image", "text")) -> dict[str, dict[str, float]]:
    """The best strict R@K any model can reach when rows with equal ``text_keys``
    have identical texts and rows with equal ``image_keys`` identical images
    (pessimistic ties; without ``image_keys`` every image is distinct).

    Identical items tie, and a tie counts against the query, so a query's
    paired row can rank no better than the number of gallery copies of its
    item. All queries with one key share one ranking; the best ranking puts
    the gallery groups of their paired rows first, in the order that makes
    the most of them hits: a 0/1 knapsack of capacity ``k`` over those groups
    (weight = the group's size, value = how many of the queries it answers).
    Without repeated images this reduces to ``min(k, m) / m`` text→image and
    ``[m ≤ k]`` image→text for a caption shared by ``m`` rows. ``names`` are the
    modalities in the roles of image and text (the keys of the result).
    """
    i_to_t, t_to_i = _directions(names)
    (t,) = group_ids(text_keys)
    if image_keys is None:  # the closed form, without a loop over groups
        m = np.bincount(t)[t].astype(np.float64)
        return {t_to_i: {f"R@{k}": float((np.minimum(k, m) / m).mean()) for k in ks},
                i_to_t: {f"R@{k}": float((m <= k).mean()) for k in ks}}
    (i,) = group_ids(image_keys)
    if len(i) != len(t):
        raise ValueError(f"{len(i)} image keys for {len(t)} text keys")
    return {t_to_i: {f"R@{k}": _ceiling_one_way(t, i, k) for k in ks},
            i_to_t: {f"R@{k}": _ceiling_one_way(i, t, k) for k in ks}}


def _directions(names: tuple[str, str]) -> tuple[str, str]:
    """``("audio", "text")`` → ``("audio_to_text", "text_to_audio")``."""
    a, b = names
    if a == b:
        raise ValueError(f"retrieval needs two different modalities, got {names}")
    return f"{a}_to_{b}", f"{b}_to_{a}"


def _ceiling_one_way(query_ids: np.ndarray, gallery_ids: np.ndarray, k: int) -> float:
    gallery_size = np.bincount(gallery_ids)
    hits = 0
    order = np.lexsort((gallery_ids, query_ids))
    q_sorted, g_sorted = query_ids[order], gallery_ids[order]
    starts = np.flatnonzero(np.r_[True, q_sorted[1:] != q_sorted[:-1]])
    for lo, hi in zip(starts, np.r_[starts[1:], len(order)]):
        targets, answered = np.unique(g_sorted[lo:hi], return_counts=True)
        best = np.zeros(k + 1, dtype=np.int64)  # best[c]: most queries answered within capacity c
        for weight, value in zip(gallery_size[targets], answered):
            if weight <= k:
                best[weight:] = np.maximum(best[weight:], best[:k + 1 - weight] + value)
        hits += int(best[k])
    return hits / len(query_ids)


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray, groups: Keys | None = None,
                      ks: Sequence[int] = DEFAULT_KS, *, text_keys: Keys | None = None,
                      image_keys: Keys | None = None, include_strict: bool = True,
                      block: int = 1024, names: tuple[str, str] = ("image", "text")) -> dict[str, Any]:
    """Text→image and image→text retrieval of paired rows; layout in the module docstring.

    ``groups`` (one hashable key per row, e.g. the caption) makes the headline
    figures group-aware: any item of the query's group is a hit. ``text_keys``
    marks rows whose texts are identical, for the strict ceiling; it defaults
    to ``groups`` (right when groups are exact captions) and, without either,
    every row is distinct (ceiling 1). ``image_keys`` marks rows with identical
    images (e.g. the image path where one image has several caption rows).
    ``include_strict=False`` leaves out the
    strict block (e.g. for label groups, whose strict figures are the same).
    ``names`` are the two sides' modalities, for any pair (``("audio", "text")``
    gives ``text_to_audio`` and ``audio_to_text``); ``text_keys`` and
    ``image_keys`` then mark identical items of the second and first side.
    """
    image_emb, text_emb = np.asarray(image_emb), np.asarray(text_emb)
    n = len(image_emb)
    if text_emb.shape != image_emb.shape:
        raise ValueError(f"paired retrieval needs equal shapes, got {image_emb.shape} and {text_emb.shape}")
    if groups is not None and len(groups) != n:
        raise ValueError(f"{len(groups)} group keys for {n} pairs")
    if n == 0:
        raise ValueError("no pairs to evaluate")
    n_groups = n if groups is None else int(np.unique(group_ids(groups)[0]).size)
    out: dict[str, Any] = {"n": n, "n_groups": n_groups}
    a_to_b, b_to_a = _directions(names)
    pairs = {b_to_a: (text_emb, image_emb), a_to_b: (image_emb, text_emb)}
    strict = {}
    if groups is None or include_strict:
        strict = {d: positive_ranks(q, g, block=block) for d, (q, g) in pairs.items()}
    for direction, (q, g) in pairs.items():
        ranks = strict[direction] if groups is None else positive_ranks(q, g, groups, groups, block=block)
        out[direction] = rank_summary(ranks, ks)
    out["chance"] = chance_recall(groups, groups, n, ks)
    if include_strict:
        keys = text_keys if text_keys is not None else groups if groups is not None else np.arange(n)
        if len(keys) != n:
            raise ValueError(f"{len(keys)} text keys for {n} pairs")
        out["strict"] = {**{d: rank_summary(r, ks) for d, r in strict.items()},
                         "ceiling": strict_ceiling(keys, ks, image_keys, names),
                         "chance": chance_recall(None, None, n, ks)}
    return out
