"""Shards ask the modality plug-ins: a modality registered outside the package is exported,
read and decoded like the built-in ones, and the shard format of the built-ins is unchanged."""
from __future__ import annotations

import csv
import tarfile
from pathlib import Path
from typing import Any

import pytest

from jointspace.data.export import export_manifest, export_modalities
from jointspace.data.shards import RawSample, read_shard, shard_keys
from jointspace.data.stream import decode_sample
from jointspace.errors import DataError
from jointspace.modalities import MODALITIES, Modality


class Tally(Modality):
    """A count written as digits (a value, not a file); its decode takes no limits."""

    name = "tally_test"
    is_file = False
    shard_keys = ("tly",)

    def decode(self, source: Any, *, where: str = "", max_pixels: int | None = None) -> int:
        if isinstance(source, bytes):
            source = source.decode("utf-8")
        if not str(source).strip().isdigit():
            raise DataError(f"{where or 'tally'}: not a count")
        return int(source)


@pytest.fixture
def tally():
    MODALITIES.register(Tally.name)(Tally())
    yield Tally.name
    MODALITIES._items.pop(Tally.name)  # registered for this test only


def _manifest(shapes_dir: Path, folder: Path, counts: list[str]) -> Path:
    rows = list(csv.DictReader(open(shapes_dir / "test.csv")))[:len(counts)]
    path = folder / "m.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "image", "tally_test", "label"])
        for r, count in zip(rows, counts):
            w.writerow([r["id"], r["text"], str(shapes_dir / r["image"]), count, r["label"]])
    return path


def test_a_registered_value_modality_goes_through_export_read_and_decode(tally, shapes_dir, tmp_path):
    manifest = _manifest(shapes_dir, tmp_path, ["3", "12", "x"])
    assert shard_keys()[tally] == ("tly", tally)
    assert export_modalities(["id", "text", "image", "tally_test"]) == ["image", "text", tally]
    for fmt in ("webdataset", "parquet"):
        report = export_manifest(manifest, tmp_path / fmt, format=fmt, shard_size=10)
        assert report.samples == 3
        samples = list(read_shard(str(report.shards[0])))
        assert [s.items[tally] for s in samples] == ["3", "12", "x"]  # a value: its string
        assert decode_sample(samples[1], ["image", "text", tally]).fields[tally] == 12
        with pytest.raises(DataError, match=r"^'tally_test': not a count \(0000\d\.\w+:"):
            decode_sample(samples[2], [tally])
    with tarfile.open(tmp_path / "webdataset" / "00000.tar") as tar:  # its first shard key
        assert {n.split(".", 1)[1] for n in tar.getnames()} == {"png", "txt", "tly", "json"}


def test_the_built_in_shard_format_is_unchanged(shapes_dir, tmp_path):
    """Tar members .png/.txt/.json, Parquet columns key/png/caption and the metadata."""
    import pyarrow.parquet as pq

    rows = list(csv.DictReader(open(shapes_dir / "test.csv")))[:2]
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "text", "label"])
        for r in rows:
            w.writerow([r["id"], str(shapes_dir / r["image"]), r["text"], r["label"]])
    export_manifest(path, tmp_path / "wds", format="webdataset", shard_size=10)
    with tarfile.open(tmp_path / "wds" / "00000.tar") as tar:
        assert tar.getnames() == [f"{r['id']}.{ext}" for r in rows for ext in ("png", "txt", "json")]
    export_manifest(path, tmp_path / "pq", format="parquet", shard_size=10)
    table = pq.read_table(tmp_path / "pq" / "00000.parquet")
    assert table.column_names == ["key", "png", "caption", "id", "label"]
    assert table.column("caption").to_pylist() == [r["text"] for r in rows]


def test_a_field_without_a_plug_in_and_the_limits_each_plug_in_takes(tmp_path):
    with pytest.raises(DataError, match=r"no plug-in for 'smell' \(registered: .*\) \(s.tar:k\)"):
        decode_sample(RawSample("s.tar", "k", 0, {"smell": b"\x00"}), ["smell"])
    long = RawSample("s.tar", "k", 0, {"text": "x" * 1200})
    with pytest.raises(DataError, match=r"^'text' has 1200 characters \(limit 1000\) \(s.tar:k\)$"):
        decode_sample(long, ["text"])
    assert decode_sample(long, ["text"], max_text_chars=2000).fields["text"] == "x" * 1200
