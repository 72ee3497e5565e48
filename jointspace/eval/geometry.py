"""The geometry of one joint embedding space: alignment, uniformity, effective rank,
modality gap, hubness and isotropy.

Inputs are ``[N, d]`` arrays of embeddings, normally L2-normalised rows; ``a`` and
``b`` are the two modalities, row ``i`` of ``a`` paired with row ``i`` of ``b``.
Everything is computed in float64. Anything that compares all rows with all rows
(uniformity, hubness) works on blocks of rows, so memory is O(block · N), never
O(N²) or O(N² · d).

Top-k ties
----------
Where a top-k set is needed (hubness here, mutual k-NN in :mod:`.similarity`),
an item tied with the k-th best score is taken in order of lower index, so the
result does not depend on how a partial sort happens to order equal scores.
Scores come from :func:`jointspace.eval.retrieval.score_blocks`, which scores
identical rows once, so duplicates tie exactly.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp
from scipy.stats import skew

from ..vectors import top_k, top_k_mask as topk_mask  # topk_mask: importable from here as before
from .pairs import DEFAULT_PAIR
from .retrieval import score_blocks

# rows per block: block · N float64 scores stay near 16 MB
_BLOCK_ELEMENTS = 1 << 21


def as_matrix(x: np.ndarray, name: str = "x") -> np.ndarray:
    """``x`` as a finite float64 ``[N, d]`` array, or a ``ValueError`` naming it."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [N, d] array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero), for cosine scores."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def block_rows(n_columns: int, block: int | None = None) -> int:
    """Rows per block so that ``rows · n_columns`` stays near ``_BLOCK_ELEMENTS``."""
    if block is not None:
        if block < 1:
            raise ValueError(f"block must be at least 1, got {block}")
        return int(block)
    return max(1, _BLOCK_ELEMENTS // max(1, n_columns))


def alignment(a: np.ndarray, b: np.ndarray, alpha: float = 2) -> float:
    """Mean distance between paired rows, ``(1/N) Σ_i ‖a_i − b_i‖₂^alpha``.

    Wang & Isola, "Understanding Contrastive Representation Learning through
    Alignment and Uniformity on the Hypersphere", ICML 2020 (L_align). Lower is
    better; for unit rows it lies in ``[0, 2^alpha]`` (``2^alpha`` when ``b = −a``).
    """
    a, b = as_matrix(a, "a"), as_matrix(b, "b")
    if a.shape != b.shape or len(a) == 0:
        raise ValueError(f"need paired non-empty [N, d] arrays, got {a.shape} and {b.shape}")
    return float(np.mean(np.linalg.norm(a - b, axis=1) ** alpha))


def _subsample(x: np.ndarray, max_items: int, seed: int) -> np.ndarray:
    """At most ``max_items`` rows of ``x``: all of them, or a seeded random subset
    kept in the original order."""
    if len(x) <= max_items:
        return x
    keep = np.sort(np.random.default_rng(seed).choice(len(x), size=max_items, replace=False))
    return x[keep]


def uniformity(x: np.ndarray, t: float = 2, max_items: int = 5000, seed: int = 0, *,
               block: int | None = None) -> float:
    """``log( mean_{i<j} exp(−t ‖x_i − x_j‖₂²) )`` over distinct pairs of rows.

    Wang & Isola 2020 (L_uniform, with the Gaussian potential ``t = 2``). Lower
    (more negative) means the rows spread more evenly; 0 when all rows coincide.
    With more than ``max_items`` rows, a seeded random subset of that many is used.
    """
    x = _subsample(as_matrix(x), max_items, seed)
    n = len(x)
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 rows, got {n}")
    sq = np.einsum("ij,ij->i", x, x)
    rows = block_rows(n, block)
    partial = []
    # the mean over i<j equals the mean over ordered pairs i != j (the potential is
    # symmetric), so each block scores its rows against all rows and drops i == j;
    # the sum runs in the log domain so a large t cannot underflow to log(0)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        d2 = np.maximum(sq[start:stop, None] + sq[None, :] - 2.0 * (x[start:stop] @ x.T), 0.0)
        logits = -t * d2
        logits[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        partial.append(logsumexp(logits))
    return float(logsumexp(partial) - np.log(n * (n - 1.0)))


def rankme(x: np.ndarray, eps: float = 1e-7) -> float:
    """Effective rank ``exp(−Σ_k p_k log p_k)``, ``p_k = σ_k / ‖σ‖₁ + eps``, from the
    singular values ``σ`` of ``x`` (not centred).

    Garrido et al., "RankMe: Assessing the Downstream Performance of Pretrained
    Self-Supervised Representations by Their Rank", ICML 2023. About ``r`` when
    ``x`` has ``r`` equal non-zero singular values; between 1 and ``min(N, d)``.
    """
    s = np.linalg.svd(as_matrix(x), compute_uv=False)
    total = s.sum()
    if total == 0:
        raise ValueError("rankme of an all-zero matrix is undefined")
    p = s / total + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def modality_gap(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, float]:
    """How far apart, and how separable, the two modalities' embeddings are.

    * ``centroid_distance``: ``‖mean_i a_i − mean_i b_i‖₂`` (Liang et al., "Mind the
      Gap: Understanding the Modality Gap in Multi-modal Contrastive
      Representation Learning", NeurIPS 2022).
    * ``separability``: accuracy of a logistic regression (scikit-learn, default
      ``C = 1``) telling ``a`` rows from ``b`` rows, trained on a stratified seeded
      half of the ``2N`` rows and scored on the other half: about 0.5 when the two
      are samples of one distribution, 1.0 when a hyperplane separates them.

    Requires scikit-learn (a test extra of this package, imported only here).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    a, b = as_matrix(a, "a"), as_matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must share the dimension, got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < 2:
        raise ValueError("modality_gap needs at least 2 rows of each modality")
    features = np.concatenate([a, b])
    labels = np.concatenate([np.zeros(len(a), dtype=np.int64), np.ones(len(b), dtype=np.int64)])
    fit_x, test_x, fit_y, test_y = train_test_split(features, labels, test_size=0.5,
                                                    random_state=seed, stratify=labels)
    model = LogisticRegression(max_iter=1000).fit(fit_x, fit_y)
    return {"centroid_distance": float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0))),
            "separability": float(model.score(test_x, test_y))}


def k_occurrence(queries: np.ndarray, gallery: np.ndarray, k: int = 10, *,
                 block: int | None = None) -> np.ndarray:
    """``N_k(j)``: how many queries have gallery item ``j`` among their ``k`` most
    cosine-similar gallery items (ties at the k-th score go to the lower index)."""
    queries, gallery = as_matrix(queries, "queries"), as_matrix(gallery, "gallery")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries and gallery must share the dimension, "
                         f"got {queries.shape} and {gallery.shape}")
    if not 1 <= k <= len(gallery):
        raise ValueError(f"k must be in [1, {len(gallery)}] (the gallery size), got {k}")
    counts = np.zeros(len(gallery), dtype=np.int64)
    for _, sims in score_blocks(unit_rows(queries), unit_rows(gallery), block_rows(len(gallery), block)):
        counts += topk_mask(sims, k).sum(axis=0)
    return counts


def hubness(queries: np.ndarray, gallery: np.ndarray, k: int = 10, top: int = 10, *,
            block: int | None = None) -> dict[str, Any]:
    """Hubs of the gallery: items in the top-k of disproportionately many queries.

    Radovanović, Nanopoulos & Ivanović, "Hubs in Space: Popular Nearest Neighbors
    in High-Dimensional Data", JMLR 2010. With ``N_k`` from :func:`k_occurrence`:

    * ``skewness``: ``E[(N_k − μ)³] / σ³``, the *population* (biased) third
      standardised moment as Radovanović et al. define it
      (``scipy.stats.skew(N_k, bias=True)``); 0.0 when every item occurs equally
      often. Large positive values mean a few hubs and many "anti-hubs".
    * ``max_occurrence``: ``max_j N_k(j)`` (at most the number of queries).
    * ``top_hubs``: ``[(index, count), …]``, the ``top`` most frequent items, by
      decreasing count and then increasing index.
    """
    counts = k_occurrence(queries, gallery, k, block=block)
    order = top_k(counts, top)
    # a constant N_k has zero variance: no hubness, not NaN
    spread = counts.max() != counts.min()
    return {"k": int(k),
            "skewness": float(skew(counts, bias=True)) if spread else 0.0,
            "max_occurrence": int(counts.max()),
            "top_hubs": [(int(j), int(counts[j])) for j in order]}


def isoscore(x: np.ndarray) -> float:
    """IsoScore: how uniformly the point cloud uses all ``n = d`` dimensions, in [0, 1].

    Rudman, Gillman, Rayne & Eickhoff, "IsoScore: Measuring the Uniformity of
    Embedding Space Utilization", Findings of ACL 2022 (Algorithm 1):

    1. reorient by PCA (centre; rotate onto the principal axes);
    2. ``Σ_D``: the variance of each coordinate there (the covariance eigenvalues);
    3. ``Σ̂_D = √n · Σ_D / ‖Σ_D‖₂`` (the norm of the all-ones vector);
    4. isotropy defect ``δ = ‖Σ̂_D − 1‖₂ / √(2(n − √n))``;
    5. fraction of dimensions used ``φ = (n − δ²(n − √n))² / n²``;
    6. ``IsoScore = (n·φ − 1) / (n − 1)``.

    Steps 3–5 simplify to ``n·φ = (Σλ)² / Σλ²`` (the participation ratio of the
    variances ``λ``), so points spread isotropically over exactly ``k`` of the
    ``n`` dimensions score ``(k − 1)/(n − 1)``: 1 for isotropic, 0 for a line.
    Invariant to rotation, translation and scale. NaN when all points coincide.
    """
    x = as_matrix(x)
    n = x.shape[1]
    if n < 2 or len(x) < 2:
        raise ValueError(f"isoscore needs at least 2 rows and 2 dimensions, got {x.shape}")
    centred = x - x.mean(axis=0)
    # the covariance in the principal basis is diagonal with entries s² / (N − 1)
    variances = np.linalg.svd(centred, compute_uv=False) ** 2 / (len(x) - 1)
    variances = np.concatenate([variances, np.zeros(n - len(variances))])  # when N < n
    norm = np.linalg.norm(variances)
    if norm == 0:
        return float("nan")
    normalised = np.sqrt(n) * variances / norm
    defect = np.linalg.norm(normalised - 1.0) / np.sqrt(2.0 * (n - np.sqrt(n)))
    fraction = (n - defect ** 2 * (n - np.sqrt(n))) ** 2 / n ** 2
    return float((n * fraction - 1.0) / (n - 1.0))


def geometry_metrics(a: np.ndarray, b: np.ndarray, names: tuple[str, str] = DEFAULT_PAIR,
                     k: int = 10, a_items: np.ndarray | None = None) -> dict[str, Any]:
    """All of the above for one paired space, flat, with the modality names in the keys.

    ``hubness_<b>_*`` are the hubs among ``b`` when querying with ``a`` (e.g. the
    captions every image retrieves) and ``hubness_<a>_*`` the reverse; ``hubs_<x>``
    lists their ``(index, count)`` top hubs (row indices). ``a_items`` (an item id per
    row) makes hubness count each distinct ``a`` item once: with 5 captions per image
    the rows hold each image 5 times, which would fill the top hubs with copies and
    inflate the skew; a hub of ``a`` is then reported by its item's first row.
    """
    a, b = as_matrix(a, "a"), as_matrix(b, "b")
    na, nb = names
    gap = modality_gap(a, b)
    rows = np.arange(len(a)) if a_items is None else \
        np.sort(np.unique(np.asarray(a_items), return_index=True)[1])  # each item's first row
    distinct = a[rows]
    hubs_b, hubs_a = hubness(distinct, b, k=k), hubness(b, distinct, k=min(k, len(distinct)))
    hubs_a = {**hubs_a, "top_hubs": [(int(rows[j]), c) for j, c in hubs_a["top_hubs"]]}
    out: dict[str, Any] = {"alignment": alignment(a, b)}
    for name, x in ((na, a), (nb, b)):
        out[f"uniformity_{name}"] = uniformity(x)
        out[f"rankme_{name}"] = rankme(x)
        out[f"isoscore_{name}"] = isoscore(x)
    out["modality_gap_centroid_distance"] = gap["centroid_distance"]
    out["modality_gap_separability"] = gap["separability"]
    out["hubness_k"] = int(k)
    for name, h in ((na, hubs_a), (nb, hubs_b)):
        out[f"hubness_{name}_skewness"] = h["skewness"]
        out[f"hubness_{name}_max_occurrence"] = h["max_occurrence"]
        out[f"hubs_{name}"] = h["top_hubs"]
    return out
