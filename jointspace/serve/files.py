"""The files behind items: served only from inside the collection's roots, and thumbnails."""
from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

from fastapi import HTTPException
from PIL import Image, ImageOps

THUMBNAIL_PX = 256


class Files:
    """Finds an item's file, refusing any whose real path (symlinks resolved) lies
    outside ``roots``, and makes JPEG thumbnails, kept in a small in-memory LRU
    keyed by item id and content hash (a re-indexed file gets a new one)."""

    def __init__(self, roots: Sequence[str | Path] | Callable[[], Sequence[str | Path]],
                 cache_size: int = 2048) -> None:
        # a callable is asked on every request: an ingest may add folders while we serve
        self._roots = roots if callable(roots) else (lambda: roots)
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
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

    def thumbnail(self, item: dict[str, Any]) -> bytes:
        """A JPEG of the item's image, at most ``THUMBNAIL_PX`` a side."""
        if item["modality"] != "image":
            raise HTTPException(404, f"item {item['id']} is {item['modality']}, not an image")
        path = self.path(item)  # checked on every request, cached or not
        key = (item["id"], item.get("content_hash"), str(path))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im).convert("RGB")
                im.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
                out = io.BytesIO()
                im.save(out, "JPEG", quality=85)
        except Exception as e:  # the file changed since it was indexed
            raise HTTPException(404, f"the image of item {item['id']} cannot be read "
                                     f"({type(e).__name__})") from None
        data = out.getvalue()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return data


__all__ = ["Files", "THUMBNAIL_PX"]
