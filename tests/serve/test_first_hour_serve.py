"""Issue 20 §2, the server in the first hour: the docs pages work offline, an upload's modality
is read from its bytes, one policy for silent clips, and readiness is reported separately."""
import base64
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


def test_ready_only_once_warm(col, client, monkeypatch):
    assert client.app.state.ready.wait(60)  # the module's app is done warming up the same col
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


# --------------------------------------------------------------------------- review of issue 20
def test_warm_up_takes_files_through_the_decoding_a_query_takes(col, monkeypatch):
    """The warm-up encoded a 16 kHz array, so the first real 44.1 kHz WAV still paid for
    soundfile and scipy.signal (1.6 s): it decodes a 44.1 kHz WAV file, and an image file
    through open_image, as queries' files are (the decoding lives in the plug-ins)."""
    import jointspace.modalities.audio_io as audio
    import jointspace.modalities.image as vision

    rates, images = [], []
    real_resample, real_decode = audio.resample, vision.decode_image
    monkeypatch.setattr(audio, "resample", lambda wave, rate, *a: rates.append(rate) or
                        real_resample(wave, rate, *a))
    monkeypatch.setattr(vision, "decode_image", lambda item, *a: images.append(item) or
                        real_decode(item, *a))
    col.warm_up()
    assert rates and set(rates) == {44_100}  # the check and the tower each decode it
    assert images and all(str(i).endswith(".jpg") for i in images)


def test_warm_before_serving_warms_in_the_lifespan_startup(col, monkeypatch):
    """What each worker of serve --workers N does: no request is accepted before it is warm."""
    warmed = []
    real = Collection.warm_up
    monkeypatch.setattr(Collection, "warm_up", lambda self: warmed.append(1) or real(self))
    app = create_app(col, warm_before_serving=True)
    assert not warmed  # not on a thread: in the startup
    with TestClient(app) as client:
        assert warmed == [1]
        assert client.get("/readyz").json() == {"ready": True}  # its first answer
        assert client.get("/healthz").json()["ready"] is True


def test_an_audio_upload_is_decoded_once_by_its_plug_in(client, media_dir, monkeypatch):
    """It was decoded three times (the upload's check, the search's check of the same file,
    then the tower), then twice: the audio plug-in decodes the bytes once, which is also
    their check, and the tower takes the samples."""
    import jointspace.modalities.audio as plugin
    import jointspace.towers.audio as tower

    decoded = []
    for module in (plugin, tower):
        real = module.decode_audio
        monkeypatch.setattr(module, "decode_audio", lambda path, *a, _real=real, _m=module, **kw:
                            decoded.append(_m.__name__) or _real(path, *a, **kw))
    r = client.post("/search/upload", files={"file": ("q.wav", (media_dir / "tone-440.wav").read_bytes())},
                    data={"target": "audio", "k": "1"})
    assert r.status_code == 200 and r.json()["hits"][0]["name"] == "tone-440.wav"
    assert r.json()["hits"][0]["score"] == pytest.approx(1, abs=1e-4)  # as the indexed file
    assert decoded == [plugin.__name__]
    r = client.post("/search", json={"audio": base64.b64encode((media_dir / "tone-440.wav").read_bytes())
                                     .decode(), "target": "audio", "k": 1})
    assert r.status_code == 200 and decoded == [plugin.__name__] * 2


def test_silent_arrays_are_refused_as_silent_files_are(col):
    import numpy as np
    import torch

    for silent in (np.zeros(16_000), torch.zeros(16_000), np.full(8000, 1e-5, np.float32)):
        with pytest.raises(DataError, match=r"query term 1 \(audio\): audio is silent \(peak below -80 dBFS\)"):
            col.search(audio=silent)
    with pytest.raises(DataError, match="audio samples are empty"):
        col.search(audio=np.zeros(0, np.float32))
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16_000)
    assert col.search(audio=tone, target="audio", k=1)


