"""Collections: search against brute force, incremental ingest, quarantine, the model
fingerprint, filters and pages, calibrated composition, the writer lock and live readers."""
import shutil

import numpy as np
import pytest
from PIL import Image

import jointspace
from jointspace.errors import DataError, JointspaceError
from jointspace.index import Collection, Term, build_collection, index_source
from jointspace.index.catalog import ItemRow
from jointspace.index.collection import WriterLock


@pytest.fixture(scope="module")
def model(trained_model_dir):
    return jointspace.load(trained_model_dir)


def _paths(col, hits):
    return [h.item["path"] for h in hits]


def test_search_matches_brute_force(trained_model_dir, shapes_dir, tmp_path, model):
    col = build_collection(trained_model_dir, shapes_dir / "train.csv", tmp_path / "col")
    assert len(col) == 96 and col.modalities == ["image", "text"]
    ids, vectors = col.catalog.vectors("image")
    items = col.catalog.items(ids)
    paths = [items[i]["path"] for i in ids]
    np.testing.assert_allclose(vectors, model.encode_image(paths), atol=1e-5)
    query = model.encode_text(["a red circle"])[0]
    scores = vectors @ query
    expected = np.argsort(-scores, kind="stable")[:5]
    hits = col.search_text("a red circle", k=5)
    assert _paths(col, hits) == [paths[i] for i in expected]
    np.testing.assert_allclose([h.score for h in hits], scores[expected], atol=1e-5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    first = col.search_image(paths[7], k=1)[0]  # an image finds itself
    assert first.item["path"] == paths[7] and first.score == pytest.approx(1, abs=1e-5)
    # the manifest's texts are indexed too: text→text search
    text_hit = col.search(text=items[ids[3]]["text"], target="text", k=1)[0]
    assert text_hit.item["text"] == items[ids[3]]["text"] and text_hit.score == pytest.approx(1, abs=1e-5)
    assert text_hit.item["label"] and text_hit.item["meta"]["id"].startswith("train-")


def test_pages_and_filters(trained_model_dir, shapes_dir, tmp_path):
    col = build_collection(trained_model_dir, shapes_dir / "train.csv", tmp_path / "col")
    full = col.search(text="a red circle", k=30)
    pages = [h for offset in (0, 10, 20) for h in col.search(text="a red circle", k=10, offset=offset)]
    assert [h.item["id"] for h in pages] == [h.item["id"] for h in full]
    assert [h.rank for h in pages] == list(range(1, 31))
    everything = col.search(text="a red circle", k=100)
    assert len(everything) == 96
    label = full[0].item["label"]
    only = col.search(text="a red circle", k=100, where={"label": label})
    # a filter is the full ranking restricted to the matching items, in the same order
    assert [h.item["id"] for h in only] == [h.item["id"] for h in everything
                                             if h.item["label"] == label]
    two = col.search(text="a red circle", k=100, where={"label": [label, full[1].item["label"]]})
    assert {h.item["label"] for h in two} == {label, full[1].item["label"]}
    by_meta = col.search(text="a", k=5, where={"id": "train-000003"})  # a metadata key
    assert [h.item["meta"]["id"] for h in by_meta] == ["train-000003"]
    assert col.search(text="a", k=5, where={"label": "no such label"}) == []
    with pytest.raises(JointspaceError, match="cannot filter on"):
        col.search(text="a", where={"meta'); DROP TABLE items; --": 1})
    with pytest.raises(JointspaceError, match="k must be"):
        col.search(text="a", k=0)
    assert col.search(text="a", k=5, offset=10 ** 12) == []  # past the end: empty, and cheap
    assert [h.rank for h in col.search(text="a", k=5, offset=94)] == [95, 96]


def _shapes_folder(shapes_dir, folder, n=10):
    folder.mkdir(parents=True)
    for path in sorted((shapes_dir / "images" / "train").glob("*.png"))[:n]:
        shutil.copy(path, folder / path.name)
    return folder


def test_incremental_ingest_upsert_and_delete_missing(trained_model_dir, shapes_dir, tmp_path, model):
    folder = _shapes_folder(shapes_dir, tmp_path / "imgs")
    col_dir = tmp_path / "col"
    first = index_source(col_dir, trained_model_dir, folder)
    assert (first.added, first.unchanged) == (10, 0)
    seq = Collection.open(col_dir).catalog.seq()
    again = index_source(col_dir, trained_model_dir, folder)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 10)
    assert Collection.open(col_dir).catalog.seq() == seq  # nothing written
    # change one file's content (same name), add one, remove one
    changed = sorted(folder.glob("*.png"))[0]
    Image.new("RGB", (64, 64), (250, 10, 10)).save(changed)
    shutil.copy(sorted((shapes_dir / "images" / "val").glob("*.png"))[0], folder / "new.png")
    removed = sorted(folder.glob("*.png"))[-1]
    removed.unlink()
    kept = index_source(col_dir, trained_model_dir, folder)
    assert (kept.added, kept.updated, kept.unchanged, kept.deleted) == (1, 1, 8, 0)
    col = Collection.open(col_dir)
    assert len(col) == 11  # without --delete-missing the gone file stays
    hit = col.search(image=changed, k=1)[0]
    assert hit.item["path"] == str(changed.resolve()) and hit.score == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(col.catalog.vectors("image", [hit.item["id"]])[1][0],
                               model.encode_image([changed])[0], atol=1e-5)
    gone = index_source(col_dir, trained_model_dir, folder, delete_missing=True)
    assert (gone.deleted, gone.unchanged) == (1, 10)
    col = Collection.open(col_dir)
    assert len(col) == 10 and str(removed.resolve()) not in _paths(col, col.search(text="a", k=50))
    assert col.store("image").count() == 10


