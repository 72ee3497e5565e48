"""The HTTP API: answers equal the Python API's, files are served safely, and every kind of
bad input is a 4xx with a message while the server stays healthy."""
import base64
import io
import os
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from jointspace.index import Collection, Term, index_source
from jointspace.serve import create_app


@pytest.fixture(scope="module")
def col_dir(trained_model_dir, shapes_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    images = folder / "images"
    shutil.copytree(shapes_dir / "images" / "test", images)
    index_source(folder / "col", trained_model_dir, shapes_dir / "test.csv")
    return folder / "col"


@pytest.fixture(scope="module")
def col(col_dir):
    return Collection.open(col_dir)


@pytest.fixture(scope="module")
def client(col):
    return TestClient(create_app(col))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_bytes(path) -> bytes:
    return open(path, "rb").read()


def healthy(client, **kw):
    assert client.get("/healthz", **kw).json() == {"status": "ok", "items": 12}
    assert len(client.post("/search", json={"text": "a red circle", "k": 3}, **kw).json()["hits"]) == 3


def test_text_search_equals_the_python_api(client, col):
    r = client.post("/search", json={"text": "a red circle", "k": 5})
    assert r.status_code == 200
    hits = r.json()["hits"]
    expected = col.search(text="a red circle", k=5)
    assert [h["id"] for h in hits] == [h.item["id"] for h in expected]
    np.testing.assert_allclose([h["score"] for h in hits], [h.score for h in expected], atol=1e-5)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert all(h["thumbnail"] == f"/items/{h['id']}/thumbnail" for h in hits)
    assert "path" not in hits[0] and hits[0]["text"] and hits[0]["label"]


def test_image_query_finds_itself_and_composition_pages_filters(client, col):
    hit = col.search(text="a blue square", k=1)[0]
    data = b64(png_bytes(hit.item["path"]))
    found = client.post("/search", json={"image": data, "k": 1}).json()["hits"][0]
    assert found["id"] == hit.item["id"] and found["score"] == pytest.approx(1, abs=1e-4)
    # a data: URL as browsers' FileReader makes it works too
    found = client.post("/search", json={"image": "data:image/png;base64," + data, "k": 1}).json()
    assert found["hits"][0]["id"] == hit.item["id"]
    composed = client.post("/search", json={"terms": [
        {"modality": "image", "data": data, "weight": 1},
        {"modality": "text", "text": "red", "weight": 0.5},
        {"modality": "text", "text": "blurry", "weight": -0.5}], "k": 12}).json()["hits"]
    expected = col.search(terms=[Term("image", hit.item["path"]), Term("text", "red", 0.5),
                                 Term("text", "blurry", -0.5)], k=12)
    assert [h["id"] for h in composed] == [h.item["id"] for h in expected]
    everything = client.post("/search", json={"text": "a", "k": 12}).json()["hits"]
    pages = [h for off in (0, 5, 10) for h in
             client.post("/search", json={"text": "a", "k": 5, "offset": off}).json()["hits"]]
    assert [h["id"] for h in pages] == [h["id"] for h in everything]
    label = everything[0]["label"]
    only = client.post("/search", json={"text": "a", "k": 12, "where": {"label": label}}).json()["hits"]
    assert [h["id"] for h in only] == [h["id"] for h in everything if h["label"] == label]


def test_items_files_and_thumbnails(client, col):
    hit = col.search(text="a", k=1)[0]
    item_id = hit.item["id"]
    meta = client.get(f"/items/{item_id}").json()
    assert meta["id"] == item_id and meta["label"] == hit.item["label"] and "path" not in meta
    file = client.get(f"/items/{item_id}/file")
    assert file.status_code == 200 and file.content == png_bytes(hit.item["path"])
    assert file.headers["content-type"] == "image/png"
    thumb = client.get(f"/items/{item_id}/thumbnail")
    assert thumb.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(thumb.content))
    assert image.format == "JPEG" and max(image.size) <= 256
    assert client.get("/items/999999").status_code == 404
    assert "no item 999999" in client.get("/items/999999/file").json()["detail"]
    assert client.get("/").status_code == 200 and "jointspace search" in client.get("/").text
    assert client.get("/openapi.json").json()["paths"]["/search"]


