"""The HTTP API: answers equal the Python API's, files are served safely, and every kind of
bad input is a 4xx with a message while the server stays healthy."""
import base64
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from jointspace.index import Collection, Term, index_source
from jointspace.serve import create_app, serve


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
    assert client.app.state.ready.wait(60)  # the warm-up thread is done (an event, no timing)
    assert client.get("/healthz", **kw).json() == {"status": "ok", "items": 12, "ready": True}
    assert client.get("/readyz", **kw).json() == {"ready": True}
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
    r = client.get(f"/items/{item_id}")
    meta = r.json()
    assert meta["id"] == item_id and meta["label"] == hit.item["label"] and "path" not in meta
    assert meta["name"] == Path(hit.item["path"]).name and meta["content_hash"] == hit.item["content_hash"]
    assert str(col.path.parent) not in r.text  # nothing says where files live on the server
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
    r = client.post("/search", json={"terms": [{"modality": "image", "data": big}]})
    assert r.status_code == 413 and "term 1 is larger than 1000 bytes" in r.json()["detail"]
    r = client.post("/search", json={"text": "a", "vector": [0.0] * 20_000})
    assert r.status_code == 413 and "request body is larger than 50000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit counts the streamed bytes
        for _ in range(100):
            yield b" " * 1000
    r = client.post("/search", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than 50000 bytes" in r.json()["detail"]
    healthy(client)


def test_depth_pixels_and_terms_are_bounded(col):
    """What one small request could otherwise make the server compute: a ranking
    ``offset + k`` deep (offset 10**9 exhausted memory), a picture of many pixels
    in a small file, thousands of terms."""
    client = TestClient(create_app(col, max_window=20, max_image_pixels=50 * 50))
    r = client.post("/search", json={"text": "a", "k": 5, "offset": 16})
    assert r.status_code == 422 and "offset + k must be at most 20 (got 21)" in r.json()["detail"]
    assert len(client.post("/search", json={"text": "a", "k": 5, "offset": 7}).json()["hits"]) == 5
    default = TestClient(create_app(col))
    r = default.post("/search", json={"text": "a", "k": 1, "offset": 10_000})
    assert r.status_code == 422 and "at most 10000" in r.json()["detail"]
    wide = io.BytesIO()
    Image.new("RGB", (60, 50)).save(wide, "PNG")
    r = client.post("/search", json={"image": b64(wide.getvalue())})
    assert r.status_code == 413 and "image is 60×50 pixels; at most 2500" in r.json()["detail"]
    r = client.post("/search", json={"terms": [{"modality": "text", "text": "a"}] * 33})
    assert r.status_code == 422 and "at most 32 items" in r.text
    healthy(client)


def test_only_files_inside_the_roots_are_served(col, col_dir, tmp_path):
    col.catalog.checkpoint()
    shutil.copytree(col_dir, tmp_path / "col")  # the module's collection stays as it is
    copy = Collection.open(tmp_path / "col")
    client = TestClient(create_app(copy))
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), "red").save(secret)
    folder = col_dir.parent / "data" / "images" / "test"
    assert str(folder) in copy.info["roots"]
    link = folder / "link-to-secret.png"
    os.symlink(secret, link)
    try:
        ids = [r[0] for r in copy.catalog.db.execute("SELECT id FROM items ORDER BY id LIMIT 3")]
        assert client.get(f"/items/{ids[0]}/file").status_code == 200
        with copy.catalog._tx() as db:  # items whose recorded files lie outside the roots
            db.execute("UPDATE items SET path=? WHERE id=?", (str(link), ids[0]))
            db.execute("UPDATE items SET path=? WHERE id=?", (str(secret), ids[1]))
            db.execute("UPDATE items SET path=? WHERE id=?", (f"{folder}{'/..' * 20}/etc/passwd", ids[2]))
        for item_id in ids:
            for route in ("file", "thumbnail", "preview"):
                r = client.get(f"/items/{item_id}/{route}")
                assert r.status_code == 403 and r.headers["content-type"] == "application/json"
                assert "outside the collection's folders" in r.json()["detail"]
        for url in ("/items/../../etc/passwd", "/items/1/../../../etc/passwd", "/items/%2e%2e%2fetc",
                    "/items/1/file/../../x", "/items/..%2f..%2fetc%2fpasswd/file"):
            r = client.get(url)
            assert r.status_code in (404, 422) and b"root:" not in r.content
    finally:
        os.unlink(link)
    healthy(client)


