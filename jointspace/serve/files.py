"""The files behind items: served only from inside the collection's roots, and previews.

An item's file is a file on disk (its path), or a member of the shard it was indexed from
(``jointspace embed`` parts: :func:`~jointspace.index.ingest_vectors.shard_origin`), read
out of the tar or Parquet file — which must itself lie inside the roots — within the
server's upload bound.
"""
from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from fastapi import HTTPException

from ..data.members import ShardMembers
from ..data.shards import ShardError, shard_keys
from ..errors import DataError
from ..index.ingest_vectors import shard_origin
from ..modalities import Modality, Preview, TooLarge

THUMBNAIL_PX = 256
#: the preview kind also served as ``/items/{id}/thumbnail`` (a JPEG; the route of the first
#: version, kept for compatibility); other kinds have no thumbnail
USER_FACING_DEFAULTS = ("image",)
THUMBNAIL_KIND = USER_FACING_DEFAULTS[0]
#: previews kept in memory, in all (bytes); a preview larger than 1/16 of it is not kept
CACHE_BYTES = 64 << 20


@dataclass(frozen=True)
class ItemFile:
    """An item's file as served: ``path`` on disk, or ``data``, the bytes of a shard's
    member; ``name`` gives its type (its suffix)."""

    name: str
    path: Path | None = None
    data: bytes | None = None


def has_file(item: dict[str, Any]) -> bool:
    """Whether ``item`` has a file to serve: a path, or a member of a shard."""
    return bool(item.get("path")) or shard_origin(item) is not None


class Files:
    """Finds an item's file, refusing any whose real path (symlinks resolved) lies
    outside ``roots``, and makes previews (its modality plug-in's
    :meth:`~jointspace.modalities.Modality.preview`), kept in a small in-memory LRU
    keyed by item id and content hash (a re-indexed file gets a new one)."""

    def __init__(self, roots: Sequence[str | Path] | Callable[[], Sequence[str | Path]],
                 cache_size: int = 2048, cache_bytes: int = CACHE_BYTES,
                 max_member_bytes: int = 10 << 20) -> None:
        # a callable is asked on every request: an ingest may add folders while we serve
        self._roots = roots if callable(roots) else (lambda: roots)
        self.cache_size, self.cache_bytes = cache_size, cache_bytes
        self.max_member_bytes = max_member_bytes  # a shard's member larger than this is refused
        self.members = ShardMembers()
        self._cache: OrderedDict[tuple, Preview] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def path(self, item: dict[str, Any]) -> Path:
        """The file of ``item``: 404 if it has none or it is gone, 403 if outside the roots."""
        if not item.get("path"):
            raise HTTPException(404, f"item {item['id']} has no file")
        return self._inside(item["path"], item, "file")

    def _inside(self, path: str | Path, item: dict[str, Any], what: str) -> Path:
        """``path`` resolved (symlinks too): 404 if gone, 403 if outside the roots."""
        try:
            path = Path(path).resolve(strict=True)
        except (OSError, RuntimeError):  # gone, or a symlink loop
            raise HTTPException(404, f"the {what} of item {item['id']} no longer exists") from None
        if not path.is_file():
            raise HTTPException(404, f"the {what} of item {item['id']} is not a file")
        if not any(path.is_relative_to(Path(root).resolve()) for root in self._roots()):
            raise HTTPException(403, f"the {what} of item {item['id']} is outside the collection's folders")
        return path

    def file(self, item: dict[str, Any]) -> ItemFile:
        """The item's file: on disk, or read out of its shard (404 if it has neither or it
        cannot be read, 403 if the file or the shard lies outside the roots, 413 for a
        shard's member larger than ``max_member_bytes``)."""
        origin = shard_origin(item)
        if origin is None:
            path = self.path(item)
            return ItemFile(path.name, path=path)
        shard, key = self._inside(origin[0], item, "shard"), origin[1]
        modality = item["modality"]
        try:
            member = self.members.read(shard, key, shard_keys().get(modality, (modality,)),
                                       self.max_member_bytes)
        except TooLarge as e:
            raise HTTPException(413, f"item {item['id']} cannot be served: {e}") from None
        except ShardError:
            raise HTTPException(404, f"the shard of item {item['id']} cannot be read") from None
        except DataError as e:  # the sample or its member is gone (the shard was rewritten)
            raise HTTPException(404, f"item {item['id']}: {e}") from None
        if member.path is not None:  # a Parquet cell naming a file
            path = self._inside(member.path, item, "file")
            return ItemFile(path.name, path=path)
        return ItemFile(f"{Path(key).name}.{member.ext}", data=member.data)

    def preview(self, item: dict[str, Any], plugin: Modality | None) -> Preview:
        """``plugin``'s preview of the item's file (:meth:`file`), at most ``THUMBNAIL_PX`` a
        side: 404 if its modality has none or the file cannot be read, 413 if it is too
        large to preview."""
        if plugin is None or not plugin.preview_kind:
            raise HTTPException(404, f"item {item['id']} is {item['modality']}: it has no preview")
        origin = shard_origin(item)  # the file or shard is checked on every request, cached or not
        where = self.path(item) if origin is None else self._inside(origin[0], item, "shard")
        key = (item["id"], item.get("content_hash"), str(where), origin and origin[1])
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        source = self.file(item)
        try:
            found = _preview(plugin, source)
        except TooLarge as e:
            raise HTTPException(413, f"item {item['id']} cannot be previewed: {e}") from None
        except Exception as e:  # noqa: BLE001  (the file changed since indexing; a plug-in's errors)
            raise HTTPException(404, f"the {item['modality']} of item {item['id']} cannot be read "
                                     f"({type(e).__name__})") from None
        self._keep(key, found)
        return found

    def _keep(self, key: tuple, found: Preview) -> None:
        if len(found.data) > self.cache_bytes // 16:
            return
        with self._lock:
            if key not in self._cache:
                self._held += len(found.data)
            self._cache[key] = found
            while self._cache and (len(self._cache) > self.cache_size or self._held > self.cache_bytes):
                self._held -= len(self._cache.popitem(last=False)[1].data)


def _preview(plugin: Modality, source: ItemFile) -> Preview:
    """The plug-in's preview of a file, or of a member's bytes written to a temporary file
    named with its suffix (a plug-in previews a path)."""
    if source.path is not None:
        return plugin.preview(source.path, max_px=THUMBNAIL_PX)
    with tempfile.TemporaryDirectory(prefix="jointspace-preview-") as tmp:
        path = Path(tmp) / f"member{Path(source.name).suffix}"
        path.write_bytes(source.data)
        return plugin.preview(path, max_px=THUMBNAIL_PX)


__all__ = ["CACHE_BYTES", "Files", "ItemFile", "THUMBNAIL_KIND", "THUMBNAIL_PX", "has_file"]
