"""Geometry of one joint space, against brute-force versions written here and
matrices whose answers are known in closed form."""
import numpy as np
import pytest
from scipy.stats import skew

from jointspace.eval.geometry import (alignment, geometry_metrics, hubness, isoscore,
                                      k_occurrence, modality_gap, rankme, uniformity)


def _sphere(rng, n, d):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _orthonormal(rng, n, r):
    """An ``[n, r]`` matrix with orthonormal columns."""
    q, _ = np.linalg.qr(rng.standard_normal((n, r)))
    return q


# alignment ---------------------------------------------------------------------------

def test_alignment_known_values():
    a = _sphere(np.random.default_rng(0), 50, 8)
    assert alignment(a, a) == 0.0
    assert alignment(a, -a) == pytest.approx(4.0)  # ‖a − (−a)‖ = 2 for unit rows
    assert alignment(a, -a, alpha=1) == pytest.approx(2.0)
    assert alignment(a, -a, alpha=3) == pytest.approx(8.0)
    # orthogonal unit pairs: ‖e_1 − e_2‖² = 2
    e = np.eye(8)
    assert alignment(e[:4], e[4:]) == pytest.approx(2.0)


# uniformity --------------------------------------------------------------------------

def _uniformity_brute(x, t=2.0):
    values = [np.exp(-t * np.sum((x[i] - x[j]) ** 2))
              for i in range(len(x)) for j in range(i + 1, len(x))]
    return np.log(np.mean(values))


def test_uniformity_equals_brute_force():
    rng = np.random.default_rng(1)
    x = _sphere(rng, 200, 6)
    expected = _uniformity_brute(x)
    assert uniformity(x) == pytest.approx(expected, rel=1e-10)
    assert uniformity(x, block=7) == pytest.approx(expected, rel=1e-10)  # many blocks
    assert uniformity(x, t=5.0, block=13) == pytest.approx(_uniformity_brute(x, 5.0), rel=1e-10)


def test_uniformity_identical_points_and_spread_vs_clustered():
    assert uniformity(np.tile([[0.6, 0.8, 0.0]], (30, 1))) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(2)
    spread = _sphere(rng, 300, 3)
    clustered = _sphere(rng, 300, 3) * 0.1 + np.array([1.0, 0.0, 0.0])
    clustered /= np.linalg.norm(clustered, axis=1, keepdims=True)
    assert uniformity(spread) < uniformity(clustered) - 1.0
    # the infimum on S²: log E exp(−2‖x−y‖²) for uniform x, y = log((1 − e^{−8}) / 8)
    assert uniformity(_sphere(rng, 3000, 3), max_items=3000) == pytest.approx(
        np.log((1 - np.exp(-8)) / 8), abs=0.02)


def test_uniformity_subsample_is_deterministic():
    x = _sphere(np.random.default_rng(3), 400, 5)
    sub = uniformity(x, max_items=100, seed=4)
    assert sub == uniformity(x, max_items=100, seed=4)
    assert sub != uniformity(x, max_items=100, seed=5)
    assert sub == pytest.approx(uniformity(x), abs=0.1)  # a sample of the same quantity


# rankme ------------------------------------------------------------------------------

def test_rankme_of_r_equal_singular_values():
    rng = np.random.default_rng(5)
    for r in (1, 3, 7):
        x = 2.5 * _orthonormal(rng, 40, r) @ _orthonormal(rng, 16, r).T  # σ = 2.5, r times
        assert rankme(x) == pytest.approx(r, rel=1e-3)
    assert rankme(np.outer(rng.standard_normal(30), rng.standard_normal(9))) == pytest.approx(1.0, rel=1e-3)


def test_rankme_equals_entropy_of_eigen_spectrum():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((60, 12)) * np.linspace(0.1, 3.0, 12) + 0.5  # not centred
    sigma = np.sqrt(np.clip(np.linalg.eigvalsh(x.T @ x), 0, None))  # singular values another way
    p = sigma / sigma.sum() + 1e-7
    assert rankme(x) == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-9)
    assert 1.0 < rankme(x) < 12.0


# modality gap -------------------------------------------------------------------------

