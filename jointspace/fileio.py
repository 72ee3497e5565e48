"""Atomic file writes: a kill at any moment leaves the old file or the new one, never half.

Each write goes to a temporary sibling with a name of its own
(``.NAME.<pid>.<random>.tmp``), so two processes writing the same file never
share a temporary file: the last rename wins and the file holds one writer's
bytes whole. :func:`kill_point` marks the moments the crash tests kill a process at."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

TMP_SUFFIX = ".tmp"  # run folders and stores sweep ``.*.tmp`` left by a killed write


def _open_unique_tmp(path: Path) -> tuple[Path, BinaryIO]:
    """A new, empty temporary sibling of ``path`` opened for writing (created exclusively,
    with the umask's usual permissions, unlike ``tempfile.mkstemp``'s 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        # the name kept short enough for the 255-byte limit of most file systems
        tmp = path.with_name(f".{path.name[:200]}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        return tmp, os.fdopen(fd, "wb")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a unique temporary sibling of ``path``, flush it to disk, then
    rename it over ``path``; on any failure the temporary file is removed and ``path``
    is left as it was."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | Path, sync_dir: bool = True) -> Iterator[Path]:
    """For writers that take a file name (faiss, pyarrow, tarfile): yields a unique,
    empty temporary sibling of ``path``; when the block ends it is flushed to disk and
    renamed over ``path``, or removed if the block raised.

    >>> with atomic_path(tmp / "index.faiss") as tmp_name:  # doctest: +SKIP
    ...     faiss.write_index(index, str(tmp_name))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, f = _open_unique_tmp(path)
    f.close()
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if sync_dir:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


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
