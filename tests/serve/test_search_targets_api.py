"""The API the search page needs (issue 23): several target modalities merged by calibrated
score, the total count of matches, the filter fields, a query term by item id, plain
messages for unusable files, and items indexed from shards served from their members."""
import base64
import io
import json
import os
import shutil
import tarfile
from collections import Counter

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from jointspace.index import Collection, Term, index_source
from jointspace.index.query import Calibration
from jointspace.modalities import MODALITIES
from jointspace.serve import create_app
from mixed_media import write_mixed_folder


@pytest.fixture(scope="module")
def mixed(mixed_col):
    return TestClient(create_app(mixed_col))


def catalog_rows(col):
    return {r[0]: {"modality": r[1], "label": r[2], "meta": json.loads(r[3])}
            for r in col.catalog.db.execute("SELECT id, modality, label, meta FROM items")}


def brute_total(col, targets, where=None):
    """Items with a vector of a target that pass ``where`` (string values), counted in Python."""
    with_vector = set().union(*(set(col.catalog.vectors(t)[0].tolist()) for t in targets))
    rows = catalog_rows(col)

    def passes(row):
        return all(str(row.get(k) if k in ("modality", "label") else row["meta"].get(k)) in
                   ([v] if isinstance(v, str) else v) for k, v in (where or {}).items())
    return sum(1 for i in with_vector if passes(rows[i]))


def test_every_target_is_searched_and_merged_by_calibrated_score(mixed_col, mixed):
    col = Collection.open(mixed_col)
    assert sorted(col.modalities) == ["audio", "image", "text"]
    r = mixed.post("/search", json={"text": "a red circle", "target": "*", "k": 50}).json()
    assert r["total"] == 12 and len(r["hits"]) == 12
    assert Counter(h["modality"] for h in r["hits"]) == {"image": 4, "audio": 4, "text": 4}
    # the merged ranking, computed here: each target's cosines standardised over its vectors
    q = col.model.encode("text", ["a red circle"])[0].astype(np.float64)
    expected = []
    for modality in col.modalities:
        ids, vectors = col.catalog.vectors(modality)
        cal = Calibration.fit(vectors)
        mean, std = cal.scale(q)
        scores = (vectors.astype(np.float64) @ q - mean) / std
        expected += [(float(s), int(i)) for s, i in zip(scores, ids)]
    expected.sort(key=lambda pair: (-pair[0], pair[1]))
    assert [h["id"] for h in r["hits"]] == [i for _, i in expected]
    assert [h["score"] for h in r["hits"]] == pytest.approx([s for s, _ in expected], abs=1e-4)
    # an empty list is every target too; a list or comma-separated names, those only
    assert [h["id"] for h in mixed.post("/search", json={"text": "a red circle", "target": [],
                                                          "k": 50}).json()["hits"]] == [i for _, i in expected]
    for target in (["audio", "text"], "audio,text"):
        r = mixed.post("/search", json={"text": "a red circle", "target": target, "k": 50}).json()
        assert {h["modality"] for h in r["hits"]} == {"audio", "text"} and r["total"] == 8
        assert [h["id"] for h in r["hits"]] == [i for _, i in expected if i in {h["id"] for h in r["hits"]}]
    # raw cosines merged without calibration
    raw = mixed.post("/search", json={"text": "a red circle", "target": "*", "k": 50, "calibrate": False}).json()
    cosines = sorted(((float(v @ q), int(i)) for m in col.modalities for i, v in zip(*col.catalog.vectors(m))),
                     key=lambda pair: (-pair[0], pair[1]))
    assert [h["id"] for h in raw["hits"]] == [i for _, i in cosines]
    # pages of a merged ranking are slices of it
    page2 = mixed.post("/search", json={"text": "a red circle", "target": "*", "k": 5, "offset": 5}).json()
    assert [h["id"] for h in page2["hits"]] == [i for _, i in expected[5:10]]
    assert [h["rank"] for h in page2["hits"]] == list(range(6, 11))
    # no target: the first indexed modality, as before
    assert {h["modality"] for h in mixed.post("/search", json={"text": "a", "k": 50}).json()["hits"]} == \
        {col.modalities[0]}
    r = mixed.post("/search", json={"text": "a", "target": ["image", "smell"]})
    assert r.status_code == 400 and "not 'smell'" in r.json()["detail"]
    # a blank target (an empty form field) is no target, not "everything"
    for blank in ("", " , "):
        assert col.targets(blank) == col.modalities[:1]