def test_a_symlink_out_of_an_indexed_folder_is_not_served(trained_model_dir, shapes_dir, tmp_path):
    images = sorted((shapes_dir / "images" / "test").glob("*.png"))
    (tmp_path / "photos").mkdir()
    (tmp_path / "private").mkdir()
    shutil.copy(images[0], tmp_path / "photos" / "a.png")
    shutil.copy(images[1], tmp_path / "private" / "secret.png")
    os.symlink(tmp_path / "private" / "secret.png", tmp_path / "photos" / "link.png")
    index_source(tmp_path / "col", trained_model_dir, tmp_path / "photos")
    client = TestClient(create_app(tmp_path / "col"))
    hits = client.post("/search", json={"text": "a", "k": 10}).json()["hits"]
    assert sorted(h["name"] for h in hits) == ["a.png", "secret.png"]  # indexed by its real path
    for hit in hits:
        file, thumb = client.get(hit["url"]), client.get(hit["preview"])
        if hit["name"] == "a.png":
            assert file.content == images[0].read_bytes() and thumb.status_code == 200
        else:
            assert file.status_code == thumb.status_code == 403
            assert file.content != images[1].read_bytes()


def test_bad_ids(client):
    for url in ("/items/99999999999999999999999", "/items/0", "/items/abc", "/items/1.5/file"):
        r = client.get(url)
        assert r.status_code == 422, (url, r.text)
    assert client.get("/items/424242/thumbnail").json() == {"detail": "no item 424242"}
    healthy(client)


def test_multipart_upload(client, col):
    hit = col.search(text="a blue square", k=1)[0]
    raw = png_bytes(hit.item["path"])
    r = client.post("/search/upload", files={"file": ("q.png", raw, "image/png")}, data={"k": "3"})
    hits = r.json()["hits"]
    assert len(hits) == 3 and hits[0]["id"] == hit.item["id"]
    assert hits[0]["score"] == pytest.approx(1, abs=1e-4)
    label = hit.item["label"]
    r = client.post("/search/upload", files={"file": ("q", raw, "application/octet-stream")},
                    data={"modality": "image", "text": "red", "text_weight": "-0.5", "weight": "0.8",
                          "k": "12", "where": json.dumps({"label": [label, "red circle"]})})
    expected = col.search(terms=[Term("image", hit.item["path"], 0.8), Term("text", "red", -0.5)],
                          k=12, where={"label": [label, "red circle"]})
    assert [h["id"] for h in r.json()["hits"]] == [h.item["id"] for h in expected]
    text_only = client.post("/search/upload", data={"text": "a red circle", "k": "4"}).json()["hits"]
    assert [h["id"] for h in text_only] == [h.item["id"] for h in col.search(text="a red circle", k=4)]
    for files, data, status, message in [
        ({"file": ("q", b"\x00data", "application/octet-stream")}, {}, 415, "say modality=image"),
        ({"file": ("q.png", b"not a png", "image/png")}, {}, 400, "q.png is not a decodable image"),
        ({"file": ("q.wav", b"RIFF", "audio/wav")}, {}, 400, "no 'audio' tower"),
        ({"file": ("q.png", b"", "image/png")}, {}, 400, "q.png is empty"),
        ({"file": ("q.png", raw, "image/png")}, {"where": "{label"}, 400, "where is not JSON"),
        ({"file": ("q.png", raw, "image/png")}, {"k": "0"}, 422, "greater than or equal to 1"),
        ({}, {}, 400, "the query is empty"),
    ]:
        r = client.post("/search/upload", files=files, data=data)
        assert r.status_code == status and message in str(r.json()["detail"]), r.text
    small = TestClient(create_app(col, max_upload_bytes=100))
    r = small.post("/search/upload", files={"file": ("q.png", raw, "image/png")})
    assert r.status_code == 413 and "q.png is larger than 100 bytes" in r.json()["detail"]
    healthy(client)


