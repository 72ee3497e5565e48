"""Atomic file writes: a kill at any moment leaves the old file or the new one, never half.

:func:`kill_point` marks the moments the crash tests kill a process at."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary sibling, flush it to disk, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDWR)  # Windows refuses to flush a read-only handle
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry, so a rename into it survives a power loss (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """:func:`atomic_write_text` of ``data`` as indented JSON."""
    return atomic_write_text(path, json.dumps(data, indent=2))


def kill_point(name: str) -> None:
    """Fault injection for the crash tests: ``JOINTSPACE_KILL_AT=name:n`` kills this
    process (SIGKILL, no clean-up) the n-th time it passes the point ``name``."""
    spec = os.environ.get("JOINTSPACE_KILL_AT", "")
    if not spec.startswith(name + ":"):
        return
    counter = f"_JOINTSPACE_KILL_COUNT_{name}"
    seen = int(os.environ.get(counter, "0")) + 1
    os.environ[counter] = str(seen)
    if seen >= int(spec.split(":")[1]):
        os.kill(os.getpid(), 9)
