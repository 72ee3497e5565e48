import numpy as np
import pytest
from sklearn.metrics import top_k_accuracy_score

from jointspace.eval import evaluate
from jointspace.eval.retrieval import positive_ranks, recall_at_k, retrieval_metrics
from jointspace.eval.zeroshot import zero_shot_metrics


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_recall_matches_brute_force():
    rng = np.random.default_rng(0)
    images = _unit(rng, 300, 16)
    texts = _unit(rng, 300, 16) + 0.8 * images  # correlated pairs, so recall is not trivial
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    expected = {}
    for k in (1, 5, 10):
        hits = 0
        for i in range(len(texts)):
            order = sorted(range(len(images)), key=lambda j: -float(texts[i] @ images[j]))
            hits += i in order[:k]
        expected[f"R@{k}"] = hits / len(texts)
    got = recall_at_k(texts, images, (1, 5, 10))
    assert got == pytest.approx(expected)
    assert 0.05 < got["R@1"] < 1  # neither chance nor perfect
    # the blocked computation agrees with one block
    np.testing.assert_array_equal(positive_ranks(texts, images, block=7), positive_ranks(texts, images))


def test_recall_agrees_with_sklearn_top_k():
    rng = np.random.default_rng(1)
    a, b = _unit(rng, 50, 8), _unit(rng, 50, 8)
    scores = a @ b.T
    for k in (1, 5):
        assert recall_at_k(a, b, (k,))[f"R@{k}"] == pytest.approx(
            top_k_accuracy_score(np.arange(50), scores, k=k, labels=np.arange(50)))


def test_ties_count_against_the_positive():
    x = np.ones((4, 2), dtype=np.float32) / np.sqrt(2)
    assert recall_at_k(x, x, (1, 4)) == {"R@1": 0.0, "R@4": 1.0}
    assert retrieval_metrics(x, x)["chance"]["R@1"] == 0.25


def test_zero_shot_matches_sklearn():
    rng = np.random.default_rng(2)
    classes = [f"c{i}" for i in range(10)]
    class_emb = _unit(rng, 10, 16)
    y = rng.integers(0, 10, 200)
    images = class_emb[y] + 0.9 * _unit(rng, 200, 16)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    got = zero_shot_metrics(images, [classes[i] for i in y], classes, class_emb)
    scores = images @ class_emb.T
    assert got["top1"] == pytest.approx(top_k_accuracy_score(y, scores, k=1, labels=range(10)))
    assert got["top5"] == pytest.approx(top_k_accuracy_score(y, scores, k=5, labels=range(10)))
    assert got["chance_top1"] == 0.1 and 0.1 < got["top1"] < 1
    with pytest.raises(ValueError, match="labels not among the classes"):
        zero_shot_metrics(images, ["zzz"] * 200, classes, class_emb)


def test_evaluate_writes_results(trained_model_dir, shapes_dir, tmp_path):
    results = evaluate(trained_model_dir, shapes_dir / "test.csv", out_dir=tmp_path,
                       subsets={"some": ["red circle", "blue square"]})
    import json
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["retrieval"] == results["retrieval"]
    assert results["n"] == 12 and results["zero_shot"]["n"] == 12
    assert set(results["retrieval"]["text_to_image"]) == {"R@1", "R@5", "R@10"}


def test_matryoshka_sizes_are_reported(shapes_dir, tiny_run, tmp_path):
    from jointspace.train.trainer import train
    import jointspace
    tiny_run.model.matryoshka_dims = [16, 8]
    train(tiny_run, shapes_dir / "train.csv", tmp_path / "m", stop_after=None)
    results = evaluate(tmp_path / "m", shapes_dir / "test.csv")
    assert set(results["matryoshka"]) == {"32", "16", "8"}
    assert results["matryoshka"]["32"]["retrieval"] == results["retrieval"]
    model = jointspace.load(tmp_path / "m")
    small = model.encode_image([shapes_dir / "images/test/test-000000.png"], dim=8)
    full = model.encode_image([shapes_dir / "images/test/test-000000.png"])
    np.testing.assert_allclose(small, full[:, :8] / np.linalg.norm(full[:, :8]), atol=1e-6)
