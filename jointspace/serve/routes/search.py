"""``POST /search`` (JSON) and ``POST /search/upload`` (a multipart form with a file)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ...index import Term
from ...index.filters import refuse_hidden
from ..files import THUMBNAIL_KIND, has_file
from ..schemas import ERRORS, SearchIn, SearchOut
from ..state import HIDDEN, ServerState, State, plugin
from ..terms import check_text, check_upload_modality, recognise, terms_of

#: the upload form's field ``text``, which holds a term of the modality of that name (the
#: form's fields are fixed since the first version; a JSON body takes a field named after
#: any registered modality)
USER_FACING_DEFAULTS = ("text",)
FORM_TEXT = USER_FACING_DEFAULTS[0]

router = APIRouter(tags=["search"])


def hit_json(hit: Any) -> dict:
    """A hit as clients see it: no server paths; the file's URL (a file's, or a shard
    member's) and, where the modality's plug-in has one, its preview's (a thumbnail too
    where the preview is a picture) and how a page shows the whole file (``player_kind``:
    a clip's poster is its preview, the file plays in a player)."""
    item = hit.item
    found = plugin(item["modality"])
    kind = found.preview_kind if found is not None else ""
    out = {"rank": hit.rank, "score": round(hit.score, 6), "id": item["id"],
           "modality": item["modality"], "text": item.get("text"), "label": item.get("label"),
           "meta": item.get("meta", {}), "name": Path(item["path"]).name if item.get("path") else None,
           "preview_kind": kind or None}
    if has_file(item):
        out["url"] = f"/items/{item['id']}/file"
        if found is not None and found.player_kind:
            out["player_kind"] = found.player_kind
        if kind:
            out["preview"] = f"/items/{item['id']}/preview"
        if kind == THUMBNAIL_KIND:
            out["thumbnail"] = f"/items/{item['id']}/thumbnail"
    return out


def run(state: ServerState, body: SearchIn, build: Callable[[], list[Term]]) -> JSONResponse:
    """The page of hits of ``body``, its terms made by ``build`` once the cheap checks pass."""
    limits = state.limits
    if body.k > limits.max_k:
        raise HTTPException(422, f"k must be at most {limits.max_k}, got {body.k}")
    if body.offset + body.k > limits.max_window:
        raise HTTPException(422, f"offset + k must be at most {limits.max_window} (got "
                                 f"{body.offset + body.k}); narrow the query with where instead")
    refuse_hidden(body.where, HIDDEN, state.col.catalog.meta_keys)
    started = time.perf_counter()
    terms = build()
    hits = state.col.search(terms=terms, k=body.k, offset=body.offset, where=body.where,
                            target=body.target, calibrate=body.calibrate, nprobe=body.nprobe)
    total = state.col.count_matches(body.where, body.target)  # SQL, kept until the catalog changes
    # a JSONResponse of plain data skips FastAPI's generic encoder (a measurable cost per hit)
    return JSONResponse({"hits": [hit_json(h) for h in hits], "k": body.k, "offset": body.offset,
                         "took_ms": round((time.perf_counter() - started) * 1000, 2), "total": total})


@router.post("/search", response_model=SearchOut, responses=ERRORS)
def search(body: SearchIn, state: State) -> JSONResponse:
    """Search by any mix of values of the model's modalities (``GET /modalities``), vectors
    and weighted terms."""
    return run(state, body, lambda: terms_of(state, body))


def form_body(text: str | None, text_weight: float, k: int, offset: int, where: str | None,
              target: str | None, calibrate: bool) -> SearchIn:
    """The query of an upload form's fields but its file (``where`` is JSON)."""
    try:
        filters = json.loads(where) if where else None
    except RecursionError:
        raise HTTPException(400, "where is not JSON a filter can be: it is nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError, and numbers of too many digits
        raise HTTPException(400, f"where is not JSON: {e}") from None
    terms = [{"text": text, "weight": text_weight}] \
        if text is not None else []
    try:
        return SearchIn(terms=terms, k=k, offset=offset, where=filters, target=target,
                        calibrate=calibrate)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False, include_context=False)) from None


def read_upload(state: ServerState, file: UploadFile | None,
                named: str | None) -> tuple[str, str, list[bytes]] | None:
    """``(field, modality, [bytes])`` of an uploaded file (its size checked, its modality
    recognised and one the model takes), or None without one."""
    if file is None:
        return None
    field = file.filename or "file"
    data = file.file.read(state.limits.max_upload_bytes + 1)
    state.uploads.check_size(field, len(data))
    if not data:
        raise HTTPException(400, f"{file.filename} is empty")
    # what the form names, else what the bytes are, else what the client labelled them
    return field, recognise(state, field, data, named, file.content_type or ""), [data]


@router.post("/search/upload", response_model=SearchOut, responses=ERRORS)
def search_upload(
        state: State,
        file: UploadFile | None = File(None, description="a file of an uploadable modality "
                                                         "(GET /modalities)"),
        modality: str | None = Form(None, description="the file's modality (default: from its "
                                                      "first bytes, else its content type)"),
        weight: float = Form(1.0, description="the file's weight"),
        text: str | None = Form(None), text_weight: float = Form(1.0),
        k: int = Form(10), offset: int = Form(0),
        where: str | None = Form(None, description='filters as JSON: {"label": "red circle"}'),
        target: str | None = Form(None, description='the indexed modalities searched: one, several '
                                                   '("image,audio") or every one ("*"); default: the first'),
        calibrate: bool = Form(True)) -> JSONResponse:
    """Search with an uploaded file (``curl -F file=@q.png -F text=red -F text_weight=0.5``)."""
    # the cheap checks first: nothing is read or decoded for a request refused anyway
    check_upload_modality(state, modality)
    check_text(FORM_TEXT, text, state.limits.max_query_chars)
    body = form_body(text, text_weight, k, offset, where, target, calibrate)
    upload = read_upload(state, file, modality)

    def build() -> list[Term]:
        if upload is None:
            return terms_of(state, body)
        field, kind, data = upload
        return [state.uploads.file_term(field, kind, data, weight)] + terms_of(state, body)
    return run(state, body, build)


__all__ = ["hit_json", "router", "run"]
