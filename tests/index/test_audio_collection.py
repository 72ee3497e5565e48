"""A folder of sounds: indexed with bad clips quarantined, searched by audio from Python and HTTP."""
import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient

from jointspace.data.sounds import write_wav
from jointspace.index import Collection, index_source
from jointspace.serve import create_app

SR = 16_000


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sounds")
    t = np.arange(SR // 2) / SR
    for i, hz in enumerate((220, 330, 440, 550, 660, 880)):
        write_wav(folder / f"tone-{hz}.wav", (0.3 * np.sin(2 * np.pi * hz * t) * (1 + i % 2)).astype(np.float32))
    write_wav(folder / "silence.wav", np.zeros(SR // 2, np.float32))
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return folder


def test_audio_folder_indexed_and_searched_by_sound(image_audio_model_dir, sounds, tmp_path):
    report = index_source(tmp_path / "col", image_audio_model_dir, sounds)
    assert report.added == 6 and report.quarantined == 2
    reasons = {q.path.rsplit("/", 1)[-1]: q.reason for q in report.problems}
    assert "silent" in reasons["silence.wav"] and "cannot be decoded" in reasons["broken.wav"]
    col = Collection.open(tmp_path / "col")
    assert col.modalities == ["audio"]
    hit = col.search(audio=sounds / "tone-440.wav", k=1)[0]
    assert hit.item["path"].endswith("tone-440.wav") and hit.score == pytest.approx(1, abs=1e-5)

    client = TestClient(create_app(col))
    data = base64.b64encode((sounds / "tone-660.wav").read_bytes()).decode()
    hits = client.post("/search", json={"audio": data, "k": 3}).json()["hits"]
    assert hits[0]["name"] == "tone-660.wav" and hits[0]["url"] == f"/items/{hits[0]['id']}/file"
    assert "thumbnail" not in hits[0]  # sounds get a player, not a thumbnail
    file = client.get(hits[0]["url"])
    assert file.content == (sounds / "tone-660.wav").read_bytes()
    assert file.headers["content-type"] in ("audio/x-wav", "audio/wav")
    bad = base64.b64encode((sounds / "broken.wav").read_bytes()).decode()
    r = client.post("/search", json={"audio": bad})
    assert r.status_code == 400 and "not usable audio" in r.json()["detail"]
    silent = base64.b64encode((sounds / "silence.wav").read_bytes()).decode()
    r = client.post("/search", json={"terms": [{"modality": "audio", "data": silent}]})
    assert r.status_code == 400 and "silent" in r.json()["detail"]
    r = client.post("/search", json={"text": "a tone"})
    assert r.status_code == 400 and "no 'text' tower" in r.json()["detail"]
    assert client.get("/healthz").json()["items"] == 6