def test_an_offset_past_every_target_ranks_nothing(mixed_col, monkeypatch):
    """Several targets and an offset past all their items: an empty page, without ranking
    any store (each would be ranked in full, then thrown away)."""
    col = Collection(mixed_col)
    ranked = []
    real = col._rank
    monkeypatch.setattr(col, "_rank", lambda *a, **kw: ranked.append(a[0]) or real(*a, **kw))
    assert col.search(text="a", target="*", k=5, offset=10 ** 12) == []
    assert ranked == []
    hits = col.search(text="a", target="*", k=5, offset=10)  # 12 items: the last two
    assert [h.rank for h in hits] == [11, 12] and len(ranked) == len(col.modalities)


def test_an_item_with_vectors_in_two_targets_is_ranked_once(col_dir):
    """A manifest's rows are images with captions: each item has an image and a text vector."""
    client = TestClient(create_app(col_dir))
    r = client.post("/search", json={"text": "a red circle", "target": "*", "k": 50}).json()
    ids = [h["id"] for h in r["hits"]]
    assert len(ids) == len(set(ids)) == 12 == r["total"]
    col = Collection.open(col_dir)
    best = {}
    q = col.model.encode("text", ["a red circle"])[0]
    for modality in col.modalities:
        item_ids, vectors = col.catalog.vectors(modality)
        mean, std = Calibration.fit(vectors).scale(q)
        for i, v in zip(item_ids, vectors):
            best[int(i)] = max(best.get(int(i), -np.inf), (float(v @ q) - mean) / std)
    assert [h["score"] for h in r["hits"]] == pytest.approx(sorted(best.values(), reverse=True), abs=1e-4)


@pytest.mark.parametrize("target, where", [
    (None, None), ("*", None), ("image", None), (["audio", "text"], None), ("*", {"folder": "day"}),
    ("text", {"folder": "night"}), ("*", {"folder": ["day", "night"], "modality": "audio"}),
    ("*", {"folder": "dusk"}), ("image,audio", {"name": ["red.png", "tone-440.wav", "a-low-hum.txt"]}),
])
def test_the_total_is_the_count_of_matching_items_of_the_targets(mixed_col, mixed, target, where):
    col = Collection.open(mixed_col)
    body = {"text": "a red circle", "k": 3, **({"target": target} if target is not None else {}),
            **({"where": where} if where else {})}
    r = mixed.post("/search", json=body)
    assert r.status_code == 200, r.text
    expected = brute_total(col, col.targets(target), where)
    assert r.json()["total"] == expected == col.count_matches(where, target)
    assert len(r.json()["hits"]) == min(3, expected)


def test_the_total_of_a_filter_on_a_field_no_item_has_is_an_error(mixed_col, mixed):
    r = mixed.post("/search", json={"text": "a", "where": {"colour": "red"}})
    assert r.status_code == 400 and "cannot filter on 'colour'" in r.json()["detail"]
    with pytest.raises(Exception, match="cannot filter on 'colour'"):
        Collection.open(mixed_col).count_matches({"colour": "red"}, "*")


