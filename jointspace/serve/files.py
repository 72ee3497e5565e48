"""The files behind items: served only from inside the collection's roots, and previews."""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

from fastapi import HTTPException

from ..modalities import Modality, Preview, TooLarge

THUMBNAIL_PX = 256
#: the preview kind also served as ``/items/{id}/thumbnail`` (a JPEG; the route of the first
#: version, kept for compatibility); other kinds have no thumbnail
USER_FACING_DEFAULTS = ("image",)
THUMBNAIL_KIND = USER_FACING_DEFAULTS[0]
#: previews kept in memory, in all (bytes); a preview larger than 1/16 of it is not kept
CACHE_BYTES = 64 << 20


class Files:
    """Finds an item's file, refusing any whose real path (symlinks resolved) lies
    outside ``roots``, and makes previews (its modality plug-in's
    :meth:`~jointspace.modalities.Modality.preview`), kept in a small in-memory LRU
    keyed by item id and content hash (a re-indexed file gets a new one)."""

    def __init__(self, roots: Sequence[str | Path] | Callable[[], Sequence[str | Path]],
                 cache_size: int = 2048, cache_bytes: int = CACHE_BYTES) -> None:
        # a callable is asked on every request: an ingest may add folders while we serve
        self._roots = roots if callable(roots) else (lambda: roots)
        self.cache_size, self.cache_bytes = cache_size, cache_bytes
        self._cache: OrderedDict[tuple, Preview] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def path(self, item: dict[str, Any]) -> Path:
        """The file of ``item``: 404 if it has none or it is gone, 403 if outside the roots."""
        if not item.get("path"):
            raise HTTPException(404, f"item {item['id']} has no file")
        try:
            path = Path(item["path"]).resolve(strict=True)
        except (OSError, RuntimeError):  # gone, or a symlink loop
            raise HTTPException(404, f"the file of item {item['id']} no longer exists") from None
        if not path.is_file():
            raise HTTPException(404, f"the file of item {item['id']} is not a file")
        if not any(path.is_relative_to(Path(root).resolve()) for root in self._roots()):
            raise HTTPException(403, f"the file of item {item['id']} is outside the collection's folders")
        return path

    def preview(self, item: dict[str, Any], plugin: Modality | None) -> Preview:
        """``plugin``'s preview of the item's file, at most ``THUMBNAIL_PX`` a side: 404 if its
        modality has none or the file cannot be read, 413 if it is too large to preview."""
        if plugin is None or not plugin.preview_kind:
            raise HTTPException(404, f"item {item['id']} is {item['modality']}: it has no preview")
        path = self.path(item)  # checked on every request, cached or not
        key = (item["id"], item.get("content_hash"), str(path))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            found = plugin.preview(path, max_px=THUMBNAIL_PX)
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


__all__ = ["CACHE_BYTES", "Files", "THUMBNAIL_KIND", "THUMBNAIL_PX"]