def test_modality_gap_same_distribution_is_chance():
    rng = np.random.default_rng(7)
    gap = modality_gap(_sphere(rng, 1000, 8), _sphere(rng, 1000, 8), seed=0)
    assert 0.4 < gap["separability"] < 0.6
    assert gap["centroid_distance"] < 0.15


def test_modality_gap_shifted_distribution():
    rng = np.random.default_rng(8)
    a = rng.standard_normal((1000, 8))
    shift = np.zeros(8)
    shift[:2] = [3.0, 4.0]  # ‖shift‖ = 5: five standard deviations along one direction
    b = a[rng.permutation(1000)] + shift
    gap = modality_gap(a, b, seed=1)
    assert gap["centroid_distance"] == pytest.approx(5.0, rel=1e-10)
    assert gap["separability"] > 0.95
    assert modality_gap(a, b, seed=1) == gap  # deterministic


# hubness -----------------------------------------------------------------------------

def _k_occurrence_brute(q, g, k):
    """Full cosine matrix, stable argsort of the negated scores (ties: lower index)."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    top = np.argsort(-(qn @ gn.T), axis=1, kind="stable")[:, :k]
    return np.bincount(top.ravel(), minlength=len(g))


def test_k_occurrence_equals_brute_force():
    rng = np.random.default_rng(9)
    q, g = rng.standard_normal((120, 10)), rng.standard_normal((90, 10))  # not normalised
    for k in (1, 5, 10):
        expected = _k_occurrence_brute(q, g, k)
        np.testing.assert_array_equal(k_occurrence(q, g, k), expected)
        np.testing.assert_array_equal(k_occurrence(q, g, k, block=11), expected)
        assert k_occurrence(q, g, k).sum() == 120 * k
        h = hubness(q, g, k=k, top=5, block=11)
        assert h["skewness"] == pytest.approx(skew(expected, bias=True))
        assert h["max_occurrence"] == expected.max()
        order = sorted(range(90), key=lambda j: (-expected[j], j))[:5]
        assert h["top_hubs"] == [(j, int(expected[j])) for j in order]


def test_k_occurrence_exact_ties_go_to_lower_index():
    # one-hot gallery rows (gallery 3 and 5 copies of 0 and 1) and integer queries
    # with equal entries: cosine scores tie exactly
    g = np.eye(4)[[0, 1, 2, 0, 3, 1]]
    q = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 2.0, 2.0, 2.0], [1.0, 0.0, 0.0, 1.0]])
    for k in (1, 2, 3, 4):
        np.testing.assert_array_equal(k_occurrence(q, g, k, block=2), _k_occurrence_brute(q, g, k))
    # k=1: query 0 ties between gallery 0, 1, 3, 5 → 0; query 1 ties 1, 2, 4, 5 → 1; query 2 → 0
    np.testing.assert_array_equal(k_occurrence(q, g, 1), [2, 1, 0, 0, 0, 0])


def test_constructed_hub():
    rng = np.random.default_rng(10)
    u = np.zeros(16)
    u[0] = 1.0
    queries = u + 0.05 * rng.standard_normal((300, 16))  # all within ~0.2 of u
    gallery = _sphere(rng, 200, 16)
    gallery[57] = u  # the hub: the nearest gallery item of every query
    h = hubness(queries, gallery, k=5, top=3)
    assert h["max_occurrence"] == 300
    assert h["top_hubs"][0] == (57, 300)
    assert h["skewness"] > 3.0


# isoscore ----------------------------------------------------------------------------

def test_isoscore_isotropic_and_line():
    rng = np.random.default_rng(11)
    assert isoscore(rng.standard_normal((20000, 16))) > 0.9
    line = np.outer(rng.standard_normal(500), rng.standard_normal(16)) + rng.standard_normal(16)
    assert isoscore(line) == pytest.approx(0.0, abs=1e-6)
    assert isoscore(line) < 0.05


def test_isoscore_of_exactly_k_used_dimensions():
    # ±e_1 … ±e_k (2k points, mean 0) have covariance c·diag(1,…,1,0,…,0) exactly.
    # Normalised variance vector: √(n/k) on k coordinates, 0 elsewhere, so
    # ‖Σ̂ − 1‖² = k(√(n/k) − 1)² + (n − k) = 2(n − √(nk)), δ² = (n − √(nk)) / (n − √n),
    # n − δ²(n − √n) = √(nk), φ = nk / n² = k/n and IsoScore = (k − 1)/(n − 1).
    # A random rotation and a shift must not change it (PCA reorientation).
    rng = np.random.default_rng(12)
    n = 12
    rotation = _orthonormal(rng, n, n)
    for k in (1, 2, 5, 12):
        points = np.concatenate([np.eye(n)[:k], -np.eye(n)[:k]]) * 3.0
        assert isoscore(points @ rotation + 7.0) == pytest.approx((k - 1) / (n - 1), abs=1e-9)


def test_isoscore_equals_participation_ratio_of_covariance_eigenvalues():
    # From the steps: with u = λ/‖λ‖, n − δ²(n − √n) = √n Σu, so n·φ = (Σλ)²/Σλ².
    rng = np.random.default_rng(13)
    x = rng.standard_normal((300, 10)) * np.geomspace(0.05, 2.0, 10) @ _orthonormal(rng, 10, 10)
    lam = np.linalg.eigvalsh(np.cov(x, rowvar=False))
    expected = (lam.sum() ** 2 / (lam ** 2).sum() - 1) / (10 - 1)
    assert isoscore(x) == pytest.approx(expected, rel=1e-9)
    assert isoscore(x * 4.0) == pytest.approx(expected, rel=1e-9)  # scale invariant


# geometry_metrics --------------------------------------------------------------------

def test_geometry_metrics_keys_and_values():
    rng = np.random.default_rng(14)
    a = _sphere(rng, 150, 8)
    b = _sphere(rng, 150, 8)
    m = geometry_metrics(a, b, names=("audio", "text"), k=5)
    assert m["alignment"] == alignment(a, b)
    assert m["uniformity_audio"] == uniformity(a) and m["uniformity_text"] == uniformity(b)
    assert m["rankme_audio"] == rankme(a) and m["rankme_text"] == rankme(b)
    assert m["isoscore_audio"] == isoscore(a) and m["isoscore_text"] == isoscore(b)
    gap = modality_gap(a, b)
    assert m["modality_gap_centroid_distance"] == gap["centroid_distance"]
    assert m["modality_gap_separability"] == gap["separability"]
    text_hubs = hubness(a, b, k=5)  # text gallery, audio queries
    assert m["hubness_text_skewness"] == text_hubs["skewness"]
    assert m["hubs_text"] == text_hubs["top_hubs"]
    assert m["hubness_audio_skewness"] == hubness(b, a, k=5)["skewness"]
    assert m["hubs_audio"] == hubness(b, a, k=5)["top_hubs"]


def test_input_validation():
    with pytest.raises(ValueError):
        alignment(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError):
        uniformity(np.array([[np.nan, 1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError):
        hubness(np.ones((3, 2)), np.ones((4, 2)), k=5)


def test_geometry_metrics_count_each_item_once_with_several_captions():
    """5 captions per image: the rows hold each image 5 times. Hubs are distinct images,
    reported by their first row, and the counts equal those of the distinct images alone."""
    rng = np.random.default_rng(15)
    images = _sphere(rng, 30, 8)
    a = np.repeat(images, 5, axis=0)                      # rows: image 0 ×5, image 1 ×5, …
    b = _sphere(rng, 150, 8)
    items = np.repeat(np.arange(30), 5)
    m = geometry_metrics(a, b, k=5, a_items=items)
    hubs = m["hubs_image"]
    assert len({row // 5 for row, _ in hubs}) == len(hubs)  # no image twice
    assert all(row % 5 == 0 for row, _ in hubs)             # each by its first row
    alone = hubness(b, images, k=5)
    assert [(row // 5, c) for row, c in hubs] == alone["top_hubs"]
    assert m["hubness_image_skewness"] == alone["skewness"]
    assert m["hubs_text"] == hubness(images, b, k=5)["top_hubs"]
    # without the item ids the copies crowd the top hubs (what the report showed)
    plain = geometry_metrics(a, b, k=5)["hubs_image"]
    assert len({row // 5 for row, _ in plain}) < len(plain)
