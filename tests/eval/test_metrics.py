import numpy as np
import pytest
from sklearn.metrics import top_k_accuracy_score

from jointspace.eval import evaluate
from jointspace.eval.retrieval import positive_ranks, recall_at_k, retrieval_metrics
from jointspace.eval.zeroshot import DEFAULT_TEMPLATES, zero_shot_metrics


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
    assert retrieval_metrics(x, x)["chance"]["text_to_image"]["R@1"] == 0.25


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
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix
    predicted = scores.argmax(1)
    assert got["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(y, predicted))
    assert got["confusion"] == confusion_matrix(y, predicted, labels=range(10)).tolist()
    assert got["mean_per_class_recall"] != pytest.approx(got["top1"])  # unbalanced classes differ
    with pytest.raises(ValueError, match="labels not among the classes"):
        zero_shot_metrics(images, ["zzz"] * 200, classes, class_emb)


def _plain(block):
    """Recall@K, median and mean rank of a direction (without mAP and the CSLS figures)."""
    return {k: v for k, v in block.items() if "mAP" not in k and "csls" not in k}


def _brute_recall(scores, groups, ks=(1, 5, 10)):
    """R@k and 1-based median and mean rank, ties against the query, by sorting each row."""
    ranks = []
    for i in range(len(scores)):
        order = sorted(range(scores.shape[1]), key=lambda j: (-scores[i, j], groups[j] == groups[i]))
        ranks.append(next(p for p, j in enumerate(order) if groups[j] == groups[i]))
    ranks = np.array(ranks)
    return {**{f"R@{k}": float(np.mean(ranks < k)) for k in ks}, "median_rank": float(np.median(ranks + 1)),
            "mean_rank": float(np.mean(ranks + 1))}


def _independent(model_dir, rows):
    """The model and the embeddings of manifest rows, computed without evaluate()."""
    import jointspace
    model = jointspace.load(model_dir)
    image = model.encode_image([r["path"] for r in rows], batch_size=3)
    text = np.concatenate([model.encode_text([r["text"]]) for r in rows])  # one at a time
    return model, image.astype(np.float64), text.astype(np.float64)


def _rows(manifest):
    import csv
    with open(manifest) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["path"] = str(manifest.parent / r["image"])
    return rows


def _check_views(results, prefix, image, text, rows):
    """Every retrieval view of ``results`` against the brute force on these rows."""
    captions, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    n = len(rows)
    for direction, scores in (("text_to_image", text @ image.T), ("image_to_text", image @ text.T)):
        assert _plain(results[prefix][direction]) == pytest.approx(_brute_recall(scores, captions))
        assert results[prefix]["strict"][direction] == pytest.approx(_brute_recall(scores, list(range(n))))
        by_label = f"retrieval_by_label{prefix[len('retrieval'):]}"
        assert results[by_label][direction] == pytest.approx(_brute_recall(scores, labels))
    assert results[prefix]["n"] == n and results[prefix]["grouped_by"] == "text"


def test_evaluate_writes_results(trained_model_dir, shapes_dir, tmp_path):
    subset = ["orange hexagon", "yellow diamond", "red triangle"]  # in the fixture's test split
    results = evaluate(trained_model_dir, shapes_dir / "test.csv", out_dir=tmp_path,
                       subsets={"some": subset, "absent": ["purple circle"]})
    import json
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["retrieval"] == results["retrieval"]
    assert results["n"] == 12 and results["zero_shot"]["n"] == 12
    assert set(results["retrieval"]["text_to_image"]) == {
        "R@1", "R@5", "R@10", "median_rank", "mean_rank", "mAP@10", "csls_R@1", "csls_R@5",
        "csls_R@10", "csls_median_rank", "csls_mean_rank", "csls_mAP@10"}
    metrics = on_disk["metrics"]  # the flat keys, CLIP_benchmark's names
    assert metrics["image_retrieval_recall@5"] == results["retrieval"]["text_to_image"]["R@5"]
    assert metrics["text_retrieval_recall@1"] == results["retrieval"]["image_to_text"]["R@1"]
    assert metrics["image_retrieval_map@10"] == results["retrieval"]["text_to_image"]["mAP@10"]
    assert metrics["text_retrieval_csls_recall@1"] == results["retrieval"]["image_to_text"]["csls_R@1"]
    assert metrics["acc1"] == results["zero_shot"]["top1"]
    assert not any(key.endswith("_absent") for key in results)  # no rows, no figures
    rows = _rows(shapes_dir / "test.csv")
    model, image, text = _independent(trained_model_dir, rows)
    _check_views(results, "retrieval", image, text, rows)
    # the subset: its rows only, scored against each other, recomputed by hand
    keep = [i for i, r in enumerate(rows) if r["label"] in subset]
    assert len(keep) == 5
    sub = [rows[i] for i in keep]
    _check_views(results, "retrieval_some", image[keep], text[keep], sub)
    classes = sorted({r["label"] for r in rows})
    prompts = model.encode_text([t.format(label=c) for c in classes for t in DEFAULT_TEMPLATES])
    class_emb = prompts.reshape(len(classes), len(DEFAULT_TEMPLATES), -1).mean(1)
    class_emb /= np.linalg.norm(class_emb, axis=1, keepdims=True)
    predicted = [classes[j] for j in np.argmax(image[keep] @ class_emb.T, axis=1)]
    expected_top1 = np.mean([p == r["label"] for p, r in zip(predicted, sub)])
    z = results["zero_shot_some"]
    assert z["top1"] == pytest.approx(expected_top1) and z["n"] == 5
    assert z["n_classes"] == len(classes)
    assert set(z["per_class_top1"]) == set(subset)


def _write_manifest(path, rows):
    import csv
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "image", "text", "label"])
        writer.writeheader()
        for r in rows:
            writer.writerow({"id": r["id"], "image": r["path"], "text": r["text"], "label": r["label"]})
    return path


