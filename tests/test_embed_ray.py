"""Bulk embedding on a local Ray: the same vectors as model.encode, bad items quarantined,
finished parts skipped on a re-run, and the parts indexed without encoding again."""
import io
import os
import tarfile

import numpy as np
import pytest
import ray  # the [ray] extra, which [test] installs: these tests never skip for want of it

import jointspace
from jointspace.data.export import export_manifest
from jointspace.bulk_embed import embed, read_embeddings, units_of, units_signature
from jointspace.errors import JointspaceError
from jointspace.index import Collection, index_source


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shards(shapes_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("embed-shards")
    export_manifest(shapes_dir / "train.csv", out, format="webdataset", shard_size=20)
    with tarfile.open(out / "00005.tar", "w") as tar:
        for name, data in (("bad.png", b"\x89PNG broken"), ("bad.txt", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def test_ray_embed_equals_encode_and_resumes(local_ray, shards, shapes_dir, trained_model_dir, tmp_path):
    out = tmp_path / "emb"
    report = embed(trained_model_dir, f"{shards}/{{00000..00005}}.tar", out, workers=2, batch_size=16)
    assert (report.parts, report.written, report.items, report.quarantined) == (6, 6, 96, 1)
    problem = report.problems[0]
    assert "not a decodable image" in problem["reason"] and "0x" not in problem["reason"]
    assert problem["key"] == "bad"
    info, table = read_embeddings(out)
    keys = table.column("key").to_pylist()
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    model = jointspace.load(trained_model_dir)
    expected = model.encode_image([shapes_dir / "images" / "train" / f"{k}.png" for k in keys])
    assert sorted(keys) == sorted(p.stem for p in (shapes_dir / "images" / "train").glob("*.png"))
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert table.column("text").to_pylist()[0] and info["modality"] == "image"
    # a re-run skips finished parts; a part lost (a kill before its rename) is redone alone
    assert embed(trained_model_dir, f"{shards}/*.tar", out, workers=2).written == 0
    os.remove(out / "part-00002.parquet")
    again = embed(trained_model_dir, f"{shards}/*.tar", out, workers=2)
    assert (again.written, again.items) == (1, 20)
    # indexed without encoding: the same search results as indexing the images
    index_source(tmp_path / "col", trained_model_dir, out)
    index_source(tmp_path / "ref", trained_model_dir, shapes_dir / "train.csv")
    got = Collection.open(tmp_path / "col").search(text="a red circle", k=5)
    ref = Collection.open(tmp_path / "ref").search(text="a red circle", k=5)
    assert [h.item["meta"]["key"] for h in got] == [h.item["meta"]["id"] for h in ref]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in ref], atol=1e-5)


def test_manifest_source_and_another_model(local_ray, shapes_dir, trained_model_dir, tmp_path):
    out = tmp_path / "emb"
    report = embed(trained_model_dir, shapes_dir / "test.csv", out, workers=2, part_size=5)
    assert (report.parts, report.items) == (3, 12)
    model = jointspace.load(trained_model_dir)
    with __import__("torch").no_grad():
        next(model.parameters()).add_(0.01)
    other = model.save(tmp_path / "other")
    with pytest.raises(JointspaceError, match="embeddings of another model"):
        embed(other, shapes_dir / "test.csv", out)
    with pytest.raises(JointspaceError, match="holds embeddings of another model"):
        index_source(tmp_path / "col", other, out)
    with pytest.raises(JointspaceError, match="no 'audio' tower"):
        embed(trained_model_dir, shapes_dir / "test.csv", tmp_path / "e2", modality="audio")


def test_a_rerun_on_other_input_is_refused(local_ray, shards, shapes_dir, trained_model_dir, tmp_path):
    """Parts are matched to units by number: other units must not inherit stale parts."""
    out = tmp_path / "emb"
    embed(trained_model_dir, f"{shards}/{{00000..00002}}.tar", out, workers=2)
    with pytest.raises(JointspaceError, match="holds parts of other input"):
        embed(trained_model_dir, f"{shards}/{{00001..00003}}.tar", out, workers=2)
    manifest = tmp_path / "m"
    embed(trained_model_dir, shapes_dir / "test.csv", manifest, workers=2, part_size=5)
    with pytest.raises(JointspaceError, match="holds parts of other input"):
        embed(trained_model_dir, shapes_dir / "test.csv", manifest, workers=2, part_size=4)
    assert embed(trained_model_dir, shapes_dir / "test.csv", manifest, workers=2, part_size=5).written == 0


def test_the_same_key_in_two_shards_makes_two_items(local_ray, shapes_dir, trained_model_dir, tmp_path):
    """img2dataset's keys are unique within a shard only."""
    pngs = sorted((shapes_dir / "images" / "train").glob("*.png"))[:2]
    (tmp_path / "s").mkdir()
    for i, png in enumerate(pngs):
        with tarfile.open(tmp_path / "s" / f"{i:05d}.tar", "w") as tar:
            for name, data in (("000000.png", png.read_bytes()), ("000000.txt", f"caption {i}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    embed(trained_model_dir, f"{tmp_path}/s/*.tar", tmp_path / "emb", workers=2)
    report = index_source(tmp_path / "col", trained_model_dir, tmp_path / "emb")
    col = Collection.open(tmp_path / "col")
    assert len(col) == 2 and report.added == 2
    assert sorted(col.get(i)["text"] for i in (1, 2)) == ["caption 0", "caption 1"]


def test_items_keyed_without_their_shard_are_rekeyed_not_duplicated(local_ray, shards, trained_model_dir,
                                                                     tmp_path):
    """Collections made before keys named the shard hold ``folder#key``: a re-index moves
    them to the new keys instead of adding every item again."""
    import json

    out = tmp_path / "emb"
    embed(trained_model_dir, f"{shards}/{{00000..00001}}.tar", out, workers=2)
    index_source(tmp_path / "col", trained_model_dir, out)
    col = Collection.open(tmp_path / "col")
    n = len(col)
    with col.catalog._tx() as db:  # as the earlier version keyed them
        for item_id, key in db.execute("SELECT id, key FROM items").fetchall():
            db.execute("UPDATE items SET key=? WHERE id=?", (f"{out}#{key.rsplit('#', 1)[1]}", item_id))
    index_source(tmp_path / "col", trained_model_dir, out)
    col = Collection.open(tmp_path / "col")
    assert len(col) == n and all(k.count(".tar#") == 1 for k in col.catalog.keys(str(out)))
    spec = f"{shards}/{{00000..00001}}.tar"
    info = json.loads((out / "embed.json").read_text())
    for key in ("parts", "kind", "part_size"):  # as recorded before each part's own record
        del info[key]
    signature = units_signature(units_of(spec, "image", 1)[0])
    (out / "embed.json").write_text(json.dumps({**info, "units": signature}))
    assert embed(trained_model_dir, spec, out, workers=2).written == 0  # its parts are kept
    assert "parts" in json.loads((out / "embed.json").read_text())
    (out / "embed.json").write_text(json.dumps(info))  # from before embed.json recorded any
    with pytest.raises(JointspaceError, match="made before jointspace recorded"):
        embed(trained_model_dir, spec, out, workers=2)


def _folder(out):
    """Every part's rows (vectors rounded to 1e-6) and every quarantine file, by name."""
    import pyarrow.parquet as pq
    found = {}
    for path in sorted(out.glob("part-*.parquet")) + sorted(out.glob("quarantine-*.jsonl")):
        if path.suffix == ".jsonl":
            found[path.name] = path.read_text()
        else:
            rows = pq.read_table(path).to_pylist()
            found[path.name] = [{**r, "vector": np.round(r["vector"], 6).tolist()} for r in rows]
    return found


def test_a_repaired_shard_redoes_its_part_alone(local_ray, shapes_dir, trained_model_dir, tmp_path):
    """Issue 20: embed 3 shards, repair one, re-run: only its part is rewritten (the others
    keep their bytes and mtime), and the folder equals a fresh run's."""
    import time
    shards = tmp_path / "shards"
    export_manifest(shapes_dir / "train.csv", shards, format="webdataset", shard_size=20)
    good = (shards / "00001.tar").read_bytes()
    with tarfile.open(shards / "00001.tar", "a") as tar:  # broken: one undecodable image
        info = tarfile.TarInfo("bad.png")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\x89PNG"))
    spec, out = f"{shards}/{{00000..00002}}.tar", tmp_path / "emb"
    first = embed(trained_model_dir, spec, out, workers=2, batch_size=16)
    assert (first.written, first.quarantined) == (3, 1)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("part-*.parquet")}
    time.sleep(0.01)
    (shards / "00001.tar").write_bytes(good)  # repaired
    again = embed(trained_model_dir, spec, out, workers=2, batch_size=16)
    assert (again.written, again.items, again.quarantined) == (1, 20, 0)
    assert again.redone == [f"{shards}/00001.tar"] and not (out / "quarantine-00001.jsonl").exists()
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("part-*.parquet")}
    assert {n for n in after if after[n] != before[n]} == {"part-00001.parquet"}
    fresh = tmp_path / "fresh"
    embed(trained_model_dir, spec, fresh, workers=2, batch_size=16)
    assert _folder(out) == _folder(fresh)
    assert embed(trained_model_dir, spec, out, workers=2).written == 0  # nothing changed since
    grown = embed(trained_model_dir, f"{shards}/{{00000..00003}}.tar", out, workers=2, batch_size=16)
    assert (grown.written, grown.redone) == (1, [])  # a shard added at the end: its part alone
    with pytest.raises(JointspaceError, match="holds parts of shards .* does not name"):
        embed(trained_model_dir, spec, out, workers=2)  # 00003 dropped: refused, not deleted


def test_edited_manifest_rows_redo_their_parts_alone(local_ray, shapes_dir, trained_model_dir, tmp_path):
    """A manifest's parts are matched by their rows: an edit redoes the parts it touches,
    and parts beyond the rows left are removed."""
    lines = (shapes_dir / "test.csv").read_text().splitlines()  # id,image,text,label
    rows = [line.replace(",images/", f",{shapes_dir}/images/", 1) for line in lines[1:]]
    manifest, out = tmp_path / "test.csv", tmp_path / "emb"
    manifest.write_text("\n".join(lines[:1] + rows) + "\n")
    assert embed(trained_model_dir, manifest, out, workers=2, part_size=5).parts == 3
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    manifest.write_text("\n".join(lines[:1] + rows[:-1]) + "\n")  # the last row (part 2) removed
    again = embed(trained_model_dir, manifest, out, workers=2, part_size=5)
    assert (again.parts, again.written, again.items) == (3, 1, 1)
    assert again.redone == ["part 2 (row test-000010)"]
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert {n for n in after if after[n] != before[n]} == {"part-00002.parquet"}
    manifest.write_text("\n".join(lines[:1] + rows[:5]) + "\n")  # one part's rows
    fewer = embed(trained_model_dir, manifest, out, workers=2, part_size=5)
    assert (fewer.parts, fewer.written, fewer.removed) == (1, 0, 2)
    assert [p.name for p in out.glob("part-*")] == ["part-00000.parquet"]
