"""jointspace.vectors: Matryoshka prefixes and deterministic top-k, checked against brute force."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jointspace.vectors import prefix_normalise, top_k, top_k_mask


def _brute_top_k(scores, k, ids=None):
    """Full sort per row: by score descending, then by id (default: index) ascending."""
    rows = np.atleast_2d(scores)
    keys = np.arange(rows.shape[-1]) if ids is None else ids
    out = np.stack([np.lexsort((keys, -r))[:k] for r in rows])
    return out if np.ndim(scores) == 2 else out[0]


@pytest.mark.parametrize("k", [0, 1, 3, 7, 12, 20])
def test_top_k_breaks_ties_by_index(k):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(6, 12)).astype(np.float32)  # many ties, at every rank
    assert top_k(scores, k).tolist() == _brute_top_k(scores, k).tolist()
    assert top_k(scores[0], k).tolist() == _brute_top_k(scores[0], k).tolist()


def test_top_k_breaks_ties_by_id_also_at_the_cut():
    """All four tie, so any two of them are a valid partial sort; the two smallest ids win."""
    scores = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 1.0, 1.0]])
    ids = np.array([40, 30, 20, 10])
    assert top_k(scores, 2, ids).tolist() == [[3, 2], [1, 3]]
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 3, size=(5, 30)).astype(np.float32)
    ids = rng.permutation(1000)[:30]
    for k in (1, 4, 29, 30):
        assert top_k(scores, k, ids).tolist() == _brute_top_k(scores, k, ids).tolist()


def test_top_k_of_counts_and_of_nothing():
    counts = np.array([2, 5, 5, 0], dtype=np.uint32)  # negating unsigned counts would wrap
    assert top_k(counts, 4).tolist() == [1, 2, 0, 3]
    assert top_k(np.zeros((3, 0)), 5).shape == (3, 0)
    assert top_k(np.zeros((0, 4)), 2).shape == (0, 2)


def test_top_k_mask_takes_exactly_k_lowest_index_first():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 3, size=(8, 10)).astype(np.float64)
    for k in (1, 5, 10):
        mask = top_k_mask(scores, k)
        expected = np.zeros_like(mask)
        np.put_along_axis(expected, _brute_top_k(scores, k), True, axis=1)
        assert (mask == expected).all() and (mask.sum(axis=1) == k).all()


def test_prefix_normalise_numpy_and_torch_agree():
    x = np.random.default_rng(3).normal(size=(5, 16)).astype(np.float32)
    for dim in (1, 4, 16):
        p = prefix_normalise(x, dim)
        assert p.dtype == np.float32 and p.shape == (5, dim)
        np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(p, x[:, :dim] / np.linalg.norm(x[:, :dim], axis=1, keepdims=True),
                                   rtol=1e-6)
        t = prefix_normalise(torch.from_numpy(x), dim)
        assert torch.equal(t, F.normalize(torch.from_numpy(x)[:, :dim], dim=-1))
        np.testing.assert_allclose(t.numpy(), p, rtol=1e-6)


def test_prefix_normalise_of_a_zero_prefix_is_zero_not_nan():
    x = np.array([[0.0, 0.0, 5.0], [3.0, 4.0, 0.0]], dtype=np.float32)
    assert prefix_normalise(x, 2).tolist() == [[0.0, 0.0], [0.6000000238418579, 0.800000011920929]]
    assert prefix_normalise(torch.from_numpy(x), 2)[0].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("dim", [0, 4, -1])
def test_prefix_normalise_refuses_sizes_it_cannot_take(dim):
    with pytest.raises(ValueError, match="cannot truncate 3-dim embeddings"):
        prefix_normalise(np.ones((2, 3)), dim)


def test_exact_store_top_k_breaks_a_tie_at_the_cut_by_id():
    """index.store.top_k takes its top-k from here: of six equal scores, the two smallest ids
    (an argpartition alone may keep any two)."""
    from jointspace.index.store import top_k as store_top_k
    scores, ids = store_top_k(np.ones((1, 6), np.float32), np.arange(6)[::-1].copy(), 2)
    assert ids.tolist() == [[0, 1]] and scores.tolist() == [[1.0, 1.0]]
