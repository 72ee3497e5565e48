"""Comparing two embedding spaces on the same items: mutual k-NN, linear CKA and
orthogonal-Procrustes retrieval.

``x`` ``[N, d1]`` and ``y`` ``[N, d2]`` hold the same ``N`` items (row ``i`` of each
is item ``i``) embedded by two models; the dimensions may differ. Computed in
float64; the neighbour search works on blocks of rows (memory O(block · N)).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .geometry import as_matrix, block_rows, topk_mask, unit_rows
from .retrieval import positive_ranks, score_blocks


def _paired(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as float64 matrices with the same number of rows."""
    x, y = as_matrix(x, "x"), as_matrix(y, "y")
    if len(x) != len(y):
        raise ValueError(f"x and y must hold the same items, got {len(x)} and {len(y)} rows")
    return x, y


def _neighbours(x: np.ndarray, k: int, block: int | None) -> np.ndarray:
    """``[N, k]``: each row's ``k`` most cosine-similar *other* rows, ascending by
    index (ties at the k-th score go to the lower index)."""
    n = len(x)
    out = np.empty((n, k), dtype=np.int64)
    for idx, sims in score_blocks(unit_rows(x), unit_rows(x), block_rows(n, block)):
        sims = sims.copy()  # our own copy to write into, whatever score_blocks returns
        sims[np.arange(len(idx)), idx] = -np.inf  # an item is not its own neighbour
        # nonzero walks the mask row-major: exactly k ascending columns per row
        out[idx] = np.nonzero(topk_mask(sims, k))[1].reshape(len(idx), k)
    return out


def mutual_knn(x: np.ndarray, y: np.ndarray, k: int = 10, *, block: int | None = None) -> float:
    """Mutual k-nearest-neighbour alignment, ``(1/N) Σ_i |N_x(i) ∩ N_y(i)| / k``.

    Huh, Cheung, Wang & Isola, "The Platonic Representation Hypothesis", ICML
    2024. ``N_x(i)`` is the set of the ``k`` rows most cosine-similar to row ``i``
    in ``x``, itself excluded. 1.0 when the two spaces order neighbours alike
    (e.g. ``y`` a rotation and rescaling of ``x``); about ``k/(N − 1)`` for
    unrelated spaces.
    """
    return float(np.mean(shared_neighbours(x, y, k, block=block) / k))


def shared_neighbours(x: np.ndarray, y: np.ndarray, k: int = 10, *,
                      block: int | None = None) -> np.ndarray:
    """``|N_x(i) ∩ N_y(i)|`` for each row ``i`` (int64 ``[N]``, each in ``[0, k]``): how many
    of its ``k`` nearest neighbours the two spaces agree on (:func:`mutual_knn` is their
    mean over ``k``).

    >>> x = np.eye(4)[[0, 0, 1, 2]] + np.arange(4)[:, None] * 1e-3
    >>> shared_neighbours(x, x, 1).tolist()
    [1, 1, 1, 1]
    """
    x, y = _paired(x, y)
    if not 1 <= k <= len(x) - 1:
        raise ValueError(f"k must be in [1, {len(x) - 1}] (N - 1), got {k}")
    both = np.sort(np.concatenate([_neighbours(x, k, block), _neighbours(y, k, block)], axis=1), axis=1)
    # each list has distinct indices, so an index shared by both appears twice, adjacent
    return np.count_nonzero(both[:, 1:] == both[:, :-1], axis=1)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment, ``‖yᵀx‖_F² / (‖xᵀx‖_F ‖yᵀy‖_F)`` on column-centred
    ``x`` and ``y``.

    Kornblith, Norouzi, Lee & Hinton, "Similarity of Neural Network
    Representations Revisited", ICML 2019 (eq. 4, the feature-space form of
    ``HSIC(XXᵀ, YYᵀ) / √(HSIC(XXᵀ, XXᵀ) HSIC(YYᵀ, YYᵀ))``). In [0, 1]; invariant to
    orthogonal transforms and isotropic scaling of either space. NaN if a space
    has no variance.
    """
    x, y = _paired(x, y)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    # the d×d form costs O(N·d²) and never builds an N×N matrix
    denominator = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    if denominator == 0:
        return float("nan")
    return float(np.linalg.norm(y.T @ x) ** 2 / denominator)


def orthogonal_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The ``[d1, d2]`` map ``W = U Vᵀ`` from the thin SVD ``xᵀy = U S Vᵀ``.

    Schönemann, "A generalized solution of the orthogonal Procrustes problem",
    Psychometrika 1966. For ``d1 = d2``, ``W`` is the orthogonal matrix minimising
    ``‖xW − y‖_F``. For ``d1 ≠ d2`` we pad the narrower space with zero columns:
    ``‖x_pad Q‖_F`` is then the same for every orthogonal ``Q``, so this is still
    an exact orthogonal Procrustes problem, and ``x_pad Q`` (minus the padding)
    equals ``xW`` with this semi-orthogonal ``W`` (orthonormal rows or columns).
    """
    x, y = _paired(x, y)
    u, _, vt = np.linalg.svd(x.T @ y, full_matrices=False)
    return u @ vt


def procrustes_retrieval(x: np.ndarray, y: np.ndarray, seed: int = 0,
                         ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Fit an orthogonal map from ``x`` to ``y`` on half the items, retrieve with it on
    the other half.

    Rows are L2-normalised first (retrieval is by cosine, and the two models'
    norms need not agree). A seeded permutation puts ``⌊N/2⌋`` items in the fit
    half and the rest in the test half. On the fit half, ``W`` =
    :func:`orthogonal_map` and ``fit_residual = ‖x_fit W − y_fit‖_F / ‖y_fit‖_F``.
    On the test half, each ``x_i W`` (re-normalised) ranks all test ``y`` rows by
    cosine; ``R@k`` is the fraction with ``y_i`` in its top ``k`` (ties counted
    against it, as in :func:`jointspace.eval.retrieval.positive_ranks`). Chance is
    ``k / n_test``.
    """
    x, y = _paired(x, y)
    n = len(x)
    if n < 4:
        raise ValueError(f"procrustes_retrieval needs at least 4 items, got {n}")
    x, y = unit_rows(x), unit_rows(y)
    order = np.random.default_rng(seed).permutation(n)
    fit, test = order[:n // 2], order[n // 2:]
    w = orthogonal_map(x[fit], y[fit])
    residual = np.linalg.norm(x[fit] @ w - y[fit]) / np.linalg.norm(y[fit])
    ranks = positive_ranks(unit_rows(x[test] @ w), y[test])
    out: dict[str, Any] = {f"R@{k}": float(np.mean(ranks < k)) for k in ks}
    out["n_test"] = int(len(test))
    out["fit_residual"] = float(residual)
    return out


def compare_spaces(x: np.ndarray, y: np.ndarray, k: int = 10, seed: int = 0) -> dict[str, Any]:
    """``{"mutual_knn@<k>": …, "linear_cka": …, "procrustes": {R@1, R@5, R@10, n_test,
    fit_residual}}`` for two spaces over the same items."""
    x, y = _paired(x, y)
    return {f"mutual_knn@{k}": mutual_knn(x, y, k), "linear_cka": linear_cka(x, y),
            "procrustes": procrustes_retrieval(x, y, seed=seed)}
