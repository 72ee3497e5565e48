"""One sample's item read back out of its shard: a WebDataset tar member or a Parquet cell.

What a server needs to preview and serve an item indexed from shards (``jointspace embed``
then ``index``): :meth:`ShardMembers.read` finds the sample by its key (the key the shard
readers give it, :func:`~jointspace.data.shards.sample_key`) and returns the first of the
member extensions (or Parquet columns) it is asked for that the sample has, refusing one
larger than a bound before reading it. An uncompressed tar is indexed once (its headers
only: where each member's bytes lie) and read by seeking; a compressed one is read as a
stream up to the sample. A Parquet shard's keys are read once; the cell is read from its
row group. A Parquet cell may hold a path instead of bytes (relative to the shard's
folder): it is returned as such, for the caller to check and open.
"""
from __future__ import annotations

import tarfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import DataError
from ..modalities import TooLarge
from .shards import KEY_COLUMNS, ShardError, is_compressed, parquet_sample_key, sample_key


@dataclass(frozen=True)
class Member:
    """A sample's item: ``ext`` the member extension (Parquet: the column) it was found
    under, and its bytes, or the ``path`` a Parquet cell names."""

    ext: str
    data: bytes | None = None
    path: Path | None = None


class ShardMembers:
    """Reads samples' members out of shards, keeping the index of the last ``keep`` shards
    (each until its file changes: size, modification time and inode are part of its key)."""

    def __init__(self, keep: int = 16) -> None:
        self.keep = keep
        self._indexes: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, shard: str | Path, key: str, exts: Sequence[str], max_bytes: int) -> Member:
        """The first of ``exts`` (lower case) that sample ``key`` of ``shard`` has.
        :class:`~jointspace.data.shards.ShardError` if the shard cannot be read,
        :class:`~jointspace.errors.DataError` if it has no such sample or member,
        :class:`~jointspace.modalities.TooLarge` for a member over ``max_bytes`` (not read)."""
        shard = Path(shard)
        if shard.suffix.lower() == ".parquet":
            return self._parquet(shard, key, exts, max_bytes)
        return self._tar(shard, key, exts, max_bytes)

    def _index(self, shard: Path, build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        st = shard.stat()
        ident = (str(shard), st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            if ident in self._indexes:
                self._indexes.move_to_end(ident)
                return self._indexes[ident]
        index = build(shard)
        with self._lock:
            self._indexes[ident] = index
            while len(self._indexes) > self.keep:
                self._indexes.popitem(last=False)
        return index

    # -- WebDataset ------------------------------------------------------------------
    def _tar(self, shard: Path, key: str, exts: Sequence[str], max_bytes: int) -> Member:
        try:
            if is_compressed(shard):
                return _tar_stream(shard, key, exts, max_bytes)
            members = self._index(shard, _tar_index).get(key, {})
            ext = _first(members, exts, key, shard)
            offset, size = members[ext]
            _bound(shard, key, ext, size, max_bytes)
            with open(shard, "rb") as f:
                f.seek(offset)
                data = f.read(size)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ShardError(f"shard cannot be read ({e}): {shard}") from None
        if len(data) != size:
            raise ShardError(f"shard is truncated in {key}.{ext}: {shard}")
        return Member(ext, data)

    # -- Parquet ---------------------------------------------------------------------
    def _parquet(self, shard: Path, key: str, exts: Sequence[str], max_bytes: int) -> Member:
        import pyarrow.parquet as pq

        try:
            file = pq.ParquetFile(shard)
            names = file.schema_arrow.names
            column = next((c for c in exts if c in names), None)
            if column is None:
                raise DataError(f"{shard.name} has no column {' or '.join(exts)}")
            row = self._index(shard, _parquet_index).get(key)
            if row is None:
                raise DataError(f"{shard.name} has no sample {key!r}")
            group, at = row
            value = file.read_row_group(group, columns=[column]).column(0)[at].as_py()
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001  (pyarrow raises ArrowInvalid, OSError …)
            raise ShardError(f"shard cannot be read as a Parquet file ({e}): {shard}") from None
        if isinstance(value, dict):  # the {"bytes", "path"} struct of HF datasets
            value = value.get("bytes") or value.get("path")
        if isinstance(value, str) and value:
            return Member(column, path=shard.parent / value)  # as the shard reader takes it
        if not isinstance(value, (bytes, bytearray)) or not value:
            raise DataError(f"sample {key!r} of {shard.name} has no {column}")
        _bound(shard, key, column, len(value), max_bytes)
        return Member(column, bytes(value))


def _first(members: dict[str, Any], exts: Sequence[str], key: str, shard: Path) -> str:
    if not members:
        raise DataError(f"{shard.name} has no sample {key!r}")
    ext = next((e for e in exts if e in members), None)
    if ext is None:
        raise DataError(f"sample {key!r} of {shard.name} has no {' or '.join(exts)} member "
                        f"(it has {', '.join(sorted(members))})")
    return ext


def _bound(shard: Path, key: str, ext: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise TooLarge(f"{key}.{ext} of {shard.name} is {size} bytes; at most {max_bytes} are served")


def _tar_index(shard: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """sample key → {extension: (offset of its bytes, size)}: one pass over the headers."""
    index: dict[str, dict[str, tuple[int, int]]] = {}
    with tarfile.open(shard, "r:") as archive:
        for info in archive:
            if info.isfile():
                key, ext = sample_key(info.name)
                if key:
                    index.setdefault(key, {})[ext.lower()] = (info.offset_data, info.size)
    return index


def _tar_stream(shard: Path, key: str, exts: Sequence[str], max_bytes: int) -> Member:
    """The member of a compressed tar, read as a stream (a sample's members are consecutive)."""
    found: dict[str, bytes] = {}
    with tarfile.open(shard, "r|*") as archive:
        for info in archive:
            if not info.isfile():
                continue
            at, ext = sample_key(info.name)
            if at != key:
                if found:
                    break
                continue
            ext = ext.lower()
            if ext in exts:
                _bound(shard, key, ext, info.size, max_bytes)
                found[ext] = archive.extractfile(info).read()
    ext = _first(found, exts, key, shard)
    return Member(ext, found[ext])


def _parquet_index(shard: Path) -> dict[str, tuple[int, int]]:
    """sample key → (row group, row in it), keyed as the shard reader keys the rows."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(shard)
    names = file.schema_arrow.names
    key_col = next((c for c in KEY_COLUMNS if c in names), None)
    index: dict[str, tuple[int, int]] = {}
    row = 0
    for group in range(file.num_row_groups):
        keys = file.read_row_group(group, columns=[key_col]).column(0).to_pylist() if key_col \
            else [None] * file.metadata.row_group(group).num_rows
        for at, value in enumerate(keys):
            index.setdefault(parquet_sample_key(value, shard, row), (group, at))
            row += 1
    return index


__all__ = ["Member", "ShardMembers"]
