"""Issue 18, silent wrong answers: a filter on a field no item has is an error naming the
fields there are; rows of a manifest without ids are keyed by their content, not their
line; a file that turns bad keeps the item indexed from it."""
import csv
import sqlite3

import numpy as np
import pytest

import jointspace.model
from jointspace.errors import JointspaceError
from jointspace.index import Collection, build_collection, index_source
from jointspace.index.ingest import content_hash, scan_manifest


def _no_id_manifest(shapes_dir, path, rows=None):
    """shapes' test.csv without its id column, image paths absolute."""
    with open(shapes_dir / "test.csv", newline="") as f:
        found = list(csv.DictReader(f))
    rows = found if rows is None else rows
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "text", "label", "shot"])
        for r in rows:
            writer.writerow([shapes_dir / r["image"], r["text"], r["label"], f"s{int(r['id'][-2:]) % 3}"])
    return found


@pytest.fixture
def encoded(monkeypatch):
    """How many items the model embedded, per modality."""
    counts: dict[str, int] = {}
    real = jointspace.model.JointModel.encode

    def spy(self, modality, items, **kwargs):
        counts[modality] = counts.get(modality, 0) + len(items)
        return real(self, modality, items, **kwargs)
    monkeypatch.setattr(jointspace.model.JointModel, "encode", spy)
    return counts


def _by_key(col):
    ids, vectors = col.catalog.vectors("image")
    items = col.catalog.items(ids)
    return {items[i]["key"]: (i, v) for i, v in zip(ids.tolist(), vectors)}


def test_a_filter_on_a_field_no_item_has_is_an_error(trained_model_dir, shapes_dir, tmp_path):
    _no_id_manifest(shapes_dir, tmp_path / "m.csv")
    col = build_collection(trained_model_dir, tmp_path / "m.csv", tmp_path / "col")
    with pytest.raises(JointspaceError) as e:  # it returned [] before
        col.search(text="a", where={"colour": "red"})
    from jointspace.index import UnknownFilterError
    with pytest.raises(UnknownFilterError) as e:
        col.search(text="a", where={"colour": "red"})
    message = str(e.value)
    assert "'colour'" in message and "no item has" in message and "\n" not in message
    assert "label" in message and "shot" in message  # the fields that can be filtered on
    assert isinstance(e.value, JointspaceError) and e.value.names == ["colour"]
    # a known field and an unknown one: still the error, naming only the unknown one
    with pytest.raises(UnknownFilterError, match="'colour'"):
        col.search(text="a", where={"label": "cyan star", "colour": "red"})
    # past the end of the ranking too (it returned [] before looking at the filter)
    with pytest.raises(UnknownFilterError):
        col.search(text="a", where={"colour": "red"}, offset=10 ** 6)
    # known fields with no matching value are a valid search with no hits
    assert col.search(text="a", where={"shot": "s9"}) == []
    assert col.search(text="a", where={"label": "no such label"}) == []
    assert {h.item["meta"]["shot"] for h in col.search(text="a", where={"shot": "s1"}, k=20)} == {"s1"}
    assert e.value.describe(hidden=("key", "path", "source")).count("path") == 0


def test_an_inserted_row_without_id_embeds_only_itself(trained_model_dir, shapes_dir, tmp_path,
                                                        encoded):
    manifest, col_dir = tmp_path / "m.csv", tmp_path / "col"
    rows = _no_id_manifest(shapes_dir, manifest)
    first = index_source(col_dir, trained_model_dir, manifest)
    assert first.added == 12 and encoded["image"] == 12
    before = _by_key(Collection.open(col_dir))
    new = dict(rows[5], text="a brand new caption")  # an existing image, another caption
    _no_id_manifest(shapes_dir, manifest, [new] + rows)
    encoded.clear()
    again = index_source(col_dir, trained_model_dir, manifest)
    assert (again.added, again.updated, again.unchanged) == (1, 0, 12)
    assert encoded == {"image": 1, "text": 1}  # the new row only
    after = _by_key(Collection.open(col_dir))
    assert len(after) == 13
    for key, (item_id, vector) in before.items():  # same ids, same vectors
        assert after[key][0] == item_id
        np.testing.assert_array_equal(after[key][1], vector)
    # two identical rows are two items, told apart by occurrence, stable across re-runs
    _no_id_manifest(shapes_dir, manifest, [new, new] + rows)
    twice = index_source(col_dir, trained_model_dir, manifest)
    assert (twice.added, twice.unchanged) == (1, 13)
    assert index_source(col_dir, trained_model_dir, manifest).unchanged == 14


