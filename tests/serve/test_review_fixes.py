"""Found in review: a request string must never be opened as a server path; folders indexed
after start-up are served; a CORS preflight passes the API key check."""
import shutil

from fastapi.testclient import TestClient

from jointspace.index import Collection, index_source
from jointspace.serve import create_app


def test_strings_never_become_server_paths(trained_model_dir, shapes_dir, tmp_path):
    index_source(tmp_path / "col", trained_model_dir, shapes_dir / "test.csv")
    client = TestClient(create_app(tmp_path / "col"))
    secret = tmp_path / "elsewhere.png"
    shutil.copy(shapes_dir / "images" / "val" / "val-000000.png", secret)
    for term in ({"modality": "image", "text": str(secret)}, {"modality": "image", "text": "/etc/shadow"},
                 {"modality": "audio", "text": "/etc/passwd"}, {"modality": "vector", "text": "abc"},
                 {"modality": "text", "data": "aGVsbG8="}):
        r = client.post("/search", json={"terms": [term]})
        assert r.status_code == 400 and r.json()["detail"].startswith("term 1: "), (term, r.text)
        assert "shadow" not in r.text and "cannot identify" not in r.text
    assert client.get("/healthz").status_code == 200


def test_folders_indexed_while_serving_are_served(trained_model_dir, shapes_dir, tmp_path):
    index_source(tmp_path / "col", trained_model_dir, shapes_dir / "test.csv")
    client = TestClient(create_app(tmp_path / "col"))
    later = tmp_path / "later"
    shutil.copytree(shapes_dir / "images" / "val", later)
    index_source(tmp_path / "col", trained_model_dir, later)  # a second process in real life
    item = next(h.item for h in Collection.open(tmp_path / "col").search(text="a", k=30)
                if h.item["path"].startswith(str(later.resolve())))
    r = client.get(f"/items/{item['id']}/file")
    assert r.status_code == 200 and r.content == open(item["path"], "rb").read()


def test_cors_preflight_with_an_api_key(trained_model_dir, shapes_dir, tmp_path):
    index_source(tmp_path / "col", trained_model_dir, shapes_dir / "test.csv")
    client = TestClient(create_app(tmp_path / "col", api_key="k", cors_origins=["https://a.example"]))
    r = client.options("/search", headers={"Origin": "https://a.example",
                                           "Access-Control-Request-Method": "POST",
                                           "Access-Control-Request-Headers": "x-api-key"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://a.example"
    assert client.post("/search", json={"text": "a"}).status_code == 401
    assert client.post("/search", json={"text": "a"}, headers={"X-API-Key": "k"}).status_code == 200
