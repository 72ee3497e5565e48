"""Linear probe and k-NN on embeddings with known structure, k-NN against brute force."""
import numpy as np
import pytest

from jointspace.eval.probe import C_GRID, knn_accuracy, linear_probe


def _blobs(rng, n, classes=4, d=8, spread=0.3):
    centres = rng.standard_normal((classes, d))
    y = rng.integers(0, classes, n)
    x = centres[y] + spread * rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.array([f"c{i}" for i in y])


def test_separable_classes_are_learned_and_random_labels_are_not():
    rng = np.random.default_rng(0)
    x, y = _blobs(rng, 400)
    out = linear_probe(x[:300], y[:300], x[300:], y[300:])
    assert out["acc1"] > 0.95 and out["C"] in C_GRID and set(out["validation_acc1"]) == set(map(str, C_GRID))
    shuffled = rng.permutation(y)
    noise = linear_probe(x[:300], shuffled[:300], x[300:], shuffled[300:])
    assert noise["acc1"] < 0.45  # chance is 0.25
    assert linear_probe(x[:300], y[:300], x[300:], y[300:], C=0.5)["C"] == 0.5


def test_knn_equals_a_brute_force_vote():
    rng = np.random.default_rng(1)
    x, y = _blobs(rng, 300, spread=0.8)
    train_x, train_y, test_x, test_y = x[:200], y[:200], x[200:], y[200:]
    k = 7
    sims = test_x @ train_x.T
    predicted = []
    for row in sims:
        votes = {}
        for j in np.argsort(-row)[:k]:
            votes[train_y[j]] = votes.get(train_y[j], 0) + 1
        best = max(votes.values())
        predicted.append(sorted(lab for lab, v in votes.items() if v == best)[0])
    expected = float(np.mean(np.array(predicted) == test_y))
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=k)["acc1"] == pytest.approx(expected)
    assert 0.3 < expected < 1.0


def test_evaluate_fits_probes_on_the_train_manifest(trained_model_dir, shapes_dir, tmp_path):
    from jointspace.eval.run import evaluate
    from jointspace.model import load
    results = evaluate(trained_model_dir, shapes_dir / "test.csv", out_dir=tmp_path,
                       train_manifest=shapes_dir / "train.csv", probe_c=1.0)
    model = load(trained_model_dir)
    import csv
    rows = {split: list(csv.DictReader(open(shapes_dir / f"{split}.csv"))) for split in ("train", "test")}
    x = {s: model.encode_image([shapes_dir / r["image"] for r in rows[s]]) for s in rows}
    y = {s: [r["label"] for r in rows[s]] for s in rows}
    direct = linear_probe(x["train"], y["train"], x["test"], y["test"], C=1.0)
    assert results["linear_probe"]["acc1"] == pytest.approx(direct["acc1"])
    assert results["knn"]["acc1"] == pytest.approx(knn_accuracy(x["train"], y["train"], x["test"], y["test"])["acc1"])
    assert results["metrics"]["linear_probe_acc1"] == results["linear_probe"]["acc1"]
    only = evaluate(trained_model_dir, shapes_dir / "test.csv", tasks=["retrieval"],
                    train_manifest=shapes_dir / "train.csv")
    assert "zero_shot" not in only and "linear_probe" not in only and "retrieval" in only


def test_tasks_run_only_what_is_asked_and_refuse_what_cannot_run(trained_model_dir, shapes_dir,
                                                                  tmp_path):
    import csv
    from jointspace.errors import ConfigError
    from jointspace.eval.run import evaluate
    zero_shot = evaluate(trained_model_dir, shapes_dir / "test.csv", tasks=["zero_shot"])
    assert "zero_shot" in zero_shot and "retrieval" not in zero_shot
    assert zero_shot["tasks"] == ["zero_shot"] and "acc1" in zero_shot["metrics"]
    with pytest.raises(ConfigError, match="probe needs a labelled training manifest"):
        evaluate(trained_model_dir, shapes_dir / "test.csv", tasks=["retrieval", "probe"])
    # the same manifest without labels: zero-shot cannot run
    rows = list(csv.DictReader(open(shapes_dir / "test.csv")))
    unlabelled = tmp_path / "unlabelled.csv"
    with open(unlabelled, "w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "text"])
        writer.writeheader()
        writer.writerows({"image": str(shapes_dir / r["image"]), "text": r["text"]} for r in rows)
    with pytest.raises(ConfigError, match="zero_shot needs a label on every row"):
        evaluate(trained_model_dir, unlabelled, tasks=["zero_shot"])
    default = evaluate(trained_model_dir, unlabelled)  # by default: what the inputs allow
    assert "zero_shot" not in default and "retrieval" in default
    assert default["tasks"] == ["geometry", "retrieval"]