def test_a_file_that_turns_bad_keeps_its_item(trained_model_dir, shapes_dir, tmp_path, encoded):
    images = tmp_path / "images"
    images.mkdir()
    with open(shapes_dir / "test.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:4]
    for r in rows:
        (images / r["image"].rsplit("/", 1)[-1]).write_bytes((shapes_dir / r["image"]).read_bytes())
    manifest, col_dir = tmp_path / "m.csv", tmp_path / "col"
    manifest.write_text("image,text\n" + "".join(f"images/{r['image'].rsplit('/', 1)[-1]},{r['text']}\n"
                                                  for r in rows))
    index_source(col_dir, trained_model_dir, manifest)
    victim = images / rows[1]["image"].rsplit("/", 1)[-1]
    good = victim.read_bytes()
    before = _by_key(Collection.open(col_dir))
    for spoil in (lambda: victim.write_bytes(b"\x89PNG truncated"),  # corrupt
                  lambda: victim.rename(victim.with_suffix(".away"))):  # gone for a moment
        spoil()
        encoded.clear()
        report = index_source(col_dir, trained_model_dir, manifest)
        assert report.quarantined == 1 and report.problems[0].path == str(victim.resolve())
        col = Collection.open(col_dir)
        assert _by_key(col).keys() == before.keys() and len(col) == 4  # still indexed
        assert "kept" in report.problems[0].reason
        assert [q.path for q in col.quarantined()] == [str(victim.resolve())]
        if victim.with_suffix(".away").exists():
            victim.with_suffix(".away").rename(victim)
        victim.write_bytes(good)
        # back as it was: nothing embedded, the quarantine entry goes, the item never left
        encoded.clear()
        fixed = index_source(col_dir, trained_model_dir, manifest)
        assert (fixed.unchanged, fixed.quarantined, encoded) == (4, 0, {})
        col = Collection.open(col_dir)
        assert col.quarantined() == [] and _by_key(col).keys() == before.keys()


def test_a_collection_keyed_by_line_is_re_keyed_not_duplicated(trained_model_dir, shapes_dir,
                                                               tmp_path, encoded):
    manifest, col_dir = tmp_path / "m.csv", tmp_path / "col"
    rows = _no_id_manifest(shapes_dir, manifest)
    index_source(col_dir, trained_model_dir, manifest)
    # turn it into what the previous version wrote: "<manifest>#m:<line>" keys, the line-based
    # id in the metadata and in the content hash
    candidates, _ = scan_manifest(manifest, ["image", "text"], tmp_path)
    db = sqlite3.connect(col_dir / "catalog.sqlite")
    for line, c in enumerate(candidates, start=2):
        old = f"m:{line}"
        c.meta = {**c.meta, "id": old}
        db.execute("UPDATE items SET key=?, meta=json_set(meta, '$.id', ?), content_hash=? WHERE key=?",
                   (f"{manifest.resolve()}#{old}", old, content_hash(c), c.key))
    db.commit()
    db.close()
    ids = sorted(_by_key(Collection.open(col_dir)).values(), key=lambda p: p[0])
    _no_id_manifest(shapes_dir, manifest, [dict(rows[0], text="one more")] + rows)
    encoded.clear()
    report = index_source(col_dir, trained_model_dir, manifest)
    assert (report.added, report.updated, report.unchanged) == (1, 0, 12)
    assert encoded == {"image": 1, "text": 1}
    col = Collection.open(col_dir)
    assert len(col) == 13 and not any("#m:" in k for k in _by_key(col))
    assert [i for i, _ in ids] == sorted(i for i, _ in _by_key(col).values())[:12]
    assert all("id" not in h.item["meta"] for h in col.search(text="a", k=13))
