"""The ranking kernel of retrieval: which gallery items answer a query, and the rank
of its best answer. Memory is O(block · gallery), never O(queries · gallery).

Positives are given as *keys*: a query and a gallery item match when they share
a key (a caption, a group, a label, a row id). A query or an item may carry
several keys (an image with five captions), so the relation is held as two
sparse incidence matrices, queries × keys and gallery × keys, and the positives
of a block of queries are one sparse product.

Tie rule: the 0-based rank of a query is the number of *negatives* scoring
``>=`` its best-scoring positive. Ties among positives never count; a tie
between the best positive and a negative counts against the query, so
``rank < k`` exactly when some positive is in the top k under the worst order of
ties. Scores are computed once per distinct embedding row, so identical rows
(the same caption embedded twice) tie exactly.
"""
from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np
from scipy import sparse

Keys = Sequence[Hashable] | np.ndarray
DEFAULT_KS = (1, 5, 10)


def group_ids(*key_lists: Keys) -> tuple[np.ndarray, ...]:
    """Map each list of hashable keys to int64 ids in one shared id space
    (integer arrays through ``np.unique``, anything else through a dictionary)."""
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


def incidence(owner: np.ndarray, key: np.ndarray, n_owners: int, n_keys: int) -> sparse.csr_matrix:
    """The 0/1 matrix ``[n_owners, n_keys]`` with a one at each ``(owner[i], key[i])``."""
    m = sparse.csr_matrix((np.ones(len(owner), dtype=np.int32), (owner, key)),
                          shape=(n_owners, n_keys))
    m.sum_duplicates()
    m.data[:] = 1
    return m


class Positives:
    """Which gallery items answer each query: those sharing at least one key with it.

    ``query_keys`` is ``[n_queries, n_keys]``, ``gallery_keys`` ``[n_gallery, n_keys]``
    (sparse 0/1). Build it with :meth:`paired` or :meth:`from_groups`, or directly.
    When every gallery item has exactly one key (the usual case: caption rows,
    labels) a block's mask is a lookup of dense key flags, ``O(block · (keys +
    gallery))`` bytes; otherwise one sparse product per block.

    >>> p = Positives.from_groups(["a", "b"], ["b", "a", "a"])
    >>> p.mask(np.arange(2)).astype(int).tolist()
    [[0, 1, 1], [1, 0, 0]]
    """

    def __init__(self, query_keys: sparse.spmatrix, gallery_keys: sparse.spmatrix) -> None:
        if query_keys.shape[1] != gallery_keys.shape[1]:
            raise ValueError(f"key spaces differ: {query_keys.shape[1]} and {gallery_keys.shape[1]}")
        self.query_keys = sparse.csr_matrix(query_keys)
        gallery_keys = sparse.csr_matrix(gallery_keys)
        self.n_queries, self.n_gallery = query_keys.shape[0], gallery_keys.shape[0]
        self.n_keys = query_keys.shape[1]
        single = bool((np.diff(gallery_keys.indptr) == 1).all())
        #: each gallery item's one key, when every item has exactly one
        self.gallery_key: np.ndarray | None = gallery_keys.indices.copy() if single else None
        self.gallery_keys_t = None if single else sparse.csr_matrix(gallery_keys.T)
        self._counts: np.ndarray | None = None

    @classmethod
    def paired(cls, n: int) -> "Positives":
        """Query ``i`` is answered by gallery item ``i`` only."""
        eye = sparse.identity(n, dtype=np.int32, format="csr")
        return cls(eye, eye)

    @classmethod
    def from_groups(cls, query_groups: Keys, gallery_groups: Keys) -> "Positives":
        """One key per query and per gallery item: a hit is an item of the query's group."""
        qg, gg = group_ids(query_groups, gallery_groups)
        n_keys = int(max(qg.max(initial=-1), gg.max(initial=-1))) + 1
        return cls(incidence(np.arange(len(qg)), qg, len(qg), n_keys),
                   incidence(np.arange(len(gg)), gg, len(gg), n_keys))

    def mask(self, idx: np.ndarray) -> np.ndarray:
        """``bool [len(idx), n_gallery]``: which gallery items answer queries ``idx``."""
        if self.gallery_key is not None:
            return _dense(self.query_keys[idx])[:, self.gallery_key]
        return _dense(self.query_keys[idx] @ self.gallery_keys_t)

    def counts(self, block: int = 1024) -> np.ndarray:
        """The number of positives of each query."""
        if self._counts is None:
            if self.gallery_key is not None:  # the sizes of the query's (distinct) keys, summed
                sizes = np.bincount(self.gallery_key, minlength=self.n_keys)
                self._counts = (self.query_keys @ sizes).astype(np.int64)
            else:
                self._counts = np.concatenate(
                    [(self.query_keys[s:s + block] @ self.gallery_keys_t).getnnz(axis=1)
                     for s in range(0, self.n_queries, block)] or [np.zeros(0, np.int64)])
        return self._counts

    def check(self) -> None:
        """Every query must have a positive in the gallery."""
        missing = np.flatnonzero(self.counts() == 0)
        if len(missing):
            raise ValueError(f"{len(missing)} queries have no gallery item in their group "
                             f"(first: query {missing[0]})")