def test_evaluate_groups_duplicate_captions(trained_model_dir, shapes_dir, tmp_path):
    """Rows 0-3 share one caption, rows 4-5 another: group-aware figures count any of
    them, the strict ones cannot beat the ceiling, and the ceiling is computed right."""
    rows = _rows(shapes_dir / "test.csv")
    for i in (1, 2, 3):
        rows[i]["text"] = rows[0]["text"]
    rows[5]["text"] = rows[4]["text"]
    manifest = _write_manifest(tmp_path / "dups.csv", rows)
    results = evaluate(trained_model_dir, manifest)
    _, image, text = _independent(trained_model_dir, rows)
    _check_views(results, "retrieval", image, text, rows)
    r = results["retrieval"]
    assert r["n_groups"] == 8
    # image→text: only the 6 rows with a unique caption can rank their own text first
    assert r["strict"]["ceiling"]["image_to_text"] == pytest.approx({"R@1": 6 / 12, "R@5": 1.0, "R@10": 1.0})
    assert r["strict"]["ceiling"]["text_to_image"] == pytest.approx(
        {"R@1": (6 + 1 + 1) / 12, "R@5": 1.0, "R@10": 1.0})
    for direction in ("text_to_image", "image_to_text"):
        for k, bound in r["strict"]["ceiling"][direction].items():
            assert r["strict"][direction][k] <= bound
    # random order: a query whose caption m rows share hits at R@1 with probability m / 12
    for direction in ("text_to_image", "image_to_text"):  # one image per row: symmetric
        assert r["chance"][direction]["R@1"] == pytest.approx((4 * 4 / 12 + 2 * 2 / 12 + 6 / 12) / 12)


def test_evaluate_counts_an_image_captioned_twice_once(trained_model_dir, shapes_dir, tmp_path):
    """COCO-style rows (one image, two captions): the image is one gallery item and one
    query, so nothing caps the strict figures and the gallery has 11 images."""
    rows = _rows(shapes_dir / "test.csv")
    rows[1]["path"] = rows[0]["path"]  # image 0 now has rows 0 and 1, with different captions
    manifest = _write_manifest(tmp_path / "twice.csv", rows)
    results = evaluate(trained_model_dir, manifest)
    r = results["retrieval"]
    assert r["gallery"] == {"image": 11, "text": 12}
    for direction in ("text_to_image", "image_to_text"):
        assert set(r["strict"]["ceiling"][direction].values()) == {1.0}
    # text→image averages 12 caption rows over 11 images, image→text 11 images over 12 rows
    assert r["chance"]["text_to_image"]["R@1"] == pytest.approx(1 / 11)
    assert r["chance"]["image_to_text"]["R@1"] == pytest.approx((10 / 12 + 2 / 12) / 11)


