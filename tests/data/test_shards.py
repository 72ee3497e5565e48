"""Shards: export, each format and source spelling, equivalence with the manifest reader,
rank × worker sharding, resume mid-epoch, and bad samples and shards in a stream."""
import collections
import csv
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from jointspace.cli import main
from jointspace.data.export import export_manifest
from jointspace.data.manifest import read_manifest
from jointspace.data.shards import ShardError, list_shards, read_shard
from jointspace.data.stream import POSITION_KEY, ShardStream, collate_stream, stream_summary
from jointspace.errors import DataError


@pytest.fixture(scope="module")
def exported(shapes_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    for fmt in ("webdataset", "parquet"):
        export_manifest(shapes_dir / "train.csv", out / fmt, format=fmt, shard_size=10)
    return out


def _keys(stream, workers=0, batch_size=None):
    loader = DataLoader(stream, batch_size=batch_size, num_workers=workers,
                        collate_fn=(collate_stream(lambda items: {"keys": [i["sample"].key for i in items]})
                                    if batch_size else None))
    for item in loader:
        yield item


def test_each_format_and_source_spelling(exported, shapes_dir):
    manifest = read_manifest(shapes_dir / "train.csv", check_files=False)
    expected = {r.id: (r.text, r.label, (shapes_dir / "images" / "train" / f"{r.id}.png").read_bytes())
                for r in manifest.records}
    specs = [f"{exported}/webdataset/{{00000..00009}}.tar", f"{exported}/webdataset/*.tar",
             str(exported / "webdataset" / "00003.tar"), str(exported / "parquet"),
             f"{exported}/parquet/{{00000..00009}}.parquet"]
    for spec in specs:
        shards = list_shards(spec)
        samples = [s for shard in shards for s in read_shard(shard)]
        assert len(samples) == (10 if spec.endswith("00003.tar") else 96), spec
        for s in samples:
            text, label, png = expected[s.key]
            assert (s.items["text"], s.label, s.items["image"]) == (text, label, png), spec
            assert s.meta["id"] == s.key and s.problem is None
    with pytest.raises(DataError, match="no shards match"):
        list_shards(f"{exported}/nothing-*.tar")
    with pytest.raises(DataError, match="all be .tar or all be .parquet"):
        list_shards(f"{exported}/*/00000.*")


def test_stream_matches_the_manifest_reader(shapes_dir, tmp_path):
    """Same pairs, same quarantine reasons, on a manifest with bad rows."""
    rows = read_manifest(shapes_dir / "val.csv", check_files=False).records
    folder = tmp_path / "m"
    folder.mkdir()
    lines = [["id", "image", "text", "label"]]
    for i, r in enumerate(rows):
        image = folder / f"{r.id}.png"
        shutil.copy(r.image, image)
        text = r.text
        if i == 2:
            image.write_bytes(image.read_bytes()[:60])  # truncated
        if i == 5:
            image.write_bytes(b"GIF89a not really")
        if i == 7:
            text = "x" * 1200  # over max_text_chars
        lines.append([r.id, image.name, text, r.label])
    with open(folder / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows(lines)
    reference = read_manifest(folder / "m.csv", required=("image", "text"))
    export_manifest(folder / "m.csv", tmp_path / "shards", format="webdataset", shard_size=4)
    stream = ShardStream(list_shards(f"{tmp_path}/shards/*.tar"), ["image", "text"], epochs=1,
                         quarantine_dir=tmp_path / "q")
    got = {item["sample"].key: item["sample"] for item in stream}
    assert sorted(got) == sorted(r.id for r in reference.records)
    for r in reference.records:
        sample = got[r.id]
        assert sample.fields["text"] == r.text and sample.label == r.label
        from jointspace.towers.vision import decode_image
        np.testing.assert_array_equal(np.asarray(sample.fields["image"]), np.asarray(decode_image(r.image)))
    bad = [json.loads(l) for l in (tmp_path / "q" / "quarantine-stream-0.jsonl").read_text().splitlines()]
    def kinds(reason: str) -> str:
        # a file the manifest reader's check refuses "cannot be decoded"; the same bytes in a
        # shard are refused by the plug-in's decode, which says "is not a decodable image"
        if "cannot be decoded" in reason or "not a decodable" in reason:
            return "undecodable"
        return reason.split(" (")[0].split(":")[0].replace("'image'", "").strip()
    assert sorted(kinds(b["reason"]) for b in bad) == sorted(kinds(b.reason) for b in reference.bad_rows)
    assert {b["key"] for b in bad} == {rows[i].id for i in (2, 5, 7)}
    assert all(b["shard"].endswith(".tar") for b in bad)


@pytest.mark.parametrize("world, workers, shards", [(2, 2, 10), (1, 2, 10), (2, 2, 3), (3, 1, 10)])
def test_every_sample_once_per_epoch_across_ranks_and_workers(exported, world, workers, shards):
    spec = f"{exported}/webdataset/{{00000..{shards - 1:05d}}}.tar"
    total = 96 if shards == 10 else 30
    for epochs in (1, 2):
        seen = collections.Counter()
        orders = []
        for rank in range(world):
            stream = ShardStream(list_shards(spec), ["image", "text"], rank=rank, world_size=world,
                                 seed=5, block_shards=2, epochs=epochs)
            keys = [item["sample"].key for item in _keys(stream, workers)]
            orders.append(keys)
            seen.update(keys)
        assert len(seen) == total and set(seen.values()) == {epochs}
    first = [k for k in orders[0]]
    assert first[:len(first) // 2] != sorted(first[:len(first) // 2])  # shuffled


def test_resume_mid_epoch_repeats_and_skips_nothing(exported):
    shards = list_shards(f"{exported}/parquet")
    fields = ["image", "text"]

    def run(start, batches):
        stream = ShardStream(shards, fields, seed=3, block_shards=3, start=start, epochs=1)
        keys, positions = [], dict(start or {})
        for i, batch in enumerate(_keys(stream, workers=2, batch_size=4)):
            if batches is not None and i >= batches:
                break  # a kill: the batches the loader prefetched are never trained on
            keys += batch["keys"]
            positions.update(batch[POSITION_KEY])
        return keys, positions
    first, positions = run(None, 7)
    assert len(first) == 28 and len(positions) == 2  # both workers' places recorded
    rest, _ = run(positions, None)
    assert len(first) + len(rest) == 96 and sorted(first + rest) == sorted(set(first + rest))
    whole, _ = run(None, None)
    assert sorted(whole) == sorted(first + rest)


def test_resume_at_the_end_of_a_share_goes_on_to_the_next_epoch(exported):
    """Fewer shards than readers: each reader reads every shard and keeps its share; one
    stopped right after its share's last sample resumes into the next epoch (nothing left
    in the resumed epoch is not an error)."""
    shards = list_shards(f"{exported}/webdataset/{{00000..00002}}.tar")  # 30 samples, 4 readers
    items = list(ShardStream(shards, ["image", "text"], rank=1, world_size=4, epochs=2))
    per_epoch = [i for i in items if i[POSITION_KEY][1] == 0]
    assert 0 < len(per_epoch) < len(items)
    slot, *end = per_epoch[-1][POSITION_KEY]
    resumed = list(ShardStream(shards, ["image", "text"], rank=1, world_size=4, epochs=2,
                               start={slot: tuple(end)}))
    assert [i["sample"].key for i in resumed] == [i["sample"].key for i in items[len(per_epoch):]]


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bad_samples_and_shards_are_quarantined_and_the_stream_goes_on(shapes_dir, tmp_path):
    png = (shapes_dir / "images" / "train" / "train-000000.png").read_bytes()
    _tar(tmp_path / "00000.tar", [("good1.png", png), ("good1.txt", b"a red circle"),
                                  ("nocap.png", png),
                                  ("corrupt.png", png[:50]), ("corrupt.txt", b"a square"),
                                  ("badjson.png", png), ("badjson.txt", b"x"), ("badjson.json", b"{oops"),
                                  ("latin.png", png), ("latin.txt", "caf\xe9".encode("latin-1")),
                                  ("good2.png", png), ("good2.txt", b"a blue star")])
    _tar(tmp_path / "00001.tar", [(f"k{i}.{ext}", png if ext == "png" else b"text")
                                  for i in range(3) for ext in ("png", "txt")])
    with tarfile.open(tmp_path / "00001.tar") as tar:
        cut = tar.getmember("k2.txt").offset_data + 2  # inside the last member's data
    data = (tmp_path / "00001.tar").read_bytes()
    (tmp_path / "00001.tar").write_bytes(data[:cut])
    (tmp_path / "00002.tar").write_bytes(b"this is not a tar file at all" * 40)
    shards = list_shards(f"{tmp_path}/{{00000..00003}}.tar")  # 00003 does not exist
    stream = ShardStream(shards, ["image", "text"], epochs=2, quarantine_dir=tmp_path / "run",
                         block_shards=1)
    keys = collections.Counter(item["sample"].key for item in stream)
    assert set(keys) == {"good1", "good2", "k0", "k1"} and set(keys.values()) == {2}
    entries = [json.loads(l) for l in (tmp_path / "run" / "quarantine-stream-0.jsonl").read_text().splitlines()]
    by_key = {}
    for e in entries:
        by_key.setdefault(e["key"], []).append(e)
    assert "empty 'text'" in by_key["nocap"][0]["reason"]
    assert "'image' is not a decodable image" in by_key["corrupt"][0]["reason"]
    assert "not a JSON object" in by_key["badjson"][0]["reason"]
    assert "not UTF-8" in by_key["latin"][0]["reason"]
    assert all(e["shard"].endswith("00000.tar") for k in ("nocap", "corrupt") for e in by_key[k])
    assert "tar member cannot be read" in by_key["k2"][0]["reason"]  # the cut member
    skipped = {e["shard"].rsplit("/", 1)[-1]: e["reason"] for e in by_key["*"]}
    assert set(skipped) == {"00001.tar", "00002.tar", "00003.tar"}  # each reported once in 2 epochs
    assert "broken after 2 samples" in skipped["00001.tar"]
    assert "cannot be opened as a tar file" in skipped["00002.tar"] and "not found" in skipped["00003.tar"]
    assert len(entries) == 5 + 3  # two epochs met each of them: reported once all the same
    # another process (a loader worker, a resumed run) reporting the same again counts once
    shutil.copy(tmp_path / "run" / "quarantine-stream-0.jsonl", tmp_path / "run" / "quarantine-stream-1.jsonl")
    assert stream_summary(tmp_path / "run") == (5, 3)


def test_a_tar_cut_at_a_member_boundary_is_reported_not_silently_short(shapes_dir, tmp_path):
    """Streaming tarfile ends quietly at a missing or garbled header; the reader must not."""
    png = (shapes_dir / "images" / "train" / "train-000000.png").read_bytes()
    _tar(tmp_path / "whole.tar", [(f"k{i}.{ext}", png if ext == "png" else b"a red circle")
                                  for i in range(4) for ext in ("png", "txt")])
    assert [s.key for s in read_shard(str(tmp_path / "whole.tar"))] == ["k0", "k1", "k2", "k3"]
    with tarfile.open(tmp_path / "whole.tar") as tar:
        boundary = tar.getmember("k2.png").offset  # the header of sample k2's first member
    data = (tmp_path / "whole.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:boundary])
    (tmp_path / "garbled.tar").write_bytes(data[:boundary] + b"garbage!" * 64 + data[boundary + 512:])
    for name in ("cut.tar", "garbled.tar"):
        got = []
        with pytest.raises(ShardError, match="broken after 2 samples .*end-of-archive"):
            for sample in read_shard(str(tmp_path / name)):
                got.append(sample.key)
        assert got == ["k0", "k1"]  # what came before is kept


def test_a_missing_shard_does_not_stop_the_slot_that_owns_it(shapes_dir, tmp_path):
    """Two readers, two shards, one missing: the reader owning it goes on to its next
    epoch's shard; only a source with no valid sample anywhere is an error."""
    png = (shapes_dir / "images" / "train" / "train-000000.png").read_bytes()
    _tar(tmp_path / "00000.tar", [(f"k{i}.{ext}", png if ext == "png" else b"a red circle")
                                  for i in range(3) for ext in ("png", "txt")])
    shards = list_shards(f"{tmp_path}/{{00000..00001}}.tar")  # 00001 does not exist
    seen = 0
    for rank in (0, 1):
        stream = ShardStream(shards, ["image", "text"], rank=rank, world_size=2, epochs=6,
                             quarantine_dir=tmp_path / "q")
        keys = [item["sample"].key for item in stream]
        assert len(keys) % 3 == 0 and set(keys) <= {"k0", "k1", "k2"}
        assert stream_summary(tmp_path / "q") == (0, 1)
        seen += len(keys)
    assert seen == 6 * 3  # each epoch one of the two readers owns 00000 and reads it whole
    _tar(tmp_path / "bad.tar", [("x.png", png[:40]), ("x.txt", b"a square")])
    stream = ShardStream([str(tmp_path / "bad.tar"), str(tmp_path / "gone.tar")], ["image", "text"],
                         rank=1, world_size=2)
    with pytest.raises(DataError, match="none of the 2 shard"):
        next(iter(stream))  # an endless stream of nothing would spin forever


def test_a_share_that_is_all_bad_is_not_the_end_with_fewer_shards_than_readers(shapes_dir, tmp_path):
    """One shard of 4 samples, 4 readers, one sample bad: the reader whose share it is
    gets a share of other samples the next epoch; no reader stops."""
    png = (shapes_dir / "images" / "train" / "train-000000.png").read_bytes()
    _tar(tmp_path / "00000.tar", [(f"k{i}.{ext}", png if ext == "png" else
                                   (b"x" * 2000 if i == 2 else b"a red circle"))
                                  for i in range(4) for ext in ("png", "txt")])
    seen = collections.Counter()
    for rank in range(4):
        stream = ShardStream([str(tmp_path / "00000.tar")], ["image", "text"], rank=rank,
                             world_size=4, epochs=4)
        seen.update(item["sample"].key for item in stream)  # raises if a reader gives up
    assert seen == {"k0": 4, "k1": 4, "k3": 4}  # each epoch the readers share the samples out
    _tar(tmp_path / "bad.tar", [(f"b{i}.png", png[:40]) for i in range(3)])
    with pytest.raises(DataError, match="none of the 1 shard"):
        next(iter(ShardStream([str(tmp_path / "bad.tar")], ["image"], rank=1, world_size=4)))


def test_an_uneven_split_is_warned_about(exported):
    stream = ShardStream(list_shards(f"{exported}/webdataset/{{00000..00002}}.tar"), ["image", "text"],
                         world_size=2, epochs=1)
    import logging

    logger = logging.getLogger("jointspace")
    monkey = logging.Handler()
    seen = []
    monkey.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(monkey)
    try:
        next(iter(stream))
    finally:
        logger.removeHandler(monkey)
    assert any("3 shards split unevenly over 2 readers" in m for m in seen)


def test_cli_export(shapes_dir, tmp_path, capsys):
    assert main(["data", "export", str(shapes_dir / "test.csv"), "--format", "parquet",
                 "--out", str(tmp_path / "p"), "--shard-size", "5"]) == 0
    out = capsys.readouterr().out
    assert "12 samples in 3 shards" in out and "{00000..00002}.parquet" in out
    assert sum(1 for s in list_shards(tmp_path / "p") for _ in read_shard(s)) == 12


def test_audio_in_shards_is_decoded_and_checked(tmp_path):
    from jointspace.data.shards import RawSample
    from jointspace.data.sounds import write_wav
    from jointspace.data.stream import decode_sample

    t = np.arange(8000) / 16000
    write_wav(tmp_path / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    write_wav(tmp_path / "quiet.wav", np.zeros(8000, np.float32))
    tone = (tmp_path / "tone.wav").read_bytes()
    good = decode_sample(RawSample("s.tar", "k", 0, {"audio": tone, "text": "a beep"}), ["audio", "text"])
    from jointspace.data.audio import decode_audio
    np.testing.assert_array_equal(good.fields["audio"], decode_audio(tmp_path / "tone.wav").samples)
    with pytest.raises(DataError, match=r"audio file cannot be decoded \(LibsndfileError: Error opening the data.*: 'audio' \(s.tar:k\)$"):
        decode_sample(RawSample("s.tar", "k", 0, {"audio": b"RIFF nonsense"}), ["audio"])
    with pytest.raises(DataError, match=r"silent .*\(s.tar:k\)"):
        decode_sample(RawSample("s.tar", "k", 0, {"audio": (tmp_path / "quiet.wav").read_bytes()}),
                      ["audio"])
    with pytest.raises(DataError, match=r"empty 'audio' \(s.tar:k\)"):
        decode_sample(RawSample("s.tar", "k", 0, {"text": "no sound"}), ["audio", "text"])


def test_a_stream_with_no_valid_sample_stops_instead_of_spinning(tmp_path):
    (tmp_path / "00000.tar").write_bytes(b"not a tar" * 100)
    stream = ShardStream(list_shards(tmp_path / "00000.tar"), ["image", "text"])  # endless
    with pytest.raises(DataError, match="none of the 1 shard"):
        next(iter(stream))


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_export_keeps_clashing_ids_and_unknown_extensions_and_refuses_a_used_folder(shapes_dir, tmp_path, fmt):
    from PIL import Image

    png = shapes_dir / "images" / "train" / "train-000000.png"
    folder = tmp_path / "m"
    folder.mkdir()
    Image.open(png).convert("RGB").save(folder / "pic.gif")  # an extension shards do not name
    shutil.copy(png, folder / "pic.png")
    with open(folder / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "image", "text"], ["a.b", "pic.png", "a red circle"],
                                 ["a_b", "pic.gif", "a blue star"], ["c", "pic.png", "a square"]])
    report = export_manifest(folder / "m.csv", tmp_path / "out", format=fmt)
    assert report.samples == 3
    stream = ShardStream(list_shards(str(report.shards[0])), ["image", "text"], epochs=1,
                         quarantine_dir=tmp_path / "q")
    got = {item["sample"].fields["text"]: item["sample"].key for item in stream}
    assert set(got) == {"a red circle", "a blue star", "a square"}  # none merged, none quarantined
    assert len(set(got.values())) == 3 and not (tmp_path / "q").exists()
    with pytest.raises(DataError, match="already holds shards"):
        export_manifest(folder / "m.csv", tmp_path / "out", format=fmt)


def test_tar_keys_keep_the_member_folder_as_webdataset_does(tmp_path):
    """``a/0001.png`` and ``b/0001.png`` are two samples, ``a/0001`` and ``b/0001`` (issue 18)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    png = buf.getvalue()
    _tar(tmp_path / "00000.tar", [("a/0001.png", png), ("a/0001.txt", b"a red square"),
                                  ("b/0001.png", png), ("b/0001.txt", b"another red square"),
                                  ("./c/d/0002.png", png), ("./c/d/0002.txt", b"third"),
                                  ("b/.hidden.txt", b"skipped")])
    samples = list(read_shard(str(tmp_path / "00000.tar")))
    assert [(s.key, s.items["text"]) for s in samples] == [
        ("a/0001", "a red square"), ("b/0001", "another red square"), ("c/d/0002", "third")]
    assert all(s.items["image"] == png and s.problem is None for s in samples)
    stream = ShardStream(list_shards(str(tmp_path / "00000.tar")), ["image", "text"], epochs=1,
                         quarantine_dir=tmp_path / "q")
    assert sorted(item["sample"].key for item in stream) == ["a/0001", "b/0001", "c/d/0002"]
    assert not (tmp_path / "q").exists()


def test_parquet_paths_resolve_against_the_shard_folder_not_the_cwd(tmp_path, monkeypatch):
    """A relative path in a Parquet shard's image column is relative to the shard's folder,
    as a manifest's paths are relative to the manifest's (issue 18)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    shards = tmp_path / "data" / "shards"
    (shards / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 200, 10)).save(shards / "img" / "g.png")
    pq.write_table(pa.table({"key": ["g", "gone"], "image": ["img/g.png", "img/missing.png"],
                             "caption": ["a green square", "nothing"]}),
                   shards / "00000.parquet")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    samples = list(read_shard(str(shards / "00000.parquet")))
    assert samples[0].items["image"] == str(shards / "img" / "g.png")
    assert samples[0].items["text"] == "a green square"  # text is never taken for a path
    stream = ShardStream(list_shards(str(shards)), ["image", "text"], epochs=1,
                         quarantine_dir=tmp_path / "q")
    got = [item["sample"] for item in stream]
    assert [s.key for s in got] == ["g"] and got[0].fields["image"].size == (8, 8)
    bad = [json.loads(l) for l in (tmp_path / "q" / "quarantine-stream-0.jsonl").read_text().splitlines()]
    assert [b["key"] for b in bad] == ["gone"]
    assert str(shards / "img" / "missing.png") in bad[0]["reason"]  # names where it looked
    # a shard named by a relative path: its paths are relative to that path's folder
    monkeypatch.chdir(tmp_path / "data")
    assert next(read_shard("shards/00000.parquet")).items["image"] == str(Path("shards/img/g.png"))
