"""The writer lock of a collection: one process writes a collection at a time (``jointspace
index``); readers never take it."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import JointspaceError

LOCK_FILE = "writer.lock"


class WriterLock:
    """An exclusive, non-blocking lock on a collection (released by the OS if the holder dies).

    The holder signs the lock file with its pid, host and start time; a second writer's
    error names them. The signature is one fixed-size write over the old one (never an
    empty file in between), and a second writer that finds the file unsigned (the holder
    took the lock a moment ago and is signing it) waits up to ``SIGN_WAIT`` seconds for it."""

    RECORD_BYTES = 256
    SIGN_WAIT = 2.0

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> "WriterLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise JointspaceError(f"{self.path.parent} is being written by another process "
                                  f"({holder}); wait for it to finish") from None
        self._sign(fd)
        self._fd = fd
        return self

    def _sign(self, fd: int) -> None:
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
        os.pwrite(fd, record[:self.RECORD_BYTES].ljust(self.RECORD_BYTES), 0)
        os.ftruncate(fd, self.RECORD_BYTES)  # a longer record of an older version ends here

    def _holder(self, fd: int) -> str:
        """``pid N on HOST, since TIME`` of the holder, read from the lock file."""
        deadline = time.monotonic() + self.SIGN_WAIT
        while True:
            raw = os.pread(fd, self.RECORD_BYTES, 0).decode(errors="replace").strip()
            if raw.isdigit():  # signed by an older jointspace: a bare pid
                return f"pid {raw}"
            try:
                who = json.loads(raw)
                return f"pid {who['pid']} on {who['host']}, since {who['since']}"
            except (ValueError, TypeError, KeyError):
                if time.monotonic() > deadline:
                    return "pid unknown: the lock file is not signed"
                time.sleep(0.02)

    def __exit__(self, *_: Any) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


__all__ = ["LOCK_FILE", "WriterLock"]
