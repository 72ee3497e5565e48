"""``GET /items/{id}`` and its ``/file``, ``/preview`` and ``/thumbnail``: a file is served
only if its real path (symlinks resolved) lies inside a folder the collection was indexed from;
an item indexed from a shard is served from the shard's member (the shard inside those folders)."""
from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from ..files import THUMBNAIL_KIND
from ..schemas import ERRORS, ItemOut
from ..state import HIDDEN, State, plugin

ITEM_ID = PathParam(ge=1, le=2**63 - 1, description="an item id, as in a hit")
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
CACHED = {"Cache-Control": "private, max-age=3600", **NOSNIFF}
NOT_FOUND = {404: ERRORS[400] | {"description": "no such item, or it has no such file"}}

router = APIRouter(tags=["items"])


@router.get("/items/{item_id}", response_model=ItemOut, responses={404: ERRORS[400] | {
    "description": "no such item"}})
def item(state: State, item_id: int = ITEM_ID) -> dict:
    """An item's metadata (not where its file lives on the server)."""
    found = state.item_or_404(item_id)
    return {k: v for k, v in found.items() if k not in HIDDEN} | {
        "name": Path(found["path"]).name if found.get("path") else None}


@router.get("/items/{item_id}/file", response_class=FileResponse, responses=NOT_FOUND)
def item_file(state: State, item_id: int = ITEM_ID) -> Response:
    """The item's original file, or its member of the shard it was indexed from; 403 if the
    file or the shard lies outside the collection's folders, 413 for a member larger than
    the server's upload bound."""
    found = state.files.file(state.item_or_404(item_id))
    media_type = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    if found.path is not None:
        return FileResponse(found.path, headers=NOSNIFF, media_type=media_type)
    return Response(found.data, media_type=media_type, headers=NOSNIFF)


@router.get("/items/{item_id}/preview", response_class=Response, responses=NOT_FOUND)
def item_preview(state: State, item_id: int = ITEM_ID) -> Response:
    """The item's preview, as its modality's plug-in makes it (``GET /modalities``: its
    kind): a JPEG of at most 256 px of a picture, a clip itself for a player, the start of
    a text …; 404 if its modality has none, 403 if the file lies outside the collection's
    folders."""
    found = state.item_or_404(item_id)
    preview = state.files.preview(found, plugin(found["modality"]))
    return Response(preview.data, media_type=preview.mime, headers=CACHED)


@router.get("/items/{item_id}/thumbnail", response_class=Response, responses=NOT_FOUND)
def item_thumbnail(state: State, item_id: int = ITEM_ID) -> Response:
    """A JPEG of the item's picture, at most 256 px a side: its preview, for the items whose
    preview is a picture (404 for others; ``/preview`` serves every kind)."""
    found = state.item_or_404(item_id)
    its = plugin(found["modality"])
    if its is None or its.preview_kind != THUMBNAIL_KIND:
        raise HTTPException(404, f"item {item_id} is {found['modality']}: it has no thumbnail "
                                 f"(see /items/{item_id}/preview)")
    preview = state.files.preview(found, its)
    return Response(preview.data, media_type=preview.mime, headers=CACHED)


__all__ = ["ITEM_ID", "NOSNIFF", "router"]
