"""What a run trained on, recorded in its checkpoint, so ``--resume`` notices changed data.

Exact resume replays the batch order from the step count and the seed; that
order indexes the rows as read now. An edited manifest, or a file that became
unreadable (its row quarantined), shifts every later batch without an error,
so the checkpoint keeps a fingerprint of the data and resume compares it.

The fingerprint never reads the data files' bytes: per manifest, a SHA-256 of
the manifest's bytes, the number of valid rows and one short hash per row (its
line, id, fields, label and group; for a file field the path relative to the
manifest, size and modification time); per shard stream, each shard's path,
size and modification time.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import modality_of
from ..errors import DataError
from ..progress import logger
from ..towers import MODALITIES
from .sources import Source
from .streams import StreamSource

VERSION = 1
ACCEPT_FLAG = "--accept-changed-data (train(..., accept_changed_data=True))"


def _stat(path: str | Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _row_digest(record: Any, files: set[str], base: str) -> int:
    parts = [str(record.line), record.id, str(record.label), str(record.group)]
    for name, value in sorted(record.fields.items()):
        if name in files:
            size, mtime = _stat(value)
            value = f"{os.path.relpath(os.path.abspath(value), base)}|{size}|{mtime}"
        parts += [name, str(value)]
    digest = hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "little")


def manifest_fingerprint(source: Source) -> dict[str, Any]:
    """The manifest's SHA-256, its valid-row count and one 8-byte hash per valid row."""
    files = {f for f in source.fields if MODALITIES.get(modality_of(f)).is_file}
    base = os.path.abspath(source.path.parent)
    records = source.manifest.records
    rows = np.fromiter((_row_digest(r, files, base) for r in records), dtype=np.uint64,
                       count=len(records))
    lines = np.fromiter((r.line for r in records), dtype=np.uint32, count=len(records))
    return {"kind": "manifest", "path": str(source.path), "sha256": _sha256(source.path),
            "rows": len(rows), "fields": list(source.fields), "row_hashes": rows.tobytes(),
            "lines": lines.tobytes()}


def stream_fingerprint(stream: StreamSource) -> dict[str, Any]:
    """Each shard's absolute path, size and modification time."""
    return {"kind": "shards", "path": stream.spec,
            "shards": [[os.path.abspath(s), *_stat(s)] for s in stream.shards]}


def data_fingerprint(sources: Sequence[Source], stream: StreamSource | None) -> dict[str, Any]:
    """The fingerprint of a run's training data (its manifests, or its shard stream)."""
    parts = [stream_fingerprint(stream)] if stream is not None else [
        manifest_fingerprint(s) for s in sources]
    return {"version": VERSION, "sources": parts}


def _first_row_change(was: dict[str, Any], now: dict[str, Any], source: Source | None) -> str:
    """Where the valid rows first differ: a row gone, a row new, or a row changed."""
    a, b = (np.frombuffer(x["row_hashes"], dtype=np.uint64) for x in (was, now))
    lines_a, lines_b = (np.frombuffer(x["lines"], dtype=np.uint32) for x in (was, now))
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    i = int(differ[0]) if len(differ) else n
    if i >= len(b):
        return f"line {int(lines_a[i])} and the rows after it are gone"
    if i >= len(a) or lines_b[i] < lines_a[i]:
        return f"line {int(lines_b[i])} is a valid row now and was not"
    if lines_b[i] > lines_a[i]:
        return f"line {int(lines_a[i])} is no longer a valid row (edited, or quarantined)"
    files = []
    if source is not None:
        record = source.manifest.records[i]
        files = [str(v) for f, v in record.fields.items()
                 if f in now["fields"] and MODALITIES.get(modality_of(f)).is_file]
    return f"line {int(lines_b[i])} changed" + (f" ({', '.join(files)})" if files else "")


def _describe(was: dict[str, Any], now: dict[str, Any], source: Source | None) -> str | None:
    if was["kind"] != now["kind"]:
        return f"it trained on {was['kind']} {was['path']}, now on {now['kind']} {now['path']}"
    if now["kind"] == "shards":
        old, new = was["shards"], now["shards"]
        if len(old) != len(new):
            return f"shards {now['path']}: {len(old)} shard(s) then, {len(new)} now"
        for (path_a, size_a, mtime_a), (path_b, size_b, mtime_b) in zip(old, new):
            if path_a != path_b:
                return f"shards {now['path']}: shard {path_a} is now {path_b}"
            if size_a != size_b:
                return f"shards {now['path']}: shard {path_b} size {size_a} → {size_b} bytes"
            if mtime_a != mtime_b:
                return f"shards {now['path']}: shard {path_b} was modified since"
        return None
    where = f"manifest {now['path']}"
    changes = []
    if was["fields"] != now["fields"]:
        changes.append(f"fields {', '.join(was['fields'])} → {', '.join(now['fields'])}")
    if was["sha256"] != now["sha256"]:
        changes.append("its bytes changed (edited)")
    if was["rows"] != now["rows"]:
        changes.append(f"valid rows {was['rows']} → {now['rows']}")
    if was["row_hashes"] != now["row_hashes"]:
        if not changes:
            changes.append("a file it names changed (size or modification time)")
        changes.append(_first_row_change(was, now, source))
    return f"{where}: {'; '.join(changes)}" if changes else None


def data_change(saved: dict[str, Any], current: dict[str, Any],
                sources: Sequence[Source] = ()) -> str | None:
    """What differs between the fingerprint ``saved`` and ``current`` (None: nothing)."""
    old, new = saved.get("sources", []), current["sources"]
    if len(old) != len(new):
        return f"it trained on {len(old)} data source(s), now {len(new)}"
    for i, (was, now) in enumerate(zip(old, new)):
        change = _describe(was, now, sources[i] if i < len(sources) else None)
        if change:
            return change
    return None


def check_resume_data(saved: dict[str, Any] | None, current: dict[str, Any],
                      sources: Sequence[Source], checkpoint: Path, accept: bool) -> None:
    """Refuse (or with ``accept``, warn) when the data differs from the checkpoint's."""
    if saved is None:
        logger.warning("%s predates data fingerprints: resuming without checking that the "
                       "training data is unchanged", checkpoint)
        return
    change = data_change(saved, current, sources)
    if change is None:
        return
    if accept:
        logger.warning("data changed since %s (%s); resuming anyway, as asked: the batches from "
                       "here on differ from an uninterrupted run's", checkpoint, change)
        return
    raise DataError(f"data changed since {checkpoint}: {change}; resuming would silently "
                    f"reorder every later batch — pass {ACCEPT_FLAG} to resume anyway")