def test_fields_list_the_filterable_values_and_never_the_hidden_ones(mixed_col, mixed, col_dir, shard_col):
    body = mixed.get("/fields").json()
    by_name = {f["name"]: f for f in body["fields"]}
    assert body["items"] == 12 and set(by_name) == {"folder", "name"}
    assert by_name["folder"] == {"name": "folder", "distinct": 2, "items": 12, "values": [
        {"value": "day", "count": 6}, {"value": "night", "count": 6}]}
    assert by_name["name"]["distinct"] == 12 and {v["count"] for v in by_name["name"]["values"]} == {1}
    for folder in (col_dir, shard_col):
        col = Collection.open(folder)
        fields = {f["name"]: f for f in TestClient(create_app(folder)).get("/fields").json()["fields"]}
        assert not set(fields) & {"key", "path", "source"}
        labels = Counter(row["label"] for row in catalog_rows(col).values())
        assert {v["value"]: v["count"] for v in fields["label"]["values"]} == labels
        assert fields["label"]["distinct"] == len(labels) and fields["label"]["items"] == len(col)
    # the shard items' metadata holds their sample key: a field named key is never listed
    assert "key" in Collection.open(shard_col).catalog.meta_keys()
    # each listed value filters as listed
    for value in by_name["folder"]["values"]:
        r = mixed.post("/search", json={"text": "a", "target": "*", "where": {"folder": value["value"]}})
        assert r.json()["total"] == value["count"]


def test_the_values_listed_are_capped_and_the_most_common_first(tmp_path):
    from jointspace.index.catalog import Catalog, ItemRow

    catalog = Catalog(tmp_path / "c.sqlite")
    rows = [ItemRow(f"k{i}", "s", "m", "h", {}, label=f"l{i % 7}",
                    meta={"n": i, "flag": i % 2 == 0, "nested": {"a": 1}, "key": "x", "bad-name": 1})
            for i in range(50)]
    catalog.write(rows)
    fields = {f["name"]: f for f in catalog.field_values(max_values=3)}
    # not a key of the metadata: a filter naming it means the item column (a server path);
    # not objects, lists, nor names a filter cannot spell
    assert set(fields) == {"label", "n", "flag"}
    assert fields["label"]["distinct"] == 7 and [v["count"] for v in fields["label"]["values"]] == [8, 7, 7]
    assert fields["n"]["distinct"] == 50 and len(fields["n"]["values"]) == 3
    assert {v["value"]: v["count"] for v in fields["flag"]["values"]} == {"1": 25, "0": 25}
    ids = catalog.filter_ids({"flag": True})  # a listed value filters as listed
    assert len(ids) == 25


def test_an_item_term_is_its_stored_vector(mixed_col, mixed):
    col = Collection.open(mixed_col)
    items = col.catalog.items(col.catalog.vectors("image")[0])
    item = next(i for i in items.values() if i["meta"]["name"] == "green.png")
    encoded = col.model.encode("image", [item["path"]])[0]  # computed here, from its file
    assert np.allclose(col.item_vector(item["id"]), encoded, atol=1e-5)
    for target in ("image", "*", "text"):
        by_item = mixed.post("/search", json={"terms": [{"item": item["id"]}], "target": target, "k": 12}).json()
        by_vector = mixed.post("/search", json={"vector": encoded.tolist(), "target": target, "k": 12}).json()
        assert [h["id"] for h in by_item["hits"]] == [h["id"] for h in by_vector["hits"]]
        assert [h["score"] for h in by_item["hits"]] == pytest.approx([h["score"] for h in by_vector["hits"]],
                                                                       abs=1e-4)
    first = mixed.post("/search", json={"terms": [{"item": item["id"]}], "target": "image"}).json()["hits"][0]
    assert first["id"] == item["id"] and first["score"] == pytest.approx(1, abs=1e-4)
    # weighted, and mixed with other terms, as any term
    mixed_terms = mixed.post("/search", json={"terms": [{"item": item["id"], "weight": 0.7},
                                                         {"text": "red", "weight": -0.3}], "k": 4}).json()
    expected = col.search(terms=[Term("vector", encoded, 0.7), Term("text", "red", -0.3)], k=4)
    assert [h["id"] for h in mixed_terms["hits"]] == [h.item["id"] for h in expected]


