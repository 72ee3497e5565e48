import json
import shutil

import numpy as np
import pytest

import jointspace
from jointspace.errors import DataError, JointspaceError
from jointspace.index import Collection, build_collection
from jointspace.index.collection import POINTER_FILE


def test_search_matches_brute_force(trained_model_dir, shapes_dir, tmp_path):
    col = build_collection(trained_model_dir, shapes_dir / "train.csv", tmp_path / "col")
    assert len(col) == 96 and col.items[0]["text"] and col.items[0]["label"]
    model = jointspace.load(trained_model_dir)
    query = model.encode_text(["a red circle"])[0]
    scores = model.encode_image([it["path"] for it in col.items]) @ query
    expected = np.argsort(-scores, kind="stable")[:5]
    hits = col.search_text("a red circle", k=5)
    assert [h.item["path"] for h in hits] == [col.items[i]["path"] for i in expected]
    np.testing.assert_allclose([h.score for h in hits], scores[expected], atol=1e-5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    # an image finds itself first
    first = col.search_image(col.items[7]["path"], k=1)[0]
    assert first.item["path"] == col.items[7]["path"] and first.score == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("text_weight", [0.5, 0.8])
def test_composed_query_is_the_normalised_weighted_sum(trained_model_dir, shapes_dir, tmp_path,
                                                        text_weight):
    col = build_collection(trained_model_dir, shapes_dir / "train.csv", tmp_path / "col")
    model = jointspace.load(trained_model_dir)
    gallery = model.encode_image([it["path"] for it in col.items]).astype(np.float64)
    t = model.encode_text(["a red circle"])[0].astype(np.float64)
    v = model.encode_image([col.items[7]["path"]])[0].astype(np.float64)
    query = text_weight * t + (1 - text_weight) * v
    expected = gallery @ (query / np.linalg.norm(query))
    n = len(col)

    def scores_by_path(hits):
        assert len(hits) == n and [h.rank for h in hits] == list(range(1, n + 1))
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
        by_path = {h.item["path"]: h.score for h in hits}
        return np.array([by_path[it["path"]] for it in col.items])

    mixed = scores_by_path(col.search(text="a red circle", image=col.items[7]["path"], k=n,
                                      text_weight=text_weight))
    np.testing.assert_allclose(mixed, expected, atol=1e-5)
    assert mixed.max() <= 1 + 1e-5  # the query is a unit vector
    # composition changes the scores: neither query alone gives them
    text_only = scores_by_path(col.search_text("a red circle", k=n))
    image_only = scores_by_path(col.search_image(col.items[7]["path"], k=n))
    np.testing.assert_allclose(text_only, gallery @ t, atol=1e-5)
    assert np.abs(mixed - text_only).max() > 1e-2 and np.abs(mixed - image_only).max() > 1e-2
    top3 = [h.item["path"] for h in col.search(text="a red circle", image=col.items[7]["path"], k=3,
                                                 text_weight=text_weight)]
    assert top3 == [col.items[i]["path"] for i in np.argsort(-expected, kind="stable")[:3]]


def test_folder_source_quarantines_unreadable_images(trained_model_dir, shapes_dir, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(shapes_dir / "images" / "test", folder / "nested")
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    col = build_collection(trained_model_dir, folder, tmp_path / "col")
    assert len(col) == 12 and all(it["id"].startswith("nested/") for it in col.items)
    (qfile,) = (tmp_path / "col").glob("quarantine-imgs*.jsonl")  # the name may carry a path hash
    quarantine = [json.loads(l) for l in qfile.read_text().splitlines()]
    assert quarantine[0]["row"]["image"] == "broken.png" and "cannot be decoded" in quarantine[0]["reason"]


def test_rebuild_swaps_versions_atomically(trained_model_dir, shapes_dir, tmp_path):
    build_collection(trained_model_dir, shapes_dir / "test.csv", tmp_path / "col")
    first = json.loads((tmp_path / "col" / POINTER_FILE).read_text())["version"]
    build_collection(trained_model_dir, shapes_dir / "val.csv", tmp_path / "col")
    info = json.loads((tmp_path / "col" / POINTER_FILE).read_text())
    assert info["version"] != first and not (tmp_path / "col" / first).exists()
    assert info["count"] == 12 and Collection.open(tmp_path / "col").items[0]["id"].startswith("val-")


def test_interrupted_rebuild_leaves_last_good_version(trained_model_dir, shapes_dir, tmp_path, monkeypatch):
    build_collection(trained_model_dir, shapes_dir / "test.csv", tmp_path / "col")
    import os

    def crash(*a, **k):
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(os, "replace", crash)  # the pointer file's atomic rename
    with pytest.raises(KeyboardInterrupt):
        build_collection(trained_model_dir, shapes_dir / "val.csv", tmp_path / "col")
    monkeypatch.undo()
    col = Collection.open(tmp_path / "col")
    assert col.items[0]["id"].startswith("test-") and len(col) == 12


def test_errors(trained_model_dir, shapes_dir, tmp_path):
    with pytest.raises(DataError, match="index source not found"):
        build_collection(trained_model_dir, tmp_path / "nope", tmp_path / "col")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        build_collection(trained_model_dir, tmp_path / "empty", tmp_path / "col")
    with pytest.raises(JointspaceError, match="not a collection"):
        Collection.open(tmp_path / "empty")
    col = build_collection(trained_model_dir, shapes_dir / "test.csv", tmp_path / "col")
    with pytest.raises(JointspaceError, match="give a text query, an image query, or both"):
        col.search()
    with pytest.raises(JointspaceError, match="the text query is empty"):
        col.search(text="  ")
    assert len(col.search_text("a red circle", k=100)) == 12
