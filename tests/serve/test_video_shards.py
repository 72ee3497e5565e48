"""Video in shards (issue 24): ``jointspace data export`` of a clip manifest writes ``KEY.mp4``
members (WebDataset) and ``mp4`` byte columns (Parquet); the shard readers and the training
stream decode them with the video plug-in; ``jointspace embed --modality video`` embeds them
exactly as the same files on disk; ``index`` of embed's output serves each clip's poster and
file out of its shard. The model is tiny and untrained: vectors are checked against its own
encodings of the files."""
import io
import json
import tarfile

import numpy as np
import pytest
from fastapi.testclient import TestClient

pytest.importorskip("av")

from jointspace.bulk_embed import embed, embedding_batches  # noqa: E402
from jointspace.cli import main  # noqa: E402
from jointspace.data.export import export_manifest  # noqa: E402
from jointspace.data.shards import read_shard  # noqa: E402
from jointspace.data.stream import ShardStream  # noqa: E402
from jointspace.index import index_source  # noqa: E402
from jointspace.model import load  # noqa: E402
from jointspace.modalities import MODALITIES  # noqa: E402
from jointspace.serve import create_app  # noqa: E402
from video_media import CLIPS, all_frames, cli_logging, shape_clips, video_model  # noqa: E402,F401


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video-shards")
    model, clips = video_model(folder), shape_clips(folder / "clips")
    manifest = clips / "test.csv"
    tars = export_manifest(manifest, folder / "tars", format="webdataset", shard_size=5)
    parquet = export_manifest(manifest, folder / "parquet", format="parquet", shard_size=5)
    assert (tars.samples, parquet.samples, tars.skipped) == (2 * CLIPS, 2 * CLIPS, [])
    return {"folder": folder, "model": model, "clips": clips, "tars": tars.shards,
            "parquet": parquet.shards}


def rows(made):
    import csv

    with open(made["clips"] / "test.csv", newline="") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def test_export_writes_mp4_members_and_columns_holding_the_files(made):
    expected = rows(made)
    with tarfile.open(made["tars"][0]) as tar:
        names = tar.getnames()
        assert names[:4] == ["test-000000-0.mp4", "test-000000-0.png", "test-000000-0.txt",
                             "test-000000-0.json"]
        first = expected["test-000000-0"]
        assert tar.extractfile("test-000000-0.mp4").read() == (made["clips"] / first["video"]).read_bytes()
    for shards in (made["tars"], made["parquet"]):
        samples = [s for shard in shards for s in read_shard(str(shard))]
        assert len(samples) == 2 * CLIPS
        for sample in samples:
            row = expected[sample.meta["id"]]
            assert sample.items["video"] == (made["clips"] / row["video"]).read_bytes()
            assert sample.items["image"] == (made["clips"] / row["image"]).read_bytes()
            assert (sample.items["text"], sample.label) == (row["text"], row["label"])
    import pyarrow.parquet as pq

    assert {"key", "mp4", "png", "caption"} <= set(pq.read_schema(made["parquet"][0]).names)


def test_the_stream_decodes_members_to_the_frames_a_plain_decode_gives(made):
    stream = ShardStream([str(s) for s in made["tars"]], ["video", "text"], epochs=1)
    seen = list(stream)
    assert len(seen) == 2 * CLIPS
    expected = rows(made)
    for sample in (item["sample"] for item in seen[:4]):
        clip = sample.fields["video"]
        path = made["clips"] / expected[sample.key]["video"]
        reference = all_frames(path)  # every frame by a plain PyAV loop: 6 frames at 8 fps
        # 8 uniform targets over 0.75 s (segment midpoints) show frames ⌊(i + ½)·6/8⌋
        picked = [reference[int((i + 0.5) * 6 / 8)] for i in range(8)]
        assert clip.frames.shape == (8, 32, 32, 3)
        assert all(np.array_equal(a, b) for a, b in zip(clip.frames, picked))
        assert sample.fields["text"] == expected[sample.key]["text"]
    # through the model's tower (4 frames): the tensors of the files on disk, to the bit
    model = load(made["model"])
    towers = {"video": model.tower("video").eval(), "text": model.tower("text")}
    shard = str(made["tars"][0])
    streamed = sorted(item["video"].numpy().tobytes()
                      for item in ShardStream([shard], ["video", "text"], epochs=1, towers=towers))
    files = sorted(towers["video"].preprocess_one(str(made["clips"] / expected[s.key]["video"]))
                   .numpy().tobytes() for s in read_shard(shard))
    assert len(streamed) == 5 and streamed == files


