"""Manifests as users really write them: Excel encodings, other column names,
broken JSON lines, same-named files, nothing valid at all, groups."""
import json

import pytest
from PIL import Image

from jointspace.data import manifest as manifest_module
from jointspace.data.manifest import Manifest, read_manifest
from jointspace.errors import DataError


@pytest.fixture
def folder(tmp_path):
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "good.png")
    Image.new("RGB", (8, 8), (0, 255, 0)).save(tmp_path / "good2.png")
    return tmp_path


def test_excel_csv_utf8_with_bom_is_read(folder):
    # Excel's "CSV UTF-8" starts with EF BB BF and ends lines with CRLF; column order as Excel saved it
    path = folder / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "text,image\r\ncafé au lait,good.png\r\n".encode("utf-8"))
    m = read_manifest(path)
    assert [(r.text, r.image) for r in m.records] == [("café au lait", folder / "good.png")]


def test_jsonl_with_bom_is_read(folder):
    path = folder / "m.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"image": "good.png", "text": "hi"}).encode() + b"\n")
    assert [r.text for r in read_manifest(path).records] == ["hi"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_cp1252_file_is_a_one_line_error_with_the_line(folder, suffix):
    lines = (["image,text", "good.png,plain", "good2.png,café"] if suffix == ".csv" else
             [json.dumps({"image": "good.png", "text": "plain"}), "", '{"image": "good2.png", "text": "café"}'])
    path = folder / f"legacy{suffix}"
    path.write_bytes("\r\n".join(lines).encode("cp1252") + b"\r\n")  # é is the single byte 0xE9
    with pytest.raises(DataError) as err:
        read_manifest(path)
    message = str(err.value)
    column = lines[2].index("é") + 1
    assert str(path) in message and "not UTF-8" in message and "0xE9" in message
    assert f"line 3, column {column}" in message and "\n" not in message


def test_bom_does_not_shift_the_reported_column(folder):
    path = folder / "m.csv"
    path.write_bytes(b"\xef\xbb\xbfimage,t\xe9xt\n")
    with pytest.raises(DataError, match="line 1, column 8"):
        read_manifest(path)


def test_columns_map_fields_to_other_names(folder):
    path = folder / "openclip.csv"
    path.write_text("filepath,caption,image\ngood.png,a red square,ignored.png\n")
    m = read_manifest(path, columns={"image": "filepath", "text": "caption", "label": None})
    assert [(r.image, r.text) for r in m.records] == [(folder / "good.png", "a red square")]


def test_missing_column_hints_at_the_mapping(folder):
    path = folder / "openclip.csv"
    path.write_text("filepath,caption\ngood.png,a red square\n")
    with pytest.raises(DataError) as err:
        read_manifest(path)
    assert ("lacks required column(s) 'image', 'text'; found: caption, filepath — map other names "
            "with --image-column/--text-column (columns=...)") in str(err.value)
    with pytest.raises(DataError, match="lacks required column\\(s\\) 'path'"):
        read_manifest(path, columns={"image": "path", "text": "caption"})
    with pytest.raises(DataError, match="unknown field\\(s\\) 'caption'"):
        read_manifest(path, columns={"caption": "caption"})


SEPARATED = "the header has one column {!r}: is the file separated by {}? jointspace reads comma-separated"


@pytest.mark.parametrize("name, content, message", [
    ("semi.csv", "image;text\ngood.png;hi\n", SEPARATED.format("image;text", "';'")),
    ("semi.csv", "Image;Text\ngood.png;hi\n", SEPARATED.format("Image;Text", "';'")),
    ("tabs.csv", "image\ttext\ngood.png\thi\n", SEPARATED.format("image\ttext", "tabs")),
    ("commas.tsv", "image,text\ngood.png,hi\n", SEPARATED.format("image,text", "','")),
    ("caps.csv", "Image,Text\ngood.png,hi\n",
     "no 'image' column; 'Image' differs only in case — rename it or pass --image-column Image; "
     "no 'text' column; 'Text' differs only in case — rename it or pass --text-column Text"),
    ("upper.csv", "IMAGE,caption\ngood.png,hi\n",
     "no 'image' column; 'IMAGE' differs only in case — rename it or pass --image-column IMAGE; "
     "map other names with --image-column/--text-column"),
])
def test_missing_columns_name_the_cause(folder, name, content, message):
    """Issue 20: a ';'-separated CSV and capitalised headers got "lacks required column(s)"
    with no word on why."""
    (folder / name).write_text(content)
    with pytest.raises(DataError) as err:
        read_manifest(folder / name)
    assert message in str(err.value)


def test_two_columns_differing_only_in_case_are_not_guessed(folder):
    (folder / "two.csv").write_text("Image,IMAGE,text\ngood.png,good.png,hi\n")
    with pytest.raises(DataError, match="lacks required column\\(s\\) 'image'; found: IMAGE, Image, "
                                        "text — map other names with --image-column"):
        read_manifest(folder / "two.csv")


def test_index_names_the_column_flags_and_the_cause(folder):
    """Issue 20: index's missing-column error named neither the flags nor the cause."""
    from jointspace.index.ingest import scan_manifest
    (folder / "oc.csv").write_text("filepath,caption\ngood.png,hi\n")
    with pytest.raises(DataError, match="has no column for image, text \\(columns: filepath, caption\\) — "
                                        "map other names with --image-column/--text-column"):
        scan_manifest(folder / "oc.csv", ["image", "text"], folder)
    (folder / "semi.csv").write_text("Image;Text\ngood.png;hi\n")
    with pytest.raises(DataError, match="is the file separated by ';'"):
        scan_manifest(folder / "semi.csv", ["image", "text"], folder)
    (folder / "caps.csv").write_text("Image,Text\ngood.png,hi\n")
    with pytest.raises(DataError, match="pass --image-column Image"):
        scan_manifest(folder / "caps.csv", ["image", "text"], folder)


def test_train_names_the_cause(folder, tiny_run):
    from jointspace.train.sources import source_fields
    (folder / "caps.csv").write_text("Image,Text\ngood.png,hi\n")
    with pytest.raises(DataError, match="image-text needs columns 'image' and 'text' — no 'image' "
                                        "column; 'Image' differs only in case"):
        source_fields(folder / "caps.csv", tiny_run.model, None)


def test_empty_mapped_column_names_the_column(folder):
    path = folder / "m.csv"
    path.write_text("filepath,caption\ngood.png,a red square\ngood2.png,\n")
    m = read_manifest(path, columns={"image": "filepath", "text": "caption"})
    assert m.bad_rows[0].reason == "empty 'caption'"
    assert m.bad_rows[0].row == {"filepath": "good2.png", "caption": ""}


def test_header_cells_with_spaces(folder):
    path = folder / "m.csv"
    path.write_text("image, text\ngood.png, a red square\n")
    assert [r.text for r in read_manifest(path).records] == ["a red square"]


def test_bad_json_line_reports_parser_line_and_column(folder):
    path = folder / "m.jsonl"
    broken = '{"image": "good2.png", "text": oops}'
    path.write_text(json.dumps({"image": "good.png", "text": "ok"}) + "\n" + broken + "\n")
    m = read_manifest(path)
    column = broken.index("oops") + 1
    assert m.bad_rows[0].line == 2
    assert m.bad_rows[0].reason == f"line is not valid JSON (Expecting value at line 2, column {column})"


def test_over_long_text_names_the_config_key(folder):
    path = folder / "m.csv"
    path.write_text("image,text\ngood.png,short\ngood2.png," + "a" * 20 + "\n")
    m = read_manifest(path, max_text_chars=10)
    assert "20 characters (limit 10)" in m.bad_rows[0].reason
    assert "train.max_text_chars" in m.bad_rows[0].reason


def test_same_named_manifests_get_separate_quarantine_files(folder):
    out = folder / "run"
    for sub, bad_line in (("a", "missing-a.png,from a"), ("b", "missing-b.png,from b")):
        (folder / sub).mkdir()
        Image.new("RGB", (8, 8)).save(folder / sub / "ok.png")
        (folder / sub / "train.csv").write_text(f"image,text\nok.png,fine\n{bad_line}\n")
    a = read_manifest(folder / "a" / "train.csv", quarantine_dir=out)
    b = read_manifest(folder / "b" / "train.csv", quarantine_dir=out)
    assert a.quarantine_path != b.quarantine_path
    assert sorted(p.name for p in out.iterdir()) == sorted([a.quarantine_path.name, b.quarantine_path.name])
    for m, sub in ((a, "a"), (b, "b")):
        assert m.quarantine_path.name.startswith("quarantine-train-")  # still readable
        rows = [json.loads(l) for l in m.quarantine_path.read_text().splitlines()]
        assert [(r["manifest"], r["line"], r["row"]["text"]) for r in rows] == [
            (str(folder / sub / "train.csv"), 3, f"from {sub}")]
    # the name is stable: reading the same manifest again rewrites the same file
    assert read_manifest(folder / "a" / "train.csv", quarantine_dir=out).quarantine_path == a.quarantine_path


def test_every_row_bad_is_an_error_after_quarantining(folder):
    path = folder / "m.csv"
    path.write_text("image,text\nmissing.png,one\ngood.png,\n")
    out = folder / "q"
    with pytest.raises(DataError) as err:
        read_manifest(path, quarantine_dir=out)
    (quarantine,) = out.iterdir()
    assert str(err.value) == f"{path}: 0 valid rows of 2; see {quarantine}"
    assert len(quarantine.read_text().splitlines()) == 2
    with pytest.raises(DataError) as err:
        read_manifest(path)
    assert str(err.value).startswith(f"{path}: 0 valid rows of 2; first: line 2, image file not found")


def test_group_column_is_read(folder):
    path = folder / "m.csv"
    path.write_text("image,text,group,label\ngood.png,a red square,sq1,red\n"
                    "good.png,a square that is red,sq1,red\ngood2.png,green,,green\n")
    m = read_manifest(path)
    assert [r.group for r in m.records] == ["sq1", "sq1", None]
    assert [r.label for r in m.records] == ["red", "red", "green"]
    other = folder / "other.csv"
    other.write_text("image,text,item\ngood.png,a,7\n")
    assert read_manifest(other, columns={"group": "item"}).records[0].group == "7"


def test_dead_code_is_gone():
    from jointspace.towers import base
    assert not hasattr(manifest_module, "OPTIONAL_COLUMNS")
    assert not hasattr(Manifest, "texts")
    assert not hasattr(base, "config_dict")