def test_evaluate_uses_the_group_column(trained_model_dir, shapes_dir, tmp_path):
    import csv
    rows = _rows(shapes_dir / "test.csv")
    groups = [f"scene-{i // 3}" for i in range(len(rows))]  # four groups of three
    manifest = tmp_path / "grouped.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "image", "text", "label", "group"])
        writer.writeheader()
        for r, g in zip(rows, groups):
            writer.writerow({"id": r["id"], "image": r["path"], "text": r["text"], "label": r["label"],
                             "group": g})
    results = evaluate(trained_model_dir, manifest)
    _, image, text = _independent(trained_model_dir, rows)
    assert results["retrieval"]["grouped_by"] == "group"
    for direction, scores in (("text_to_image", text @ image.T), ("image_to_text", image @ text.T)):
        assert _plain(results["retrieval"][direction]) == pytest.approx(_brute_recall(scores, groups))
    # captions are all distinct here, so nothing caps the strict figures
    assert set(results["retrieval"]["strict"]["ceiling"]["image_to_text"].values()) == {1.0}


def test_evaluate_maps_column_names(trained_model_dir, shapes_dir, tmp_path):
    import csv
    rows = _rows(shapes_dir / "test.csv")
    manifest = tmp_path / "openclip.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, ["filepath", "caption", "label"])
        writer.writeheader()
        for r in rows:
            writer.writerow({"filepath": r["path"], "caption": r["text"], "label": r["label"]})
    renamed = evaluate(trained_model_dir, manifest, columns={"image": "filepath", "text": "caption"})
    plain = evaluate(trained_model_dir, shapes_dir / "test.csv")
    assert renamed["n"] == 12
    for key in ("retrieval", "retrieval_by_label", "zero_shot"):
        assert renamed[key] == plain[key]


def test_evaluate_device_and_batch_size(trained_model_dir, shapes_dir):
    import torch
    from jointspace.errors import ConfigError
    default = evaluate(trained_model_dir, shapes_dir / "test.csv")
    small = evaluate(trained_model_dir, shapes_dir / "test.csv", device="cpu", batch_size=5)
    assert small["device"] == "cpu" and default["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    for key in ("retrieval", "retrieval_by_label"):
        for direction in ("text_to_image", "image_to_text"):
            assert small[key][direction] == pytest.approx(default[key][direction])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            evaluate(trained_model_dir, shapes_dir / "test.csv", device="cuda")
    with pytest.raises(ConfigError, match="not a device name"):
        evaluate(trained_model_dir, shapes_dir / "test.csv", device="gpu-please")


def test_matryoshka_sizes_are_reported(shapes_dir, tiny_run, tmp_path):
    from jointspace.train.trainer import train
    import jointspace
    tiny_run.model.matryoshka_dims = [16, 8]
    train(tiny_run, shapes_dir / "train.csv", tmp_path / "m", stop_after=None)
    results = evaluate(tmp_path / "m", shapes_dir / "test.csv", out_dir=tmp_path / "ev")
    assert set(results["matryoshka"]) == {"32", "16", "8"}
    assert 'alt="matryoshka curve"' in (tmp_path / "ev" / "report.html").read_text()
    assert results["matryoshka"]["32"]["retrieval"] == results["retrieval"]
    full_geometry = {k: v for k, v in results["geometry"].items() if not k.startswith("hubs_")}
    assert results["matryoshka"]["32"]["geometry"] == pytest.approx(full_geometry, rel=1e-6)
    # an 8-dimensional prefix can use at most 8 dimensions
    assert results["matryoshka"]["8"]["geometry"]["rankme_image"] <= 8 + 1e-6
    model = jointspace.load(tmp_path / "m")
    small = model.encode_image([shapes_dir / "images/test/test-000000.png"], dim=8)
    full = model.encode_image([shapes_dir / "images/test/test-000000.png"])
    np.testing.assert_allclose(small, full[:, :8] / np.linalg.norm(full[:, :8]), atol=1e-6)