def test_an_item_term_naming_no_item_or_no_such_vector_is_refused(mixed_col, mixed):
    r = mixed.post("/search", json={"terms": [{"item": 99999}]})
    assert r.status_code == 404 and r.json()["detail"] == "term 1: no item 99999"
    image_id = int(Collection.open(mixed_col).catalog.vectors("image")[0][0])
    r = mixed.post("/search", json={"terms": [{"item": image_id, "modality": "text"}]})
    assert r.status_code == 400 and f"item {image_id} has no text vector (it has image)" in r.json()["detail"]
    r = mixed.post("/search", json={"terms": [{"item": image_id, "text": "a"}]})
    assert r.status_code == 400 and "exactly one of text, data, vector or item" in r.json()["detail"]
    assert mixed.post("/search", json={"terms": [{"item": 0}]}).status_code == 422


def test_an_unusable_file_is_said_plainly(mixed):
    r = mixed.post("/search/upload", files={"file": ("q.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")})
    body = r.json()
    assert r.status_code == 400 and (body["problem"], body["modality"], body["field"]) == \
        ("unreadable", "image", "q.png")
    assert body["detail"].startswith("q.png is not usable image: q.png is not a decodable image (")
    assert "Error" not in body["detail"]  # no exception's name
    r = mixed.post("/search", json={"terms": [{"data": base64.b64encode(b"%PDF-1.4").decode()}]})
    assert r.status_code == 415 and (r.json()["problem"], r.json()["field"]) == ("unrecognised", "term 1")
    small = TestClient(create_app(Collection.open(mixed.app.state.collection.path), max_upload_bytes=10))
    r = small.post("/search/upload", files={"file": ("q.png", b"\x89PNG\r\n\x1a\n" * 4, "image/png")})
    assert r.status_code == 413 and r.json()["problem"] == "too_large"


def test_the_new_endpoints_need_the_key(mixed_col):
    client = TestClient(create_app(mixed_col, api_key="k3y"))
    assert client.get("/fields").status_code == 401
    assert client.get("/fields", headers={"X-API-Key": "k3y"}).json()["items"] == 12
    r = client.post("/search", json={"terms": [{"item": 1}], "target": "*"}, headers={"X-API-Key": "k3y"})
    assert r.status_code == 200 and r.json()["total"] == 12


def member_bytes(shards, key, ext):
    for shard in sorted(shards.glob("*.tar")):
        with tarfile.open(shard) as tar:
            names = tar.getnames()
            if f"{key}.{ext}" in names:
                return tar.extractfile(f"{key}.{ext}").read()
    raise KeyError(key)


def test_items_indexed_from_shards_are_served_from_their_members(shard_col, tmp_path):
    client = TestClient(create_app(shard_col))
    col = Collection.open(shard_col)
    assert str((shard_col.parent / "shards").resolve()) in col.info["roots"]
    hits = client.post("/search", json={"text": "a red circle", "k": 12}).json()["hits"]
    assert len(hits) == 12
    for hit in hits[:4]:
        assert hit["url"] == f"/items/{hit['id']}/file" and hit["preview"] and hit["thumbnail"]
        assert hit["text"] and hit["label"]  # the caption member and the label of its json
        data = member_bytes(shard_col.parent / "shards", hit["meta"]["key"], "png")
        file = client.get(hit["url"])
        assert file.status_code == 200 and file.content == data
        assert file.headers["content-type"] == "image/png"
        preview = client.get(hit["preview"])
        (tmp_path / "member.png").write_bytes(data)
        expected = MODALITIES.get("image").preview(tmp_path / "member.png", max_px=256)
        assert preview.content == expected.data and preview.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(preview.content)).size) <= 256
        assert client.get(hit["thumbnail"]).content == expected.data
    # a member larger than the server's upload bound is refused, not read
    small = TestClient(create_app(shard_col, max_upload_bytes=100))
    r = small.get(hits[0]["url"])
    assert r.status_code == 413 and "at most 100 are served" in r.json()["detail"]
    assert small.get(hits[1]["preview"]).status_code == 413