def test_embed_of_video_members_equals_the_files_embedded(made, monkeypatch, capsys, cli_logging):
    import jointspace.bulk_embed as bulk

    monkeypatch.setattr(bulk, "installed", lambda name: False)  # this process, not a local Ray
    out = made["folder"] / "emb"
    assert main(["embed", str(made["model"]), "--data", f"{made['folder']}/tars/*.tar", "--out",
                 str(out), "--modality", "video", "--batch-size", "4"]) == 0
    assert f"{2 * CLIPS} items, 0 quarantined" in capsys.readouterr().out
    model = load(made["model"])
    expected = rows(made)
    for part_rows, vectors in embedding_batches(out):
        files = [str(made["clips"] / expected[r["key"]]["video"]) for r in part_rows]
        # 4 frames sampled from the member's bytes, as from the file (not 8 resampled to 4)
        assert np.allclose(vectors, model.encode("video", files), atol=1e-5)
        assert [r["text"] for r in part_rows] == [expected[r["key"]]["text"] for r in part_rows]
    parquet = embed(made["model"], made["folder"] / "parquet", made["folder"] / "emb-parquet",
                    modality="video", use_ray=False)
    assert (parquet.items, parquet.quarantined) == (2 * CLIPS, 0)


def test_bad_members_are_quarantined_with_the_plugins_reason(made, tmp_path):
    clip = (made["clips"] / "videos" / "test" / "test-000000.mp4").read_bytes()
    shard = tmp_path / "bad.tar"
    with tarfile.open(shard, "w") as tar:
        for key, data in (("good", clip), ("cut", clip[:300]), ("still", b"\x89PNG\r\n\x1a\n" + bytes(64))):
            info = tarfile.TarInfo(f"{key}.mp4")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    report = embed(made["model"], shard, tmp_path / "emb", modality="video", use_ray=False)
    assert (report.items, report.quarantined) == (1, 2)
    reasons = {json.loads(line)["key"]: json.loads(line)["reason"]
               for line in (tmp_path / "emb" / "quarantine-00000.jsonl").read_text().splitlines()}
    assert set(reasons) == {"cut", "still"}
    assert "has no video stream" in reasons["cut"] and reasons["cut"].endswith("(bad.tar:cut)")
    assert "still image (PNG)" in reasons["still"]


@pytest.mark.parametrize("kind", ["tars", "parquet"])
def test_an_index_of_embed_output_serves_posters_and_clips_out_of_the_shards(made, kind, tmp_path):
    out = tmp_path / "emb"
    embed(made["model"], made["folder"] / kind if kind == "parquet" else f"{made['folder']}/tars/*.tar",
          out, modality="video", use_ray=False)
    index_source(tmp_path / "col", made["model"], out)
    client = TestClient(create_app(tmp_path / "col"))
    assert client.get("/modalities").json()["target"] == "video"
    hits = client.post("/search", json={"text": "a shape", "k": 2 * CLIPS}).json()["hits"]
    assert len(hits) == 2 * CLIPS
    expected = rows(made)
    for h in hits[:3]:
        assert (h["modality"], h["preview_kind"], h["player_kind"], h["name"]) == ("video", "image",
                                                                                  "video", None)
        path = made["clips"] / expected[h["meta"]["key"]]["video"]
        file = client.get(h["url"])
        assert (file.status_code, file.headers["content-type"]) == (200, "video/mp4")
        assert file.content == path.read_bytes()
        thumb = client.get(h["thumbnail"])  # the poster, made from the member's bytes
        assert thumb.content == MODALITIES.get("video").preview(path, max_px=256).data