def test_api_key_and_cors(col):
    client = TestClient(create_app(col, api_key="s3cret"))
    r = client.post("/search", json={"text": "a"})
    assert r.status_code == 401 and "API key is required" in r.json()["detail"]
    r = client.post("/search", json={"text": "a"}, headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and r.json()["detail"] == "wrong API key"
    r = client.post("/search", json={"text": "a"}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["detail"] == "wrong API key"
    for url in ("/items/1", "/items/1/file", "/items/1/thumbnail"):
        assert client.get(url).status_code == 401
    for url in ("/docs", "/redoc", "/openapi.json"):  # they hold no data
        assert client.get(url).status_code == 200
    assert client.post("/search/upload", data={"text": "a"}).status_code == 401
    assert client.get("/").status_code == 200  # the page holds no data; it asks for the key
    assert client.post("/search", json={"text": "a"}, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/items/1", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/openapi.json", headers={"X-API-Key": "s3cret"}).status_code == 200
    healthy(client, headers={"X-API-Key": "s3cret"})
    # CORS is off unless origins are given
    open_client = TestClient(create_app(col))
    r = open_client.post("/search", json={"text": "a"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = open_client.options("/search", headers={"Origin": "https://evil.example",
                                                "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers
    cors = TestClient(create_app(col, api_key="s3cret", cors_origins=["https://app.example"]))
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,x-api-key"}
    r = cors.options("/search", headers=preflight)  # a preflight carries no key
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    r = cors.post("/search", json={"text": "a"}, headers={"Origin": "https://app.example"})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "https://app.example"
    r = cors.post("/search", json={"text": "a"}, headers={"Origin": "https://app.example",
                                                          "X-API-Key": "s3cret"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    r = cors.options("/search", headers={**preflight, "Origin": "https://evil.example"})
    assert r.headers.get("access-control-allow-origin") != "https://evil.example"


def test_page_headers_and_openapi(client):
    page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    schema = client.get("/openapi.json").json()
    search = schema["paths"]["/search"]["post"]
    assert search["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("SearchOut")
    assert {"400", "413", "422"} <= set(search["responses"])
    assert "/search/upload" in schema["paths"] and "/" not in schema["paths"]
    assert client.get("/docs").status_code == 200


def test_serve_runs_uvicorn_on_loopback_with_the_key_from_the_environment(col, monkeypatch):
    import uvicorn

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(app=app, **kw))
    monkeypatch.setenv("JOINTSPACE_API_KEY", "from-env")
    serve(col)
    assert ran["host"] == "127.0.0.1" and ran["port"] == 8000
    client = TestClient(ran["app"])
    assert client.get("/items/1").status_code == 401
    assert client.get("/items/1", headers={"X-API-Key": "from-env"}).status_code == 200
    serve(col, api_key="given", port=8123)  # an explicit key wins
    assert TestClient(ran["app"]).get("/items/1", headers={"X-API-Key": "given"}).status_code == 200
    assert ran["port"] == 8123


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


def test_the_key_is_checked_before_the_body_and_on_routes_added_later(tmp_path, trained_model_dir,
                                                                      shapes_dir):
    """A request without the key is refused unread (a malformed body is a 401, not a 422),
    and a route a user adds to the app is covered too."""
    from jointspace.index import build_collection

    col = build_collection(trained_model_dir, shapes_dir / "test.csv", tmp_path / "col")
    app = create_app(col, api_key="s3cret")

    @app.get("/mine")
    def mine() -> dict:
        return {"secret": 1}

    client = TestClient(app)
    assert client.post("/search", content=b"{not json").status_code == 401
    assert client.get("/mine").status_code == 401
    assert client.get("/mine", headers={"X-API-Key": "s3cret"}).json() == {"secret": 1}
    assert client.get("/healthz").status_code == 200  # the probes stay open