def test_bad_files_are_quarantined_not_fatal(trained_model_dir, shapes_dir, tmp_path):
    folder = _shapes_folder(shapes_dir, tmp_path / "imgs", n=4)
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "empty.txt").write_text("   ")
    (folder / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (folder / "caption.txt").write_text("a red circle\n")
    (folder / "notes.md").write_text("not an indexed kind")
    report = index_source(tmp_path / "col", trained_model_dir, folder)
    assert report.added == 5 and report.quarantined == 3  # 4 images + 1 text file
    reasons = {q.path.rsplit("/", 1)[-1]: q.reason for q in report.problems}
    assert "cannot be decoded" in reasons["broken.png"]
    assert "empty" in reasons["empty.txt"] and "not UTF-8" in reasons["latin1.txt"]
    col = Collection.open(tmp_path / "col")
    assert {q.reason for q in col.quarantined()} == set(reasons.values())
    assert col.modalities == ["image", "text"]
    assert col.search(text="a red circle", target="text", k=1)[0].item["text"] == "a red circle"
    # unchanged bad files are not re-tried; a fixed one is indexed and leaves the quarantine
    assert index_source(tmp_path / "col", trained_model_dir, folder).quarantined == 0
    shutil.copy(sorted((shapes_dir / "images" / "val").glob("*.png"))[0], folder / "broken.png")
    fixed = index_source(tmp_path / "col", trained_model_dir, folder)
    assert fixed.added == 1 and len(Collection.open(tmp_path / "col").quarantined()) == 2
    # a good file that goes bad is quarantined with its reason; its item stays as indexed
    (folder / "broken.png").write_bytes(b"\x89PNG truncated")
    index_source(tmp_path / "col", trained_model_dir, folder)
    col = Collection.open(tmp_path / "col")
    assert len(col) == 6 and len(col.quarantined()) == 3


def test_manifest_bad_rows_are_quarantined(trained_model_dir, shapes_dir, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,image,text,label\n"
                        f"a,{shapes_dir / 'images/test/test-000000.png'},a red circle,red circle\n"
                        f"b,{tmp_path / 'missing.png'},a blue square,blue square\n"
                        "c,,no image,x\n")
    report = index_source(tmp_path / "col", trained_model_dir, manifest)
    assert report.added == 1 and report.quarantined == 2
    reasons = sorted(q.reason for q in report.problems)
    assert "empty 'image'" in reasons[0] and "not found" in reasons[1]
    # the other columns are metadata, filterable
    col = Collection.open(tmp_path / "col")
    manifest.write_text("id,image,text,label,photographer\n"
                        f"a,{shapes_dir / 'images/test/test-000000.png'},a red circle,red circle,ann\n"
                        f"d,{shapes_dir / 'images/test/test-000001.png'},a square,blue square,bo\n")
    assert index_source(tmp_path / "col", trained_model_dir, manifest, delete_missing=True).updated == 1
    hits = col.search(text="a", where={"photographer": "bo"}, k=5)
    assert [h.item["meta"]["photographer"] for h in hits] == ["bo"] and len(col) == 2


def _other_model(trained_model_dir, tmp_path):
    model = jointspace.load(trained_model_dir)
    with __import__("torch").no_grad():
        next(model.parameters()).add_(0.01)
    return model.save(tmp_path / "other")


def test_vectors_of_another_model_are_refused(trained_model_dir, shapes_dir, tmp_path):
    col_dir = tmp_path / "col"
    index_source(col_dir, trained_model_dir, shapes_dir / "test.csv")
    other = _other_model(trained_model_dir, tmp_path)
    with pytest.raises(JointspaceError, match="holds vectors of another model"):
        index_source(col_dir, other, shapes_dir / "val.csv")
    with pytest.raises(JointspaceError, match="did not make"):
        Collection.open(col_dir, model=other)
    with pytest.raises(JointspaceError, match="did not make"):
        Collection.open(col_dir, model=jointspace.load(other))
    Collection.open(col_dir, model=jointspace.load(trained_model_dir))  # the right one is fine


def test_calibration_stops_one_term_dominating(trained_model_dir, tmp_path):
    """Items vary strongly by shape and weakly by colour. An image-like query term has a wide
    spread of scores, a text-like "red" term a narrow one: the raw sum follows the image alone,
    the calibrated sum finds the red items of the query's shape."""
    rng = np.random.default_rng(0)
    dim = 32
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    shapes, colours, text_dir = basis[:4], basis[4:8], basis[8]
    col = Collection.create(tmp_path / "col", trained_model_dir, modalities=["image"])
    rows, kinds = [], []
    for i in range(400):
        s, c = i % 4, (i // 4) % 4
        v = shapes[s] + 0.3 * colours[c] + 0.15 * rng.normal(size=dim) / np.sqrt(dim)
        rows.append(ItemRow(f"item-{i}", "synthetic", "image", "h", {"image": v / np.linalg.norm(v)},
                            label=f"{c}-{s}"))
        kinds.append((s, c))
    col.write(rows)
    image = rows[1].vectors["image"]  # shape 1, colour 0
    red = 0.2 * colours[2] + 0.98 * text_dir  # colour 2, mostly off the items' subspace
    terms = [Term("vector", image), Term("vector", red / np.linalg.norm(red), 0.5)]
    raw = col.search(terms=terms, k=10, calibrate=False)
    calibrated = col.search(terms=terms, k=10)
    assert [h.item["label"] for h in raw].count("0-1") >= 8  # the image's own colour: "red" lost
    assert all(h.item["label"] == "2-1" for h in calibrated)  # shape 1 and red
    # the calibrated score is the weighted sum of the terms' z-scores over the collection
    _, x = col.catalog.vectors("image")
    q = [image, red / np.linalg.norm(red)]
    z = sum(w * ((x @ t) - (x @ t).mean()) / (x @ t).std() for t, w in zip(q, (1.0, 0.5)))
    assert calibrated[0].score == pytest.approx(z.max(), rel=0.02)
    # a negative weight pushes away: "not red" ranks the shape's red items near the end of it
    away = col.search(terms=[Term("vector", image), Term("vector", q[1], -0.5)], k=400)
    labels = [h.item["label"] for h in away if h.item["label"].endswith("-1")]
    red_places = [i for i, label in enumerate(labels) if label == "2-1"]
    assert len(labels) == 100 and np.mean(red_places) > 75, " ".join(labels)  # uniform: 49.5


def test_wrong_queries_are_clear_errors(trained_model_dir, shapes_dir, tmp_path):
    col = build_collection(trained_model_dir, shapes_dir / "test.csv", tmp_path / "col")
    with pytest.raises(JointspaceError, match="the query is empty"):
        col.search()
    with pytest.raises(JointspaceError, match="the text is empty"):
        col.search(text="  ")
    with pytest.raises(JointspaceError, match="must hold 32 finite values"):
        col.search(vector=np.ones(7))
    with pytest.raises(JointspaceError, match="no 'audio' tower"):
        col.search(terms=[Term("audio", "x.wav")])
    with pytest.raises(JointspaceError, match="every term of the query has weight 0"):
        col.search(terms=[Term("text", "a", 0.0)])
    with pytest.raises(JointspaceError, match="indexes image, text; not 'audio'"):
        col.search(text="a", target="audio")
    with pytest.raises(DataError, match="index source not found"):
        index_source(tmp_path / "c2", trained_model_dir, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no files to index"):
        index_source(tmp_path / "c2", trained_model_dir, tmp_path / "empty")
    with pytest.raises(JointspaceError, match="not a collection"):
        Collection.open(tmp_path / "empty")


def test_one_writer_at_a_time_and_readers_keep_working(trained_model_dir, shapes_dir, tmp_path):
    col_dir = tmp_path / "col"
    index_source(col_dir, trained_model_dir, shapes_dir / "test.csv")
    reader = Collection.open(col_dir)
    assert len(reader.search(text="a red circle", k=100)) == 12
    with WriterLock(col_dir):
        with pytest.raises(JointspaceError, match="being written by another process"):
            index_source(col_dir, trained_model_dir, shapes_dir / "val.csv")
        assert len(reader.search(text="a red circle", k=100)) == 12  # reads never wait
    # a reader opened before an ingest sees its items without reopening
    index_source(col_dir, trained_model_dir, shapes_dir / "val.csv")
    assert len(reader.search(text="a red circle", k=100)) == 24


def test_stores_lagging_the_catalog_are_repaired_on_open(trained_model_dir, shapes_dir, tmp_path):
    """Items committed to the catalog but not yet in the persisted stores (a crash before
    sync) are searchable at once, and the next writer persists them."""
    col_dir = tmp_path / "col"
    index_source(col_dir, trained_model_dir, shapes_dir / "test.csv")
    col = Collection.open(col_dir)
    v = col.catalog.vectors("image")[1][0]
    col.write([ItemRow("extra", "synthetic", "image", "h", {"image": -v})])
    fresh = Collection.open(col_dir)
    assert fresh.store("image").watermark < fresh.catalog.seq()
    assert fresh.search(vector=-v, k=1)[0].item["key"] == "extra"
    index_source(col_dir, trained_model_dir, shapes_dir / "test.csv")  # nothing new: still syncs
    assert Collection.open(col_dir).store("image").watermark == fresh.catalog.seq()


def test_two_stage_matryoshka_search(shapes_dir, tmp_path, tiny_overrides):
    from jointspace.config import load_run_config
    from jointspace.train.trainer import train
    model_dir = tmp_path / "m"
    train(load_run_config(overrides=[*tiny_overrides, "model.matryoshka_dims=[8,16]",
                                     "train.max_steps=4"]), shapes_dir / "train.csv", model_dir)
    full = build_collection(model_dir, shapes_dir / "train.csv", tmp_path / "full")
    with pytest.raises(JointspaceError, match="not a nested size"):
        index_source(tmp_path / "bad", model_dir, shapes_dir / "train.csv", prefix_dim=12)
    two = build_collection(model_dir, shapes_dir / "train.csv", tmp_path / "two", prefix_dim=8)
    assert two.store("image").dim == 8
    for query in ("a red circle", "a big blue square", "a small green star"):
        exact = full.search(text=query, k=5)
        staged = two.search(text=query, k=5)
        # 50 prefix candidates of 96 are re-ranked by full vectors: the exact top 5, same scores
        assert [h.item["key"] for h in staged] == [h.item["key"] for h in exact]
        np.testing.assert_allclose([h.score for h in staged], [h.score for h in exact], atol=1e-5)


def test_review_fixes_ingest_sampling_filters_and_readers(trained_model_dir, shapes_dir, tmp_path,
                                                          monkeypatch):
    import sqlite3
    # a symlinked duplicate is one item, not a fatal repeated key
    folder = _shapes_folder(shapes_dir, tmp_path / "imgs", n=3)
    (folder / "alias.png").symlink_to(sorted(folder.glob("*.png"))[0])
    assert index_source(tmp_path / "col", trained_model_dir, folder).added == 3
    # calibration samples every modality even when their ids interleave (image, text, image …)
    col = Collection.create(tmp_path / "mixed", trained_model_dir, modalities=["image", "text"])
    rng = np.random.default_rng(0)
    col.write([ItemRow(f"k{i}", "s", m, "h", {m: v / np.linalg.norm(v)}, meta={"n": i})
               for i in range(400) for m, v in [(("image", "text")[i % 2], rng.normal(size=32))]])
    assert len(col.catalog.sample_vectors("image", 50)) > 20
    assert len(col.search(terms=[Term("vector", np.ones(32)), Term("vector", -np.ones(32), 0.5)],
                          k=3)) == 3
    # filters compare as text: the CLI's "7" finds the JSON 7, and a number finds a CSV string
    assert [h.item["meta"]["n"] for h in col.search(vector=np.ones(32), where={"n": "8"})] == [8]
    assert [h.item["meta"]["n"] for h in col.search(vector=np.ones(32), where={"n": 8})] == [8]
    # a reader opens and searches while a writer holds the lock, never waiting for it: its
    # connections get no busy timeout, so a lock it asked for would fail at once
    # ("database is locked") instead of waiting the catalog's 60 s
    writer = sqlite3.connect(tmp_path / "mixed" / "catalog.sqlite", timeout=60)
    writer.execute("BEGIN IMMEDIATE")
    real_connect, opened = sqlite3.connect, []

    def impatient(*args, **kwargs):
        opened.append(args[0])
        return real_connect(*args, **{**kwargs, "timeout": 0})

    monkeypatch.setattr(sqlite3, "connect", impatient)
    hits = Collection.open(tmp_path / "mixed").search(vector=np.ones(32), k=1)
    monkeypatch.undo()
    assert len(hits) == 1 and opened  # the reader's catalog connection was the impatient one
    writer.execute("ROLLBACK")


def test_a_row_inserted_at_the_top_re_embeds_nothing(trained_model_dir, shapes_dir, tmp_path):
    manifest = tmp_path / "m.csv"
    rows = (shapes_dir / "test.csv").read_text().splitlines()
    fixed = [rows[0]] + [r.replace("images/", f"{shapes_dir}/images/", 1) for r in rows[1:]]
    manifest.write_text("\n".join(fixed) + "\n")
    index_source(tmp_path / "col", trained_model_dir, manifest)
    extra = fixed[1].replace("test-000000", "new-000000", 1)
    manifest.write_text("\n".join([fixed[0], extra] + fixed[1:]) + "\n")
    report = index_source(tmp_path / "col", trained_model_dir, manifest)
    assert (report.added, report.updated, report.unchanged) == (1, 0, 12)


def test_opening_a_store_retries_when_a_commit_switches_files(tmp_path, monkeypatch):
    from jointspace.index import open_store
    store = open_store("exact", tmp_path / "s", 4)
    store.add(np.arange(2), np.eye(2, 4, dtype=np.float32))
    store.commit(1)
    real_load, calls = np.load, []

    def flaky(path, *a, **k):  # the first read finds the named file already replaced
        calls.append(path)
        if len(calls) == 1:
            raise FileNotFoundError(path)
        return real_load(path, *a, **k)
    monkeypatch.setattr(np, "load", flaky)
    again = open_store("exact", tmp_path / "s", 4)
    assert again.count() == 2 and len(calls) >= 2
