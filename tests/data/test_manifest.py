import json

import pytest
from PIL import Image

from jointspace.data.manifest import read_manifest
from jointspace.errors import BadRowError, DataError


@pytest.fixture
def folder(tmp_path):
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "good.png")
    Image.new("RGB", (8, 8), (0, 255, 0)).save(tmp_path / "good2.png")
    (tmp_path / "garbage.png").write_bytes(b"this is not an image")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    return tmp_path


def _csv(path, rows, header="id,image,text,label"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


BAD_ROWS = {
    "missing": ("2,missing.png,a caption,x", "image file not found"),
    "garbage": ("3,garbage.png,a caption,x", "cannot be decoded"),
    "truncated": ("4,truncated.png,a caption,x", "cannot be decoded"),
    "empty text": ("5,good2.png,,x", "empty 'text'"),
    "long text": ("6,good2.png," + "a" * 50 + ",x", "50 characters (limit 40)"),
    "duplicate id": ("1,good2.png,another caption,x", "duplicate id '1' (first on line 2)"),
}


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_each_bad_row_kind_is_quarantined(folder, kind):
    row, reason = BAD_ROWS[kind]
    manifest = _csv(folder / "m.csv", ["1,good.png,a red square,red square", row])
    out = folder / "out"
    m = read_manifest(manifest, quarantine_dir=out, max_text_chars=40)
    assert [r.id for r in m.records] == ["1"]
    assert len(m.bad_rows) == 1 and reason in m.bad_rows[0].reason
    assert m.quarantine_path.parent == out and m.quarantine_path.name.startswith("quarantine-m-")
    lines = [json.loads(l) for l in m.quarantine_path.read_text().splitlines()]
    assert lines[0]["line"] == 3 and reason in lines[0]["reason"] and lines[0]["manifest"] == str(manifest)
    assert lines[0]["row"] == dict(zip(["id", "image", "text", "label"], row.split(",")))  # as written


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_fail_policy_names_file_line_and_problem(folder, kind):
    row, reason = BAD_ROWS[kind]
    manifest = _csv(folder / "m.csv", ["1,good.png,a red square,red square", row])
    with pytest.raises(BadRowError) as err:
        read_manifest(manifest, on_bad_row="fail", max_text_chars=40)
    assert str(manifest) in str(err.value) and "line 3" in str(err.value) and reason in str(err.value)


def test_good_rows_resolve_paths_relative_to_manifest(folder):
    sub = folder / "sub"
    sub.mkdir()
    manifest = _csv(sub / "m.csv", ["a,../good.png,  a red square ,red square"])
    m = read_manifest(manifest)
    assert m.records[0].image == sub / "../good.png" and m.records[0].text == "a red square"
    assert m.records[0].label == "red square" and m.quarantine_path is None


def test_jsonl_rows_and_bad_json(folder):
    manifest = folder / "m.jsonl"
    manifest.write_text(json.dumps({"image": "good.png", "text": "a red square"}) + "\n"
                        + "{not json\n" + json.dumps([1, 2]) + "\n"
                        + json.dumps({"image": "good2.png", "text": "a green square"}) + "\n")
    m = read_manifest(manifest, quarantine_dir=folder / "q")
    assert [r.text for r in m.records] == ["a red square", "a green square"]
    assert [r.id for r in m.records] == ["m:1", "m:4"]  # ids default to file:line
    assert [(b.line, b.reason.split(" (")[0]) for b in m.bad_rows] == [
        (2, "line is not valid JSON"), (3, "line is not a JSON object")]


def test_csv_row_with_extra_cells(folder):
    m = read_manifest(_csv(folder / "m.csv", ["1,good.png,a,b", "2,good.png,a,b,c,d"]), check_files=False)
    assert len(m.records) == 1 and "more cells" in m.bad_rows[0].reason


def test_missing_empty_and_column_errors(folder):
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(folder / "nope.csv")
    (folder / "empty.csv").write_text("")
    with pytest.raises(DataError, match="has no rows"):
        read_manifest(folder / "empty.csv")
    (folder / "header.csv").write_text("image,text\n")
    with pytest.raises(DataError, match="has no rows"):
        read_manifest(folder / "header.csv")
    with pytest.raises(DataError, match="lacks required column\\(s\\) 'text'; found: caption, image — "
                                        "map other names with --image-column/--text-column"):
        read_manifest(_csv(folder / "cols.csv", ["good.png,hi"], header="image,caption"))
    with pytest.raises(DataError, match=r"must end in \.csv"):
        (folder / "m.txt").write_text("x")
        read_manifest(folder / "m.txt")


def test_many_rows_keep_every_good_one(folder):
    rows = [f"{i},{'good.png' if i % 100 else 'missing.png'},caption {i},x" for i in range(1, 2001)]
    m = read_manifest(_csv(folder / "big.csv", rows), quarantine_dir=folder / "q")
    assert len(m.records) + len(m.bad_rows) == 2000
    assert len(m.bad_rows) == 20 and [r.id for r in m.records][:3] == ["1", "2", "3"]


def test_manifest_columns_reads_only_the_csv_header(tmp_path):
    """Called before read_manifest for every source: a CSV must not be parsed twice."""
    from jointspace.data.manifest import manifest_columns
    path = tmp_path / "m.csv"
    # the body is not valid UTF-8: a full read would fail, the header read must not
    path.write_bytes("\ufeffimage, text ,label\n".encode("utf-8") + b"a.png,caf\xe9,x\n")
    assert manifest_columns(path) == ["image", "text", "label"]
    (tmp_path / "m.tsv").write_text("image\ttext\n")
    assert manifest_columns(tmp_path / "m.tsv") == ["image", "text"]
    (tmp_path / "m.jsonl").write_text('{"image": "a.png"}\n{"text": "b", "image": "c.png"}\n')
    assert manifest_columns(tmp_path / "m.jsonl") == ["image", "text"]