@pytest.mark.parametrize("body, status, message", [
    ({"image": "not base64!!"}, 400, "image is not valid base64"),
    ({"image": b64(b"just some text, not an image")}, 400, "image is not a decodable image"),
    ({"audio": b64(b"RIFF garbage")}, 400, "no 'audio' tower"),
    ({"vector": [0.1] * 7}, 400, "must hold 32 finite values"),
    ({"terms": [{"modality": "smell", "text": "roses"}]}, 400, "no 'smell' tower"),
    ({"terms": [{"modality": "text"}]}, 400, "give exactly one of text, data, vector"),
    ({"text": "  "}, 400, "the text is empty"),
    ({}, 400, "the query is empty"),
    ({"text": "a", "k": 0}, 422, "greater than or equal to 1"),
    ({"text": "a", "k": 100000}, 422, "k must be at most 1000"),
    ({"text": "a", "offset": -1}, 422, "greater than or equal to 0"),
    ({"text": "a", "where": {"label); DROP TABLE items": "x"}}, 400, "cannot filter on"),
    ({"text": "a", "target": "audio"}, 400, "not 'audio'"),
])
def test_bad_requests_are_4xx_with_a_message(client, body, status, message):
    r = client.post("/search", json=body)
    assert r.status_code == status, r.text
    assert message in str(r.json()["detail"])
    healthy(client)


def test_size_limits(col):
    client = TestClient(create_app(col, max_upload_bytes=1000, max_request_bytes=50_000))
    big = b64(b"\x89PNG" + os.urandom(5000))
    r = client.post("/search", json={"image": big})
    assert r.status_code == 413 and "image is larger than 1000 bytes" in r.json()["detail"]
    r = client.post("/search", json={"text": "a", "vector": [0.0] * 20_000})
    assert r.status_code == 413 and "request body is larger than 50000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit counts the streamed bytes
        for _ in range(100):
            yield b" " * 1000
    r = client.post("/search", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    healthy(client)


def test_only_files_inside_the_roots_are_served(col_dir, tmp_path, shapes_dir):
    col = Collection.open(col_dir)
    client = TestClient(create_app(col))
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    root = col.info["roots"][0]
    link = os.path.join(root, "images", "test", "link-to-secret.png")
    os.symlink(outside, link)
    try:
        ids = [r[0] for r in col.catalog.db.execute("SELECT id FROM items ORDER BY id LIMIT 3")]
        with col.catalog._tx() as db:  # items whose recorded files lie outside the roots
            db.execute("UPDATE items SET path=? WHERE id=?", (link, ids[0]))
            db.execute("UPDATE items SET path=? WHERE id=?", (str(outside), ids[1]))
            db.execute("UPDATE items SET path=? WHERE id=?", (root + "/../../etc/passwd", ids[2]))
        for item_id in ids:
            for route in ("file", "thumbnail"):
                r = client.get(f"/items/{item_id}/{route}")
                assert r.status_code in (403, 404) and r.headers["content-type"] == "application/json"
        assert "outside the collection's folders" in client.get(f"/items/{ids[0]}/file").json()["detail"]
        for url in ("/items/../../etc/passwd", "/items/1/../../../etc/passwd", "/items/%2e%2e%2fetc",
                    "/items/1/file/../../x"):
            r = client.get(url)
            assert r.status_code in (404, 422) and b"root:" not in r.content
    finally:
        os.unlink(link)
    healthy(client)


def test_api_key_and_cors(col):
    client = TestClient(create_app(col, api_key="s3cret"))
    r = client.post("/search", json={"text": "a"})
    assert r.status_code == 401 and "API key is required" in r.json()["detail"]
    r = client.post("/search", json={"text": "a"}, headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and r.json()["detail"] == "wrong API key"
    for url in ("/items/1", "/items/1/file", "/items/1/thumbnail", "/docs", "/openapi.json"):
        assert client.get(url).status_code == 401
    assert client.get("/").status_code == 200  # the page holds no data; it asks for the key
    assert client.post("/search", json={"text": "a"}, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/items/1", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    healthy(client, headers={"X-API-Key": "s3cret"})
    # CORS is off unless origins are given
    open_client = TestClient(create_app(col))
    r = open_client.post("/search", json={"text": "a"}, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    cors = TestClient(create_app(col, cors_origins=["https://app.example"]))
    r = cors.post("/search", json={"text": "a"}, headers={"Origin": "https://app.example"})
    assert r.headers["access-control-allow-origin"] == "https://app.example"


def test_files_a_manifest_names_elsewhere_are_served(trained_model_dir, shapes_dir, tmp_path):
    """A manifest may name files outside its own folder (absolute paths): those folders
    become roots; anything else stays refused."""
    image = shapes_dir / "images" / "test" / "test-000000.png"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "elsewhere.csv").write_text(f"id,image,text\na,{image},a shape\n")
    index_source(tmp_path / "col", trained_model_dir, tmp_path / "m" / "elsewhere.csv")
    col = Collection.open(tmp_path / "col")
    assert str(image.parent.resolve()) in col.info["roots"]
    client = TestClient(create_app(col))
    item_id = col.search(text="a", k=1)[0].item["id"]
    assert client.get(f"/items/{item_id}/file").content == image.read_bytes()