def _dense(m: sparse.csr_matrix) -> np.ndarray:
    """The nonzero pattern of a CSR matrix as a dense bool array (no int copy)."""
    out = np.zeros(m.shape, dtype=bool)
    out[np.repeat(np.arange(m.shape[0]), np.diff(m.indptr)), m.indices] = True
    return out


def unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
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
    ug, ginv = unique_rows(gallery)
    uq, qinv = unique_rows(queries)
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


def _check_embeddings(queries: np.ndarray, gallery: np.ndarray) -> None:
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"need [N, d] queries and [M, d] gallery, got {queries.shape} and {gallery.shape}")
    if not (np.isfinite(queries).all() and np.isfinite(gallery).all()):
        raise ValueError("embeddings contain NaN or infinite values")


def ranks_of(queries: np.ndarray, gallery: np.ndarray, positives: Positives, *,
             block: int = 1024) -> np.ndarray:
    """0-based rank of each query's best positive, counting the negatives scoring ``>=``
    it (module docstring)."""
    queries, gallery = np.asarray(queries), np.asarray(gallery)
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}")
    _check_embeddings(queries, gallery)
    if (positives.n_queries, positives.n_gallery) != (len(queries), len(gallery)):
        raise ValueError(f"positives are for {positives.n_queries} queries and {positives.n_gallery} "
                         f"gallery items, got {len(queries)} and {len(gallery)}")
    positives.check()
    ranks = np.empty(len(queries), dtype=np.int64)
    for idx, sims in score_blocks(queries, gallery, block):
        pos = positives.mask(idx)
        best = np.where(pos, sims, -np.inf).max(axis=1)
        ranks[idx] = np.count_nonzero((sims >= best[:, None]) & ~pos, axis=1)
    return ranks


def positive_ranks(queries: np.ndarray, gallery: np.ndarray, query_groups: Keys | None = None,
                   gallery_groups: Keys | None = None, *, block: int = 1024) -> np.ndarray:
    """0-based rank of each query's positive in the gallery (module docstring).

    Without groups (strict) query ``i`` is paired with gallery row ``i``; with
    groups a hit is any gallery item of the query's group.

    >>> x = np.eye(2, dtype=np.float32)[[0, 0, 1]]  # rows 0 and 1 identical
    >>> positive_ranks(x, x).tolist()               # strict: each ties with the other
    [1, 1, 0]
    >>> positive_ranks(x, x, ["a", "a", "b"], ["a", "a", "b"]).tolist()
    [0, 0, 0]
    """
    queries, gallery = np.asarray(queries), np.asarray(gallery)
    if (query_groups is None) != (gallery_groups is None):
        raise ValueError("give both query_groups and gallery_groups, or neither")
    if query_groups is None:
        if len(queries) != len(gallery):
            raise ValueError(f"paired retrieval needs equal shapes, got {queries.shape} and {gallery.shape}")
        positives = Positives.paired(len(queries))
    else:
        if len(query_groups) != len(queries) or len(gallery_groups) != len(gallery):
            raise ValueError(f"{len(query_groups)} query groups for {len(queries)} queries, "
                             f"{len(gallery_groups)} gallery groups for {len(gallery)} items")
        positives = Positives.from_groups(query_groups, gallery_groups)
    return ranks_of(queries, gallery, positives, block=block)


def rank_summary(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``{"R@1": …, …, "median_rank": …, "mean_rank": …}`` from 0-based ranks (the median
    and mean ranks are 1-based: 1 is a hit at the top)."""
    out = {f"R@{k}": float((ranks < k).mean()) for k in ks}
    out["median_rank"] = float(np.median(ranks + 1))
    out["mean_rank"] = float(np.mean(ranks + 1))
    return out


def chance_of(n_positives: np.ndarray, n_gallery: int, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Expected Recall@K of a random ranking: the mean over queries of
    ``1 - C(N - m, k) / C(N, k)``, ``m`` = the query's number of positives."""
    m = np.asarray(n_positives, dtype=np.float64)
    out = {}
    for k in ks:
        miss = np.ones(len(m))
        for t in range(min(k, n_gallery)):  # P(no positive in the first k of a random order)
            miss *= np.clip((n_gallery - m - t) / (n_gallery - t), 0, None)
        out[f"R@{k}"] = float((1 - miss).mean())
    return out


def chance_recall(query_groups: Keys | None, gallery_groups: Keys | None, n_gallery: int,
                  ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """:func:`chance_of` with ``m`` = the number of gallery items in the query's group
    (1 without groups)."""
    if query_groups is None:
        return chance_of(np.ones(1), n_gallery, ks)
    qg, gg = group_ids(query_groups, gallery_groups)
    m = np.bincount(gg, minlength=int(max(qg.max(initial=0), gg.max(initial=0)) + 1))[qg]
    return chance_of(m, n_gallery, ks)
