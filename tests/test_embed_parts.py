"""embed's parts and their quarantine files, without Ray (the units run one after another in
this process): a part redone after a kill leaves no stale quarantine, quarantine files
beyond the input are swept, and a shard's identity is its stat identity (size, mtime,
ctime, inode)."""
import io
import os
import tarfile

import pytest

import jointspace
import jointspace.bulk_embed as embed_module
from jointspace.data.export import export_manifest
from jointspace.bulk_embed import embed, embed_unit, unit_identity


@pytest.fixture
def no_ray(monkeypatch):
    """embed's units run here, one after another, by the same embed_unit the actors call."""
    def run_here(units, model_dir, modality, out, batch_size, workers, address):
        model = jointspace.load(model_dir)
        return [embed_unit(model, dict(u), modality, out, batch_size) for u in units], 0.0
    monkeypatch.setattr(embed_module, "_run_on_ray", run_here)


def _break(shard):
    with tarfile.open(shard, "a") as tar:  # one undecodable image
        info = tarfile.TarInfo("bad.png")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\x89PNG"))


def test_a_part_redone_after_a_kill_leaves_no_stale_quarantine(no_ray, shapes_dir, image_audio_model_dir,
                                                               tmp_path):
    """Review of issue 20: a redone part's old quarantine was removed after the part (a kill
    in between left it), and a clean part never removed one: the report listed problems of
    a shard since repaired."""
    shards, out = tmp_path / "shards", tmp_path / "emb"
    export_manifest(shapes_dir / "train.csv", shards, format="webdataset", shard_size=40)
    good = (shards / "00001.tar").read_bytes()
    _break(shards / "00001.tar")
    spec = f"{shards}/{{00000..00001}}.tar"
    first = embed(image_audio_model_dir, spec, out, batch_size=16)
    assert (first.written, first.quarantined) == (2, 1) and (out / "quarantine-00001.jsonl").is_file()
    (shards / "00001.tar").write_bytes(good)  # repaired; then a re-run killed between removing
    os.remove(out / "part-00001.parquet")     # the changed part and removing its quarantine
    again = embed(image_audio_model_dir, spec, out, batch_size=16)
    assert (again.written, again.quarantined, again.problems) == (1, 0, [])
    assert sorted(p.name for p in out.iterdir() if p.name != "embed.json") == [
        "part-00000.parquet", "part-00001.parquet"]


def test_quarantine_files_beyond_the_input_are_swept(no_ray, shapes_dir, image_audio_model_dir, tmp_path):
    lines = (shapes_dir / "test.csv").read_text().splitlines()  # id,image,text,label
    rows = [line.replace(",images/", f",{shapes_dir}/images/", 1) for line in lines[1:]]
    manifest, out = tmp_path / "test.csv", tmp_path / "emb"
    manifest.write_text("\n".join(lines[:1] + rows + ["gone,/no/such.png,a lost shape,x"]) + "\n")
    first = embed(image_audio_model_dir, manifest, out, part_size=5)
    assert (first.parts, first.quarantined) == (3, 1) and (out / "quarantine-00002.jsonl").is_file()
    os.remove(out / "part-00002.parquet")  # a kill between a part's removal and its quarantine's
    manifest.write_text("\n".join(lines[:1] + rows[:5]) + "\n")  # one part's rows now
    fewer = embed(image_audio_model_dir, manifest, out, part_size=5)
    assert (fewer.parts, fewer.written, fewer.problems) == (1, 0, [])
    assert sorted(p.name for p in out.glob("quarantine-*")) == []


def test_a_shard_is_known_by_size_mtime_ctime_and_inode(tmp_path):
    """Size and mtime alone missed a shard replaced by another file of the same size with
    its mtime kept (tar, rsync -t, touch -d), or written in place with the mtime set back."""
    shard = tmp_path / "00000.tar"
    shard.write_bytes(b"a" * 100)
    unit = {"part": 0, "kind": "shard", "input": str(shard), "rows": []}
    first, stat = unit_identity(unit), shard.stat()
    assert unit_identity(unit) == first  # nothing changed: the same part
    other = tmp_path / "other.tar"  # made while the shard exists: another inode
    other.write_bytes(b"b" * 100)
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(other, shard)
    replaced = shard.stat()
    assert (replaced.st_size, replaced.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert replaced.st_ino != stat.st_ino and unit_identity(unit) != first
    second = unit_identity(unit)
    with open(shard, "r+b") as f:  # in place, the mtime set back: only the ctime tells
        f.write(b"c")
    while shard.stat().st_ctime_ns == replaced.st_ctime_ns:  # until the clock has ticked
        os.utime(shard, ns=(replaced.st_atime_ns, replaced.st_mtime_ns))
    os.utime(shard, ns=(replaced.st_atime_ns, replaced.st_mtime_ns))
    now = shard.stat()
    assert (now.st_size, now.st_mtime_ns, now.st_ino) == (replaced.st_size, replaced.st_mtime_ns,
                                                          replaced.st_ino)
    assert unit_identity(unit) != second
