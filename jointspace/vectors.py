"""Embedding-vector helpers shared by training, evaluation, the index and the demos.

* :func:`prefix_normalise`: the first ``dim`` features of each embedding,
  L2-renormalised: what a Matryoshka-trained model serves at a smaller size.
* :func:`top_k` and :func:`top_k_mask`: the ``k`` best scores, deterministically:
  an item tied with the k-th best score is taken in order of lower index (or
  id), so the answer never depends on how a partial sort orders equal scores.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

Vectors = TypeVar("Vectors", "np.ndarray", "torch.Tensor")

#: the smallest norm divided by, as :func:`torch.nn.functional.normalize`'s ``eps``
NORM_EPS = 1e-12

__all__ = ["NORM_EPS", "prefix_normalise", "top_k", "top_k_mask"]


def prefix_normalise(x: Vectors, dim: int) -> Vectors:
    """The first ``dim`` features of each row (the last axis) of ``x``, L2-renormalised;
    a prefix that is all zeros stays zeros. ``x`` is a NumPy array or a torch tensor
    (computed as :func:`torch.nn.functional.normalize`).

    >>> prefix_normalise(np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]]), 2)
    array([[0.6, 0.8],
           [0. , 0. ]])
    """
    if not 0 < dim <= x.shape[-1]:
        raise ValueError(f"cannot truncate {x.shape[-1]}-dim embeddings to {dim}")
    if isinstance(x, np.ndarray):
        prefix = x[..., :dim]
        return prefix / np.maximum(np.linalg.norm(prefix, axis=-1, keepdims=True), NORM_EPS)
    import torch.nn.functional as F  # NumPy users need not import torch
    return F.normalize(x[..., :dim], dim=-1, eps=NORM_EPS)


def top_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` highest scores along the last axis of ``scores``; an item
    tied with the k-th score is taken in order of lower index (``1 <= k <= M``).
    Linear time (a partition, no sort).

    >>> top_k_mask(np.array([1.0, 3.0, 3.0, 3.0]), 2)
    array([False,  True,  True, False])
    """
    m = scores.shape[-1]
    kth = np.partition(scores, m - k, axis=-1)[..., m - k, None]  # the k-th largest
    above = scores > kth
    at = scores == kth
    need = k - above.sum(axis=-1, keepdims=True)  # how many of the tied items to take
    return above | (at & (np.cumsum(at, axis=-1) <= need))


def top_k(scores: np.ndarray, k: int, ids: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` highest scores along the last axis of ``scores`` (all of them
    when there are fewer), best first; equal scores in order of lower ``ids[index]``,
    or of lower index without ``ids``.

    >>> top_k(np.array([0.5, 0.9, 0.5, 0.9]), 3)
    array([1, 3, 0])
    >>> top_k(np.array([0.5, 0.9, 0.5, 0.9]), 3, ids=np.array([7, 6, 5, 4]))
    array([3, 1, 2])
    """
    scores = np.asarray(scores)
    n = scores.shape[-1]
    if ids is not None:  # ties in id order: rank the columns sorted by id, map back
        by_id = np.argsort(ids, kind="stable")
        return by_id[top_k(scores[..., by_id], k)]
    k = max(0, min(int(k), n))
    if k == 0:
        return np.zeros((*scores.shape[:-1], 0), dtype=np.intp)
    rows = scores.reshape(-1, n)
    # each row's k chosen columns, in increasing order (exactly k per row)
    chosen = np.nonzero(top_k_mask(rows, k))[1].reshape(-1, k)
    best = np.take_along_axis(rows, chosen, axis=-1)
    if best.dtype.kind in "ub":  # negated below: no wrap-around
        best = best.astype(np.int64)
    order = np.lexsort((chosen, -best), axis=-1)  # by score, then by index
    return np.take_along_axis(chosen, order, axis=-1).reshape(*scores.shape[:-1], k)
