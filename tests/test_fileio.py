import json
import os

import pytest

from jointspace.fileio import atomic_write_json, atomic_write_text


def test_writes_and_replaces(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "a.txt", "one")
    assert path.read_text() == "one"
    atomic_write_json(path, {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_kill_before_rename_keeps_old_file(tmp_path, monkeypatch):
    path = atomic_write_text(tmp_path / "a.txt", "old")

    def crash(*a, **k):
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
