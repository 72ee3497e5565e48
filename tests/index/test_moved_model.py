"""Issue 20 §2: a collection whose model folder moved is reachable from every verb (the new
place given once, checked by fingerprint, then recorded), and the second writer is told who
holds the lock."""
import json
import os
import shutil
import socket

import pytest
import torch
import uvicorn
from fastapi.testclient import TestClient

import jointspace
from jointspace.cli import main
from jointspace.errors import JointspaceError
from jointspace.index import Collection, index_source
from jointspace.index.collection import INFO_FILE, LOCK_FILE, ModelMovedError, WriterLock


@pytest.fixture
def moved(image_audio_model_dir, media_dir, tmp_path):
    """A collection indexed with a model whose folder was then moved: (collection, new place)."""
    model = shutil.copytree(image_audio_model_dir, tmp_path / "m")
    index_source(tmp_path / "col", model, media_dir)
    new = tmp_path / "moved" / "m"
    new.parent.mkdir()
    model.rename(new)
    return tmp_path / "col", new


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_search_index_and_serve_name_what_to_pass(moved, media_dir, capsys, monkeypatch):
    col, new = moved
    ran = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.append(app))  # never listens
    query = ["--image", str(media_dir / "red.png")]
    assert main(["search", "--collection", str(col), *query]) == 2
    assert "is gone (moved?): give its new place with --model DIR" in one_line(capsys)
    assert main(["serve", "--collection", str(col)]) == 2  # refuses to start, not 400 per query
    assert "is gone (moved?): give its new place with --model DIR" in one_line(capsys) and not ran
    assert main(["serve", "--collection", str(col), "--workers", "2"]) == 2
    assert "--model DIR" in one_line(capsys) and not ran
    old = json.loads((col / INFO_FILE).read_text())["model"]
    assert main(["index", old, str(media_dir), "--collection", str(col)]) == 2
    assert "is gone (moved?): give its new place as the model" in one_line(capsys)


def test_the_new_place_works_and_is_recorded(moved, media_dir, capsys, monkeypatch):
    col, new = moved
    query = ["--image", str(media_dir / "red.png"), "-k", "1", "--json"]
    assert main(["search", "--collection", str(col), "--model", str(new), *query]) == 0
    assert json.loads(capsys.readouterr().out)[0]["path"].endswith("red.png")
    assert json.loads((col / INFO_FILE).read_text())["model"] == str(new.resolve())
    assert main(["search", "--collection", str(col), *query]) == 0  # no flag needed any more
    # serve: the app built from the flag answers searches
    ran = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.append(app))
    newer = new.rename(new.parent / "again")
    assert main(["serve", "--collection", str(col), "--model", str(newer)]) == 0
    r = TestClient(ran[0]).post("/search/upload", files={"file": ("q.png", (media_dir / "red.png").read_bytes())})
    assert r.status_code == 200 and r.json()["hits"][0]["name"] == "red.png"
    # index: the model given as its argument is the new place
    newest = newer.rename(newer.parent / "newest")
    assert main(["index", str(newest), str(media_dir), "--collection", str(col)]) == 0
    assert json.loads((col / INFO_FILE).read_text())["model"] == str(newest.resolve())
    # Python: Collection.open(..., model=DIR) is the same
    final = newest.rename(newest.parent / "final")
    found = Collection.open(col, model=final).search(image=media_dir / "blue.png", k=1)[0]
    assert found.item["path"].endswith("blue.png")
    assert Collection.open(col).model_dir == final.resolve()


def test_a_model_with_another_fingerprint_is_refused(moved, media_dir, capsys, monkeypatch):
    col, new = moved
    other = jointspace.load(new)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    other = other.save(new.parent / "other")
    ran = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.append(app))
    for argv in (["search", "--collection", str(col), "--image", str(media_dir / "red.png")],
                 ["serve", "--collection", str(col)]):
        assert main([*argv, "--model", str(other)]) == 2
        assert "did not make" in one_line(capsys) and not ran
    assert main(["index", str(other), str(media_dir), "--collection", str(col)]) == 2
    assert "holds vectors of another model" in one_line(capsys)
    with pytest.raises(JointspaceError, match="did not make"):
        Collection.open(col, model=other)
    assert json.loads((col / INFO_FILE).read_text())["model"] != str(other)  # nothing recorded
    # a model put in the old place that is not the one: refused with the same advice
    shutil.copytree(other, json.loads((col / INFO_FILE).read_text())["model"])
    with pytest.raises(ModelMovedError, match="holds another model now; give its new place with --model"):
        Collection.open(col).search(image=media_dir / "red.png")


def test_a_second_writer_names_the_holder(tmp_path, monkeypatch):
    tmp_path.joinpath(LOCK_FILE).write_text("")
    who = rf"pid {os.getpid()} on {socket.gethostname()}, since 20\d\d-"
    with WriterLock(tmp_path):
        with pytest.raises(JointspaceError, match=who):
            WriterLock(tmp_path).__enter__()
    # the moment between taking the lock and signing it: the second writer waits for the name
    # (it read an empty file and said "pid unknown"). The holder signs while the second writer
    # waits (at its first pause, not after a timer racing its deadline)
    import fcntl

    import jointspace.index.lock as lock

    holder = WriterLock(tmp_path)
    fd = os.open(holder.path, os.O_RDWR)
    os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_EX)
    pauses = []

    def pause(seconds):
        if not pauses:
            holder._sign(fd)
        pauses.append(seconds)
    monkeypatch.setattr(lock.time, "sleep", pause)
    try:
        with pytest.raises(JointspaceError, match=who):
            WriterLock(tmp_path).__enter__()
        assert len(pauses) == 1  # it read the unsigned file, waited, then read the signature
        # a holder that never signs: named as such once the wait is over (no time waited here)
        os.ftruncate(fd, 0)
        monkeypatch.setattr(WriterLock, "SIGN_WAIT", 0.0)
        with pytest.raises(JointspaceError, match="pid unknown: the lock file is not signed"):
            WriterLock(tmp_path).__enter__()
    finally:
        monkeypatch.undo()
        os.close(fd)
    with WriterLock(tmp_path):  # released: the next writer gets it
        pass