def refuse_decoding(monkeypatch):
    from jointspace.modalities import MODALITIES

    for name in MODALITIES.names():
        monkeypatch.setattr(MODALITIES.get(name), "decode", lambda *a, **kw: pytest.fail("decoded"))


@pytest.mark.parametrize("modality", ["text", "Image", "smell"])
def test_an_invalid_modality_is_a_422_naming_the_allowed_ones(client, media_dir, monkeypatch, modality):
    refuse_decoding(monkeypatch)
    r = client.post("/search/upload", files={"file": ("q.png", (media_dir / "red.png").read_bytes())},
                    data={"modality": modality})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == (f"modality must be image or audio (the file's), got {modality!r}; "
                                  "a text goes in the form field text")


def test_a_file_modality_the_model_has_no_tower_for_is_a_400_saying_so(client, media_dir, monkeypatch):
    """video is a plug-in's modality (the file could be one), but not this model's: said so,
    before anything is decoded."""
    refuse_decoding(monkeypatch)
    r = client.post("/search/upload", files={"file": ("q.png", (media_dir / "red.png").read_bytes())},
                    data={"modality": "video"})
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == "q.png: the model has no 'video' tower; it encodes image, audio"


def test_the_mp3_sniff_reads_frame_headers(client, media_dir):
    """FF FE (a UTF-16LE byte order mark) and AAC's ADTS header (FF F1) passed as MP3."""
    from jointspace.modalities import sniff
    from jointspace.serve.uploads import sniff as sniff_name  # the name, as earlier versions had it

    utf16 = "\ufeffa red circle, and more text to fill a frame or two".encode("utf-16-le") * 8
    adts = bytes.fromhex("fff15080") + bytes(400)
    for data in (utf16, adts, "hello".encode("utf-16"), b"ID3 is a tag", b"\xff\xfb"):
        assert sniff(data) is None and sniff_name(data) is None, data[:8]
        r = client.post("/search/upload", files={"file": ("q", data, "application/octet-stream")})
        assert r.status_code == 415 and "say modality=image or modality=audio" in r.json()["detail"]
    mp3 = (media_dir / "tone-330.mp3").read_bytes()
    tag = b"ID3\x04\x00\x00\x00\x00\x02\x01" + bytes(257)
    for data in (mp3, tag + mp3):
        assert sniff(data).name == sniff_name(data) == "audio"


def test_the_docs_are_public_and_declare_the_key(col):
    """With an API key /docs was a 401 (exact-path public set), and Swagger UI had no way to
    send the key."""
    keyed = TestClient(create_app(col, api_key="s3cret"))
    html = keyed.get("/docs")
    assert html.status_code == 200 and "SwaggerUIBundle" in html.text
    assert keyed.get("/redoc").status_code == 200
    assets = re.findall(r"""(?:src|href)\s*=\s*['"](/docs/[^'"]+)['"]""", html.text)
    assert assets and all(keyed.get(url).status_code == 200 for url in assets)
    assert keyed.get("/docs/oauth2-redirect").status_code == 200
    schema = keyed.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key"}
    for path, method in (("/search", "post"), ("/search/upload", "post"), ("/items/{item_id}", "get"),
                         ("/items/{item_id}/file", "get")):
        assert {"APIKeyHeader": []} in schema["paths"][path][method]["security"], path
    for path in ("/healthz", "/readyz"):
        assert "security" not in schema["paths"][path]["get"]
    # the data stays behind the key
    for url in ("/items/1", "/items/1/file", "/docs/../items/1", "/docsx"):
        assert keyed.get(url).status_code in (401, 404), url
    assert keyed.get("/items/1").status_code == 401
    assert keyed.post("/search", json={"text": "a"}).status_code == 401
    # without a key nothing is declared
    assert "securitySchemes" not in TestClient(create_app(col)).get("/openapi.json").json().get("components", {})
