"""Issue 20 §2, the server in the first hour: the docs pages work offline, an upload's modality
is read from its bytes, one policy for silent clips, and readiness is reported separately."""
import re
import threading

import pytest
from fastapi.testclient import TestClient

from jointspace.errors import DataError
from jointspace.index import Collection, index_source
from jointspace.serve import create_app


@pytest.fixture(scope="module")
def col(image_audio_model_dir, media_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("first-hour")
    index_source(folder / "col", image_audio_model_dir, media_dir)
    return Collection.open(folder / "col")


@pytest.fixture(scope="module")
def client(col):
    return TestClient(create_app(col))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(client, page):
    html = client.get(page).text
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", html)
    assert urls and not [u for u in urls if re.match(r"(https?:)?//", u)], urls
    assert not re.search(r"https?://", html.replace("http://www.w3.org", ""))  # no CDN anywhere
    kinds = {}
    for url in urls:
        r = client.get(url)
        assert r.status_code == 200, url
        kinds[url.rsplit(".", 1)[-1]] = r.headers["content-type"]
    if page == "/docs":
        assert "javascript" in kinds["js"] and kinds["css"].startswith("text/css")
        assert "SwaggerUIBundle" in client.get(next(u for u in urls if u.endswith(".js"))).text
    else:
        assert "javascript" in kinds["js"]


UPLOADS = {"red.png": "image", "tone-440.wav": "audio", "tone-330.mp3": "audio"}  # and the target


@pytest.mark.parametrize("name", UPLOADS)
def test_an_upload_is_sniffed_when_the_form_names_no_modality(client, media_dir, name):
    # curl -F file=@q.wav labels it application/octet-stream, and names no modality
    data = (media_dir / name).read_bytes()
    r = client.post("/search/upload", files={"file": ("q", data, "application/octet-stream")},
                    data={"k": "1", "target": UPLOADS[name]})
    assert r.status_code == 200, r.text
    assert r.json()["hits"][0]["name"] == name


def test_an_upload_of_no_known_format_is_a_415_naming_the_field(client):
    r = client.post("/search/upload", files={"file": ("q.bin", b"%PDF-1.4 ...", "application/octet-stream")})
    assert r.status_code == 415
    assert "q.bin: not a known image or audio format" in r.json()["detail"]
    assert "say modality=image or modality=audio" in r.json()["detail"]


def test_a_silent_clip_is_refused_alike_over_http_and_from_python(client, col, media_dir):
    r = client.post("/search/upload", files={"file": ("q.wav", (media_dir / "silence.wav").read_bytes())})
    assert r.status_code == 400 and "audio is silent (peak below -80 dBFS)" in r.json()["detail"]
    with pytest.raises(DataError, match=r"query term 1 \(audio\): audio is silent \(peak below -80 dBFS\)"):
        col.search(audio=media_dir / "silence.wav")


def test_ready_only_once_warm(col, monkeypatch):
    gate, encoded = threading.Event(), []
    warm_up = Collection.warm_up

    def slow_warm_up(self):
        gate.wait(20)
        return warm_up(self)
    monkeypatch.setattr(Collection, "warm_up", slow_warm_up)
    monkeypatch.setattr(col._batcher, "encode", lambda m, item: encoded.append(m) or col.model.encode(m, [item])[0])
    client = TestClient(create_app(col))
    assert client.get("/healthz").json() == {"status": "ok", "items": len(col), "ready": False}
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["ready"] is False and "warming up" in r.json()["detail"]
    gate.set()
    for _ in range(200):
        if client.get("/readyz").status_code == 200:
            break
        threading.Event().wait(0.05)
    assert client.get("/readyz").json() == {"ready": True}
    assert client.get("/healthz").json()["ready"] is True
    assert sorted(encoded) == ["audio", "image"]  # one query per modality the model takes


def test_a_failed_warm_up_is_not_ready(col, monkeypatch):
    monkeypatch.setattr(Collection, "warm_up", lambda self: 1 / 0)
    client = TestClient(create_app(col))
    for _ in range(200):
        if "failed" in client.get("/readyz").json().get("detail", ""):
            break
        threading.Event().wait(0.05)
    r = client.get("/readyz")
    assert r.status_code == 503 and "ZeroDivisionError" in r.json()["detail"]
