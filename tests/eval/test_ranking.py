"""mAP@k and CSLS against brute-force versions written here."""
import numpy as np
import pytest

from jointspace.eval.ranking import csls_embeddings, mean_average_precision, retrieval_extras
from jointspace.eval.retrieval import positive_ranks


def _map_brute(q, g, qg, gg, k):
    total = 0.0
    for i in range(len(q)):
        scores = [float(q[i] @ g[j]) for j in range(len(g))]
        positive = [gg[j] == qg[i] for j in range(len(g))]
        # descending score, a negative before a positive at an equal score
        order = sorted(range(len(g)), key=lambda j: (-scores[j], positive[j]))[:k]
        hits, ap = 0, 0.0
        for r, j in enumerate(order, start=1):
            if positive[j]:
                hits += 1
                ap += hits / r
        total += ap / min(k, sum(positive))
    return total / len(q)


def test_map_equals_brute_force_with_groups_and_ties():
    rng = np.random.default_rng(0)
    g = rng.integers(-2, 3, size=(40, 4)).astype(np.float32)  # small integers: many exact ties
    q = rng.integers(-2, 3, size=(40, 4)).astype(np.float32)
    groups = list(rng.integers(0, 12, size=40))
    for k in (1, 5, 10):
        assert mean_average_precision(q, g, groups, groups, k, block=7) == pytest.approx(
            _map_brute(q, g, groups, groups, k))
    assert mean_average_precision(q, g, k=10) == pytest.approx(_map_brute(q, g, range(40), range(40), 10))


def test_map_of_a_perfect_and_of_a_reversed_ranking():
    x = np.eye(5, dtype=np.float32)
    assert mean_average_precision(x, x, k=10) == 1.0
    # query i's positive is ranked last of 5 by every query: AP@10 = 1/5
    assert mean_average_precision(-x + 0.0, x, k=10) == pytest.approx(0.2)


def test_csls_ranks_equal_the_brute_force_csls_matrix_and_demote_a_hub():
    rng = np.random.default_rng(1)
    centre = rng.standard_normal(8)
    centre /= np.linalg.norm(centre)
    q = centre + rng.standard_normal((60, 8)) / np.sqrt(8)  # queries around a common direction
    g = q + rng.standard_normal((60, 8)) / np.sqrt(2)       # gallery i: query i's noisy pair
    g[0] = centre  # a hub: close to every query
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    cos = q @ g.T
    k = 10
    r_g = np.sort(cos, axis=0)[-k:].mean(0)
    r_q = np.sort(cos, axis=1)[:, -k:].mean(1)
    csls = 2 * cos - r_g[None] - r_q[:, None]
    cq, cg = csls_embeddings(q, g, k, block=7)
    np.testing.assert_allclose(cq @ cg.T, 2 * cos - r_g[None], atol=1e-10)
    brute = np.array([np.count_nonzero(np.delete(csls[i], i) >= csls[i, i]) for i in range(60)])
    assert np.array_equal(positive_ranks(cq, cg), brute)
    top_plain = np.argmax(cos, axis=1)
    top_csls = np.argmax(csls, axis=1)
    assert (top_plain == 0).sum() >= 15 and (top_csls == 0).sum() <= (top_plain == 0).sum() / 2


def test_retrieval_extras_layout():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((20, 4)), rng.standard_normal((20, 4))
    out = retrieval_extras(a, b, None, ("audio", "text"))
    assert set(out) == {"audio_to_text", "text_to_audio"}
    assert set(out["audio_to_text"]) == {"mAP@10", "csls_R@1", "csls_R@5", "csls_R@10",
                                         "csls_median_rank", "csls_mean_rank", "csls_mAP@10"}
