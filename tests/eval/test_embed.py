"""embed_manifest: each distinct item once, and a cache that is never stale."""
import os

import numpy as np
import torch

from jointspace.eval.embed import embed_manifest
from jointspace.eval.run import evaluate
from jointspace.model import load
from jointspace.model_io import model_fingerprint


def test_cache_hit_equals_fresh_embedding_and_misses_on_any_change(trained_model_dir, shapes_dir, tmp_path,
                                                                    monkeypatch):
    model = load(trained_model_dir)
    test = shapes_dir / "test.csv"
    first = embed_manifest(model, test, ["image", "text"], cache_dir=tmp_path)
    assert not first.from_cache and len(list(tmp_path.glob("embeddings-*.npz"))) == 1
    calls = []
    original = model.encode
    monkeypatch.setattr(model, "encode", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    second = embed_manifest(model, test, ["image", "text"], cache_dir=tmp_path)
    assert second.from_cache and calls == []
    for f in ("image", "text"):
        np.testing.assert_array_equal(second.embeddings[f], first.embeddings[f])
        np.testing.assert_allclose(first.embeddings[f], original(f, [r.fields[f] for r in first.records]),
                                   atol=1e-6)
    # a replaced image file (new mtime) and changed weights both miss the cache
    image = first.records[0].image
    os.utime(image, ns=(os.stat(image).st_atime_ns, os.stat(image).st_mtime_ns + 10**9))
    assert not embed_manifest(model, test, ["image", "text"], cache_dir=tmp_path).from_cache
    before = model_fingerprint(model)
    with torch.no_grad():
        model.towers["text"].proj.weight.mul_(1.01)
    assert model_fingerprint(model) != before
    assert not embed_manifest(model, test, ["image", "text"], cache_dir=tmp_path).from_cache


def test_repeated_items_get_identical_vectors_and_a_damaged_cache_is_recomputed(
        trained_model_dir, shapes_dir, tmp_path):
    model = load(trained_model_dir)
    # absolute image paths, so the manifest can live elsewhere
    rows = (shapes_dir / "test.csv").read_text().replace(",images/", f",{shapes_dir}/images/").splitlines()
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join([rows[0], rows[1], rows[1].replace("test-", "copy-", 1)]) + "\n")
    emb = embed_manifest(model, dup, ["image", "text"], cache_dir=tmp_path)
    np.testing.assert_array_equal(emb.embeddings["text"][0], emb.embeddings["text"][1])
    np.testing.assert_array_equal(emb.embeddings["image"][0], emb.embeddings["image"][1])
    (cache,) = tmp_path.glob("embeddings-*.npz")
    cache.write_bytes(b"not a zip")
    again = embed_manifest(model, dup, ["image", "text"], cache_dir=tmp_path)
    assert not again.from_cache
    np.testing.assert_array_equal(again.embeddings["text"], emb.embeddings["text"])


def test_evaluate_twice_reads_the_cache_and_gives_the_same_numbers(trained_model_dir, shapes_dir, tmp_path):
    a = evaluate(trained_model_dir, shapes_dir / "test.csv", out_dir=tmp_path)
    b = evaluate(trained_model_dir, shapes_dir / "test.csv", out_dir=tmp_path)
    assert not a["embeddings_from_cache"] and b["embeddings_from_cache"]
    assert a["retrieval"] == b["retrieval"] and a["zero_shot"] == b["zero_shot"]


def test_a_fully_cached_evaluation_never_builds_the_model(trained_model_dir, shapes_dir, tmp_path,
                                                         monkeypatch):
    first = evaluate(trained_model_dir, shapes_dir / "test.csv", out_dir=tmp_path,
                     train_manifest=shapes_dir / "train.csv")

    def refuse(folder):
        raise AssertionError("the model was loaded although everything was cached")
    monkeypatch.setattr("jointspace.eval.embed.load", refuse)
    second = evaluate(trained_model_dir, shapes_dir / "test.csv", out_dir=tmp_path,
                      train_manifest=shapes_dir / "train.csv")
    for key in ("retrieval", "zero_shot", "linear_probe", "knn", "geometry", "metrics"):
        assert second[key] == first[key], key
    assert second["embeddings_from_cache"]


def test_folder_fingerprint_follows_weights_and_assets_not_outputs(trained_model_dir, tmp_path):
    import shutil
    from jointspace.model_io import folder_fingerprint
    copy = tmp_path / "m"
    shutil.copytree(trained_model_dir, copy)
    before = folder_fingerprint(copy)
    (copy / "eval").mkdir(exist_ok=True)
    (copy / "eval" / "results.json").write_text("{}")
    (copy / "log.jsonl").write_text("")
    assert folder_fingerprint(copy) == before
    tokenizer = copy / "text" / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text() + "\n")  # any change to a tower's assets
    assert folder_fingerprint(copy) != before
