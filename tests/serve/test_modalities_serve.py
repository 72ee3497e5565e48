"""Issue 22, the server asks the modality registry: GET /modalities, previews of every kind,
files recognised by their plug-in, a body field named after any registered modality, and
the API key as a dependency (declared in the OpenAPI schema on every route that needs it)."""
import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from jointspace.index import Collection, index_source
from jointspace.modalities import MODALITIES, Modality
from jointspace.serve import create_app


@pytest.fixture(scope="module")
def col(image_audio_model_dir, media_dir, tmp_path_factory):
    """3 pictures and 3 clips (the silent one quarantined), an image + audio model."""
    folder = tmp_path_factory.mktemp("modalities")
    index_source(folder / "col", image_audio_model_dir, media_dir)
    return Collection.open(folder / "col")


@pytest.fixture(scope="module")
def client(col):
    return TestClient(create_app(col))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ids_by_name(col) -> dict[str, int]:
    return {r[1].rsplit("/", 1)[-1]: r[0] for r in col.catalog.db.execute("SELECT id, path FROM items")}


def test_modalities_describes_the_models_modalities_from_their_plug_ins(client):
    r = client.get("/modalities")
    assert r.status_code == 200, r.text
    found = {m["name"]: m for m in r.json()["modalities"]}
    assert list(found) == ["image", "audio"]  # the model's, in its order
    for name in found:
        plugin = MODALITIES.get(name)
        assert found[name] == {"name": name, "preview_kind": plugin.preview_kind,
                               "player_kind": plugin.player_kind, "uploadable": True,
                               "is_file": True, "text_like": False, "suffixes": list(plugin.suffixes),
                               "indexed": True, "items": 3}
    assert r.json()["target"] in found


def test_previews_of_every_kind_and_thumbnails_of_pictures(client, col, media_dir):
    ids = ids_by_name(col)
    clip = client.get(f"/items/{ids['tone-440.wav']}/preview")
    assert clip.status_code == 200 and clip.headers["content-type"] == "audio/wav"
    assert clip.content == (media_dir / "tone-440.wav").read_bytes()
    assert clip.headers["x-content-type-options"] == "nosniff"
    assert client.get(f"/items/{ids['tone-330.mp3']}/preview").headers["content-type"] == "audio/mpeg"
    picture = client.get(f"/items/{ids['red.png']}/preview")
    assert picture.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(picture.content)).size == (20, 20)
    assert client.get(f"/items/{ids['red.png']}/thumbnail").content == picture.content
    r = client.get(f"/items/{ids['tone-440.wav']}/thumbnail")  # no thumbnail of a clip
    assert r.status_code == 404 and "/preview" in r.json()["detail"]
    assert client.get("/items/424242/preview").json() == {"detail": "no item 424242"}
    hits = client.post("/search", json={"terms": [{"data": b64((media_dir / "tone-440.wav").read_bytes())}],
                                        "target": "audio", "k": 3}).json()["hits"]
    assert hits[0]["name"] == "tone-440.wav"
    assert all(h["preview_kind"] == "audio" and h["preview"] == f"/items/{h['id']}/preview"
               and "thumbnail" not in h for h in hits)


def test_previews_are_cached_by_id_and_content_hash(col, monkeypatch):
    client = TestClient(create_app(col))
    made = []
    plugin = MODALITIES.get("image")
    real = plugin.preview
    monkeypatch.setattr(plugin, "preview", lambda path, **kw: made.append(path) or real(path, **kw))
    item_id = ids_by_name(col)["green.png"]
    first, second = (client.get(f"/items/{item_id}/preview") for _ in range(2))
    assert first.content == second.content and len(made) == 1


def test_a_file_term_naming_no_modality_is_recognised_by_the_plug_ins(client, media_dir):
    for name, target in (("red.png", "image"), ("tone-330.mp3", "audio")):
        r = client.post("/search", json={"terms": [{"data": b64((media_dir / name).read_bytes())}],
                                         "target": target, "k": 1})
        assert r.status_code == 200 and r.json()["hits"][0]["name"] == name, r.text
    r = client.post("/search", json={"terms": [{"data": b64(b"%PDF-1.4 ...")}]})
    assert r.status_code == 415 and r.json()["detail"].startswith("term 1: not a known image or audio format")
    # no text-like modality in this model: a text naming none cannot be placed
    r = client.post("/search", json={"terms": [{"text": "a red tone"}]})
    assert r.status_code == 400 and "no text-like modality" in r.json()["detail"]


def test_a_file_the_plug_in_refuses_names_the_field(client, media_dir):
    silent = b64((media_dir / "silence.wav").read_bytes())
    r = client.post("/search", json={"terms": [{"modality": "audio", "data": silent}]})
    assert r.status_code == 400
    assert r.json()["detail"].startswith("term 1 is not usable audio: audio is silent (peak below -80 dBFS)")
    r = client.post("/search/upload", files={"file": ("q.png", b"\x89PNG\r\n\x1a\nbroken")})
    assert r.status_code == 400 and r.json()["detail"].startswith("q.png is not usable image:")


def test_a_body_field_named_after_any_registered_modality_is_a_term(client):
    class Smell(Modality):
        name, is_file = "smell", False

    MODALITIES.register("smell")(Smell())
    try:
        r = client.post("/search", json={"smell": "roses"})
        assert r.status_code == 400
        assert r.json()["detail"] == "smell: the model has no 'smell' tower; it encodes image, audio"
        r = client.post("/search", json={"smell": ["roses"]})
        assert r.status_code == 400 and "smell must be a string" in r.json()["detail"]
    finally:
        MODALITIES._items.pop("smell")
    r = client.post("/search", json={"smell": "roses"})  # an unregistered name is no field
    assert r.status_code == 400 and r.json()["detail"].endswith("the query is empty: give text, an "
                                                                "image, audio, a vector or terms")


def test_the_key_is_a_dependency_of_the_routes_serving_data(col):
    keyed = TestClient(create_app(col, api_key="s3cret"))
    schema = keyed.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"] == {
        "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "BearerAuth": {"type": "http", "scheme": "bearer"}}
    for path in ("/modalities", "/items/{item_id}/preview", "/items/{item_id}/thumbnail"):
        assert schema["paths"][path]["get"]["security"] == [{"APIKeyHeader": []}, {"BearerAuth": []}]
    assert keyed.get("/modalities").status_code == 401
    assert keyed.get("/items/1/preview").headers["www-authenticate"] == "Bearer"
    assert keyed.get("/modalities", headers={"Authorization": "Bearer  s3cret"}).status_code == 200
    assert keyed.get("/modalities", headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert keyed.get("/healthz").status_code == keyed.get("/").status_code == 200