def test_a_shard_outside_the_indexed_folders_is_refused(trained_model_dir, shapes_dir, tmp_path):
    from jointspace.bulk_embed import embed
    from jointspace.data.export import export_manifest

    export_manifest(shapes_dir / "test.csv", tmp_path / "shards", format="webdataset", shard_size=12)
    embed(trained_model_dir, f"{tmp_path}/shards/*.tar", tmp_path / "emb", use_ray=False)
    index_source(tmp_path / "col", trained_model_dir, tmp_path / "emb")
    client = TestClient(create_app(tmp_path / "col"))
    hit = client.post("/search", json={"text": "a", "k": 1}).json()["hits"][0]
    assert client.get(hit["url"]).status_code == 200
    (tmp_path / "elsewhere").mkdir()  # the shard moved out, a link left in its place
    shard = tmp_path / "shards" / "00000.tar"
    shutil.move(shard, tmp_path / "elsewhere" / "00000.tar")
    os.symlink(tmp_path / "elsewhere" / "00000.tar", shard)
    for url in (hit["url"], hit["preview"]):
        r = client.get(url)
        assert r.status_code == 403 and "outside the collection's folders" in r.json()["detail"]
    os.remove(shard)  # gone
    assert client.get(hit["url"]).status_code == 404


def test_shards_embedded_by_a_relative_path_are_served_from_any_folder(trained_model_dir, shapes_dir,
                                                                        tmp_path, monkeypatch):
    """``jointspace embed m shards/*.tar out`` run inside the data folder, the server started
    elsewhere: the members are still found (embed records where the shards are)."""
    from jointspace.bulk_embed import embed
    from jointspace.data.export import export_manifest

    export_manifest(shapes_dir / "test.csv", tmp_path / "data" / "shards", format="webdataset",
                    shard_size=12)
    monkeypatch.chdir(tmp_path / "data")
    embed(trained_model_dir, "shards/*.tar", "emb", use_ray=False)
    index_source("col", trained_model_dir, "emb")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    client = TestClient(create_app(tmp_path / "data" / "col"))
    hit = client.post("/search", json={"text": "a", "k": 1}).json()["hits"][0]
    r = client.get(hit["url"])
    assert r.status_code == 200
    assert r.content == member_bytes(tmp_path / "data" / "shards", hit["meta"]["key"], "png")


def test_parquet_rows_with_bytes_are_served_too(trained_model_dir, shapes_dir, tmp_path):
    import pyarrow.parquet as pq

    from jointspace.bulk_embed import embed
    from jointspace.data.export import export_manifest

    export_manifest(shapes_dir / "test.csv", tmp_path / "shards", format="parquet", shard_size=5)
    embed(trained_model_dir, tmp_path / "shards", tmp_path / "emb", use_ray=False)
    index_source(tmp_path / "col", trained_model_dir, tmp_path / "emb")
    client = TestClient(create_app(tmp_path / "col"))
    cells = {}
    for shard in (tmp_path / "shards").glob("*.parquet"):
        table = pq.read_table(shard).to_pylist()
        cells.update({row["key"]: row["png"] for row in table})
    hits = client.post("/search", json={"text": "a", "k": 12}).json()["hits"]
    assert len(hits) == 12
    for hit in hits:
        file = client.get(hit["url"])
        assert file.status_code == 200 and file.content == cells[hit["meta"]["key"]]
        assert client.get(hit["preview"]).headers["content-type"] == "image/jpeg"


def test_a_target_of_one_item_is_merged_by_its_raw_cosine(three_modality_model_dir, tmp_path):
    folder = write_mixed_folder(tmp_path / "data")
    for path in folder.rglob("*.txt"):
        if path.name != "a-red-circle.txt":
            path.unlink()
    index_source(tmp_path / "col", three_modality_model_dir, folder)
    col = Collection.open(tmp_path / "col")
    hits = col.search(text="a red circle", target="*", k=20)
    assert len(hits) == 9 == col.count_matches(target="*")
    text_hit = next(h for h in hits if h.item["modality"] == "text")
    q = col.model.encode("text", ["a red circle"])[0]
    assert text_hit.score == pytest.approx(float(col.item_vector(text_hit.item["id"]) @ q), abs=1e-5)
