import json
import os

import pytest

from jointspace.fileio import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text


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


_WRITER = """
import sys
from jointspace.fileio import atomic_write_bytes
path, byte, times = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
for _ in range(times):
    atomic_write_bytes(path, byte * 200_000)
"""


def test_two_processes_writing_one_file_never_collide(tmp_path):
    """Each write has its own temporary file: neither process fails on a temporary file the
    other renamed away, and the file always holds one writer's bytes whole."""
    import subprocess
    import sys
    target = tmp_path / "shared.bin"
    atomic_write_bytes(target, b"x" * 200_000)
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(target), b, "150"],
                              stderr=subprocess.PIPE) for b in "ab"]
    seen = set()
    while any(p.poll() is None for p in procs):
        data = target.read_bytes()
        assert len(data) == 200_000 and len(set(data)) == 1, "mixed or short content"
        seen.add(data[:1])
    errors = [p.stderr.read().decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    data = target.read_bytes()
    assert data in (b"a" * 200_000, b"b" * 200_000)
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")
    path = atomic_write_bytes(tmp_path / "a.bin", b"old")
    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
