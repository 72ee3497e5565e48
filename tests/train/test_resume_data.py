"""--resume on data that changed since the checkpoint is refused, or with the flag, warned."""
import csv
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from jointspace.cli import main
from jointspace.data.manifest import Manifest, Record
from jointspace.errors import DataError
from jointspace.train import data_fingerprint as fp_module
from jointspace.train.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from jointspace.train.data_fingerprint import data_change, data_fingerprint
from jointspace.train.sources import Source
from jointspace.train.streams import StreamSource
from jointspace.train.trainer import train


def _manifest(shapes_dir, folder):
    """A copy of the shapes train manifest with absolute image paths, and its rows."""
    with open(shapes_dir / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["image"] = str(shapes_dir / r["image"])
    path = folder / "train.csv"
    _write(path, rows)
    return path, rows


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture
def warnings(monkeypatch):
    seen = []
    monkeypatch.setattr(fp_module.logger, "warning", lambda msg, *a: seen.append(msg % a))
    return seen


def test_resume_after_an_edited_row_is_refused(shapes_dir, tiny_run, tmp_path, warnings):
    data, rows = _manifest(shapes_dir, tmp_path)
    out = tmp_path / "m"
    train(tiny_run, data, out, stop_after=4)
    rows[2]["text"] = "a caption written after the checkpoint"
    _write(data, rows)
    with pytest.raises(DataError) as e:
        train(tiny_run, data, out, resume=True)
    message = str(e.value)
    assert "\n" not in message and f"manifest {data}" in message and "line 4 changed" in message
    assert "--accept-changed-data" in message and "accept_changed_data=True" in message
    assert load_checkpoint(out / CHECKPOINT_FILE)["step"] == 4  # nothing was touched
    result = train(tiny_run, data, out, resume=True, accept_changed_data=True)
    assert result.finished and result.steps == 12
    assert any("data changed since" in w and "resuming anyway" in w for w in warnings)


def test_resume_after_a_file_changed_or_became_unreadable(shapes_dir, tiny_run, tmp_path):
    data, rows = _manifest(shapes_dir, tmp_path)
    image = tmp_path / "copy.png"
    image.write_bytes(Path(rows[5]["image"]).read_bytes())
    rows[5]["image"] = str(image)
    _write(data, rows)
    out = tmp_path / "m"
    train(tiny_run, data, out, stop_after=4)
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, touched
    with pytest.raises(DataError, match=r"a file it names changed .*line 7 changed \(.*copy\.png\)"):
        train(tiny_run, data, out, resume=True)
    image.write_bytes(b"not an image any more")  # its row is quarantined: the rows shift
    with pytest.raises(DataError, match=r"valid rows 96 → 95; line 7 is no longer a valid row"):
        train(tiny_run, data, out, resume=True)


def test_unchanged_data_resumes_exactly(shapes_dir, tiny_run, tmp_path, warnings):
    data, _ = _manifest(shapes_dir, tmp_path)
    train(tiny_run, data, tmp_path / "a")
    train(tiny_run, data, tmp_path / "b", stop_after=5)
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_FILE)["data"]["sources"][0]["rows"] == 96
    train(tiny_run, data, tmp_path / "b", resume=True)
    assert warnings == []
    a, b = (load_file(str(tmp_path / x / "model.safetensors")) for x in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_from_before_fingerprints_resumes_with_a_warning(shapes_dir, tiny_run, tmp_path,
                                                                      warnings):
    data, _ = _manifest(shapes_dir, tmp_path)
    out = tmp_path / "m"
    train(tiny_run, data, out, stop_after=4)
    state = load_checkpoint(out / CHECKPOINT_FILE)
    del state["data"]
    save_checkpoint(out / CHECKPOINT_FILE, state)
    assert train(tiny_run, data, out, resume=True).finished
    assert any("predates data fingerprints" in w for w in warnings)


def test_changed_shards_are_named(tmp_path):
    shards = [tmp_path / f"{i:05d}.tar" for i in range(3)]
    for s in shards:
        s.write_bytes(b"x" * 100)
    stream = StreamSource(str(tmp_path / "{00000..00002}.tar"), [str(s) for s in shards], ["image"])
    saved = data_fingerprint([], stream)
    assert data_change(saved, data_fingerprint([], stream)) is None
    shards[1].write_bytes(b"y" * 101)
    assert data_change(saved, data_fingerprint([], stream)) == (
        f"shards {stream.spec}: shard {shards[1]} size 100 → 101 bytes")
    fewer = StreamSource(stream.spec, stream.shards[:2], ["image"])
    assert "3 shard(s) then, 2 now" in data_change(saved, data_fingerprint([], fewer))


def test_manifest_path_spelling_does_not_matter(tmp_path, monkeypatch):
    """The same manifest named by a relative or an absolute path fingerprints the same."""
    (tmp_path / "a.png").write_bytes(b"png")
    (tmp_path / "m.csv").write_text("image,text\na.png,hi\n")

    def source(path):
        record = Record("m:2", 2, {"image": path.parent / "a.png", "text": "hi"})
        return Source(path, ["image", "text"], Manifest(path, [record]))
    monkeypatch.chdir(tmp_path)
    relative = data_fingerprint([source(Path("m.csv"))], None)
    absolute = data_fingerprint([source(tmp_path / "m.csv")], None)
    assert data_change(relative, absolute) is None


def test_cli_flag(shapes_dir, tiny_run, tmp_path, capsys):
    data, rows = _manifest(shapes_dir, tmp_path)
    out = tmp_path / "m"
    train(tiny_run, data, out, stop_after=10)
    _write(data, rows[:-1])
    args = ["train", "--data", str(data), "--out", str(out), "--resume"]
    assert main(args) == 2
    assert "valid rows 96 → 95" in capsys.readouterr().err
    assert main(args + ["--accept-changed-data"]) == 0
