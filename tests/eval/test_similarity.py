"""Comparing two spaces, against brute force, the N×N kernel form of CKA, scipy's
orthogonal Procrustes and transforms with known answers."""
import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes

from jointspace.eval.similarity import (compare_spaces, linear_cka, mutual_knn, orthogonal_map,
                                        procrustes_retrieval)


def _rotation(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))  # a uniformly random orthogonal matrix


# mutual k-NN -------------------------------------------------------------------------

def _mutual_knn_brute(x, y, k):
    def neighbours(z):
        zn = z / np.linalg.norm(z, axis=1, keepdims=True)
        s = zn @ zn.T
        np.fill_diagonal(s, -np.inf)
        return [set(np.argsort(-row, kind="stable")[:k]) for row in s]
    nx, ny = neighbours(x), neighbours(y)
    return np.mean([len(a & b) / k for a, b in zip(nx, ny)])


def test_mutual_knn_of_a_rotated_and_scaled_copy_is_one():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 32))
    assert mutual_knn(x, 3.0 * x @ _rotation(rng, 32), k=10) == 1.0
    # a different dimension: x embedded in 48-D by a semi-orthogonal map
    embed = _rotation(rng, 48)[:32]
    assert mutual_knn(x, x @ embed, k=10, block=37) == 1.0


def test_mutual_knn_of_independent_spaces_is_near_chance():
    rng = np.random.default_rng(1)
    score = mutual_knn(rng.standard_normal((500, 32)), rng.standard_normal((500, 16)), k=10)
    assert score < 0.1  # chance is k/(N − 1) ≈ 0.02
    assert score == pytest.approx(10 / 499, abs=0.01)


def test_mutual_knn_equals_brute_force_on_related_spaces():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((150, 12))
    y = np.tanh(x @ rng.standard_normal((12, 20))) + 0.5 * rng.standard_normal((150, 20))
    for k in (1, 5, 10):
        expected = _mutual_knn_brute(x, y, k)
        assert 0.1 < expected < 0.9 or k == 1  # partly related: a non-trivial value
        assert mutual_knn(x, y, k=k) == pytest.approx(expected, abs=1e-12)
        assert mutual_knn(x, y, k=k, block=16) == pytest.approx(expected, abs=1e-12)


# linear CKA --------------------------------------------------------------------------

def _cka_kernel(x, y):
    """HSIC form over N×N Gram matrices: tr(KHLH) / √(tr(KHKH) tr(LHLH))."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_linear_cka_invariances():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 16)) * np.linspace(0.2, 2.0, 16) + 1.0
    assert linear_cka(x, 3.0 * x @ _rotation(rng, 16)) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x + 5.0) == pytest.approx(1.0, abs=1e-12)  # translation
    # not invariant to an anisotropic scaling
    assert linear_cka(x, x * np.linspace(0.1, 10, 16)) < 0.99


def test_linear_cka_equals_kernel_formulation():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((120, 10)) + 2.0
    y = np.concatenate([x[:, :4] ** 2, rng.standard_normal((120, 21))], axis=1)  # 25-D
    value = linear_cka(x, y)
    assert value == pytest.approx(_cka_kernel(x, y), rel=1e-10)
    assert 0.0 < value < 1.0
    assert linear_cka(y, x) == pytest.approx(value, rel=1e-12)  # symmetric


# Procrustes --------------------------------------------------------------------------

def test_orthogonal_map_recovers_the_rotation():
    rng = np.random.default_rng(5)
    q = _rotation(rng, 24)
    x = rng.standard_normal((300, 24))
    y = x @ q + 1e-6 * rng.standard_normal((300, 24))
    np.testing.assert_allclose(orthogonal_map(x, y), q, atol=1e-5)
    # and equals scipy's independent solver on arbitrary data
    y2 = rng.standard_normal((300, 24))
    np.testing.assert_allclose(orthogonal_map(x, y2), orthogonal_procrustes(x, y2)[0], atol=1e-10)


def test_rectangular_map_equals_zero_padded_square_procrustes():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((100, 8)), rng.standard_normal((100, 13))
    w = orthogonal_map(x, y)
    assert w.shape == (8, 13)
    np.testing.assert_allclose(w @ w.T, np.eye(8), atol=1e-12)  # orthonormal rows
    x_pad = np.concatenate([x, np.zeros((100, 5))], axis=1)
    full, _ = orthogonal_procrustes(x_pad, y)
    np.testing.assert_allclose(x @ w, x_pad @ full, atol=1e-10)
    # the other way round: pad y; the padding columns of x·W_full come out zero
    w_t = orthogonal_map(y, x)
    y_full, _ = orthogonal_procrustes(y, np.concatenate([x, np.zeros((100, 5))], axis=1))
    np.testing.assert_allclose(y @ w_t, (y @ y_full)[:, :8], atol=1e-10)


def test_procrustes_retrieval_of_a_rotated_copy():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((400, 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = x @ _rotation(rng, 32) + 1e-7 * rng.standard_normal((400, 32))
    out = procrustes_retrieval(x, y, seed=3)
    assert out["R@1"] == out["R@5"] == out["R@10"] == 1.0
    assert out["n_test"] == 200
    assert out["fit_residual"] < 1e-3
    assert set(out) == {"R@1", "R@5", "R@10", "n_test", "fit_residual"}
    # into a wider space: x·(first 32 rows of a 40-D rotation)
    wide = procrustes_retrieval(x, x @ _rotation(rng, 40)[:32], seed=3, ks=(1,))
    assert wide["R@1"] == 1.0 and wide["fit_residual"] < 1e-10
    assert procrustes_retrieval(x, y, seed=4)["n_test"] == 200


def test_procrustes_retrieval_of_independent_spaces_is_near_chance():
    rng = np.random.default_rng(8)
    out = procrustes_retrieval(rng.standard_normal((500, 32)), rng.standard_normal((501, 32))[:500])
    assert out["n_test"] == 250
    assert out["R@1"] < 0.03  # chance 1/250
    assert out["R@10"] < 0.1  # chance 10/250
    assert out["fit_residual"] > 0.8


def test_compare_spaces():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((120, 12))
    y = 2.0 * x @ _rotation(rng, 12)
    out = compare_spaces(x, y, k=5, seed=1)
    assert out["mutual_knn@5"] == 1.0
    assert out["linear_cka"] == pytest.approx(1.0)
    assert out["procrustes"] == procrustes_retrieval(x, y, seed=1)
    assert out["procrustes"]["R@1"] == 1.0
    with pytest.raises(ValueError):
        compare_spaces(x, y[:100])
