"""The HTTP API and search page over a collection (FastAPI).

Endpoints: ``POST /search`` (text, base64 image or audio, vectors, weighted
terms, filters, k, offset), ``GET /items/{id}`` and its ``/file`` and
``/thumbnail``, ``GET /healthz``, the OpenAPI docs at ``/docs``, and the
search page at ``/``.

Safety, by default: bound to 127.0.0.1; no CORS headers (browsers refuse
cross-origin calls) unless origins are given; request bodies and uploads
limited in size; with an API key, every route but ``/`` (the page itself,
which holds no data) and ``/healthz`` needs it as ``X-API-Key`` or
``Authorization: Bearer``; a file is served only if its real path (symlinks
resolved) lies inside a folder the collection was indexed from. Malformed
input is answered with a 4xx and a message saying what is wrong.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import io
import mimetypes
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence, Union

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image, ImageOps
from pydantic import BaseModel, Field

from ..errors import JointspaceError
from ..index import Collection, Term

PAGE = Path(__file__).with_name("static") / "index.html"
PUBLIC = {"/", "/healthz"}
THUMBNAIL_PX = 256
Scalar = Union[str, int, float, bool]


class TermIn(BaseModel):
    """One weighted query term: text, a base64 file (image or audio) or a vector."""

    modality: str = Field(description="text, image, audio, or vector")
    text: str | None = None
    data: str | None = Field(None, description="base64 of an image or audio file (a data: URL works)")
    vector: list[float] | None = None
    weight: float = 1.0


class SearchIn(BaseModel):
    text: str | None = None
    image: str | None = Field(None, description="base64 of an image file")
    audio: str | None = Field(None, description="base64 of an audio file (WAV, FLAC, OGG)")
    vector: list[float] | None = None
    terms: list[TermIn] = Field(default_factory=list)
    k: int = Field(10, ge=1)
    offset: int = Field(0, ge=0)
    where: dict[str, Union[Scalar, list[Scalar]]] | None = None
    target: str | None = None
    calibrate: bool = True
    nprobe: int | None = Field(None, ge=1, le=65536)


class BodyLimit:
    """Answers 413 to request bodies over ``limit`` bytes, declared or streamed.

    The body is read here, up to the limit, and replayed to the app: an error
    raised inside the app's own body parsing would be turned into a 400."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _too_large(self.limit)(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await _too_large(self.limit)(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # waits for the disconnect, as the server would
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, replay, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body is larger than {limit} bytes"}, status_code=413)


class _Thumbnails:
    """A small in-memory LRU of JPEG thumbnails, keyed by item id and content hash."""

    def __init__(self, size: int = 2048) -> None:
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key: tuple, path: Path) -> bytes:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            out = io.BytesIO()
            im.save(out, "JPEG", quality=85)
        data = out.getvalue()
        with self._lock:
            self._items[key] = data
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return data


def create_app(collection: str | Path | Collection, *, api_key: str | None = None,
               max_upload_bytes: int = 10 << 20, max_request_bytes: int = 16 << 20,
               cors_origins: Sequence[str] = (), max_k: int = 1000,
               device: str | None = None) -> FastAPI:
    """The FastAPI app serving ``collection`` (a folder or an opened :class:`Collection`)."""
    col = collection if isinstance(collection, Collection) else Collection.open(collection, device=device)
    roots = [Path(r).resolve() for r in col.info.get("roots", [])]
    thumbnails = _Thumbnails()
    app = FastAPI(title="jointspace", description=f"Search the collection {col.path.name}",
                  version="1")

    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"])

    @app.middleware("http")
    async def require_key(request: Request, call_next: Any) -> Response:
        if api_key and request.url.path not in PUBLIC:
            given = request.headers.get("x-api-key") or ""
            bearer = request.headers.get("authorization", "")
            if bearer.lower().startswith("bearer "):
                given = given or bearer[7:]
            if not given:
                return JSONResponse({"detail": "an API key is required: send it as X-API-Key"},
                                    status_code=401)
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                return JSONResponse({"detail": "wrong API key"}, status_code=401)
        return await call_next(request)

    @app.exception_handler(JointspaceError)
    async def user_error(request: Request, e: JointspaceError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=400)

    def decode(field: str, value: str) -> bytes:
        if value.startswith("data:") and "," in value:
            value = value.split(",", 1)[1]  # a data: URL from a browser's FileReader
        if len(value) > max_upload_bytes * 4 // 3 + 4:
            raise HTTPException(413, f"{field} is larger than {max_upload_bytes} bytes")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(400, f"{field} is not valid base64") from None
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"{field} is larger than {max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, f"{field} is empty")
        return data

    def image_of(field: str, value: str) -> Image.Image:
        try:
            with Image.open(io.BytesIO(decode(field, value))) as im:
                im.load()
                return ImageOps.exif_transpose(im).convert("RGB")
        except HTTPException:
            raise
        except Exception as e:  # PIL raises many types for bad data
            raise HTTPException(400, f"{field} is not a decodable image ({type(e).__name__})") from None

    def audio_of(field: str, value: str, folder: Path) -> Path:
        from ..data.audio import check_audio
        path = folder / f"{field.replace(' ', '-')}.audio"
        path.write_bytes(decode(field, value))
        problem = check_audio(path).problem
        if problem:
            raise HTTPException(400, f"{field} is not usable audio: {problem.replace(str(path), 'upload')}")
        return path

    def need(modality: str, where: str) -> None:  # before decoding an upload for nothing
        if modality not in col.model_modalities():
            raise JointspaceError(f"{where}: the model has no {modality!r} tower; it encodes "
                                  f"{', '.join(col.model_modalities())}")

    def terms_of(body: SearchIn, folder: Path) -> list[Term]:
        for modality in ("image", "audio"):
            if getattr(body, modality) is not None:
                need(modality, modality)
        for i, t in enumerate(body.terms, 1):
            if t.data is not None:
                need(t.modality, f"term {i}")
        terms = []
        if body.text is not None:
            terms.append(Term("text", body.text))
        if body.image is not None:
            terms.append(Term("image", image_of("image", body.image)))
        if body.audio is not None:
            terms.append(Term("audio", audio_of("audio", body.audio, folder)))
        if body.vector is not None:
            terms.append(Term("vector", body.vector))
        for i, t in enumerate(body.terms, 1):
            where = f"term {i}"
            given = [x is not None for x in (t.text, t.data, t.vector)]
            if sum(given) != 1:
                raise HTTPException(400, f"{where}: give exactly one of text, data, vector")
            if t.text is not None:
                terms.append(Term(t.modality, t.text, t.weight))
            elif t.vector is not None:
                terms.append(Term("vector", t.vector, t.weight))
            elif t.modality == "image":
                terms.append(Term("image", image_of(where, t.data), t.weight))
            elif t.modality == "audio":
                terms.append(Term("audio", audio_of(where, t.data, folder), t.weight))
            else:
                raise HTTPException(400, f"{where}: data is for image or audio terms, not {t.modality!r}")
        return terms

    def hit_json(hit: Any) -> dict:
        item = hit.item
        out = {"rank": hit.rank, "score": round(hit.score, 6), "id": item["id"],
               "modality": item["modality"], "text": item.get("text"), "label": item.get("label"),
               "meta": item.get("meta", {}), "name": Path(item["path"]).name if item.get("path") else None}
        if item.get("path"):
            out["url"] = f"/items/{item['id']}/file"
            if item["modality"] == "image":
                out["thumbnail"] = f"/items/{item['id']}/thumbnail"
        return out

    @app.post("/search")
    def search(body: SearchIn) -> JSONResponse:
        """Search by any mix of text, image, audio, vectors and weighted terms."""
        if body.k > max_k:
            raise HTTPException(422, f"k must be at most {max_k}, got {body.k}")
        started = time.perf_counter()
        uploads_audio = body.audio is not None or any(t.modality == "audio" and t.data is not None
                                                      for t in body.terms)
        # audio is decoded from a file: only such queries pay for a temporary folder
        with (tempfile.TemporaryDirectory(prefix="jointspace-query-") if uploads_audio
              else contextlib.nullcontext("")) as tmp:
            terms = terms_of(body, Path(tmp))
            hits = col.search(terms=terms, k=body.k, offset=body.offset, where=body.where,
                              target=body.target, calibrate=body.calibrate, nprobe=body.nprobe)
        # a JSONResponse of plain data skips FastAPI's generic encoder (a measurable cost per hit)
        return JSONResponse({"hits": [hit_json(h) for h in hits], "k": body.k, "offset": body.offset,
                             "took_ms": round((time.perf_counter() - started) * 1000, 2)})

    def item_or_404(item_id: int) -> dict:
        try:
            return col.get(item_id)
        except KeyError:
            raise HTTPException(404, f"no item {item_id}") from None

    def file_of(item: dict) -> Path:
        if not item.get("path"):
            raise HTTPException(404, f"item {item['id']} has no file")
        try:
            path = Path(item["path"]).resolve(strict=True)
        except (OSError, RuntimeError):
            raise HTTPException(404, f"the file of item {item['id']} no longer exists") from None
        if not any(path.is_relative_to(root) for root in roots):
            raise HTTPException(403, f"the file of item {item['id']} is outside the collection's folders")
        return path

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict:
        """An item's metadata."""
        found = item_or_404(item_id)
        return {k: v for k, v in found.items() if k not in ("path", "source")} | {
            "name": Path(found["path"]).name if found.get("path") else None}

    @app.get("/items/{item_id}/file")
    def item_file(item_id: int) -> FileResponse:
        """The item's original file (image or audio)."""
        path = file_of(item_or_404(item_id))
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or
                            "application/octet-stream")

    @app.get("/items/{item_id}/thumbnail")
    def item_thumbnail(item_id: int) -> Response:
        """A JPEG of the item's image, at most 256 px a side."""
        found = item_or_404(item_id)
        if found["modality"] != "image":
            raise HTTPException(404, f"item {item_id} is {found['modality']}, not an image")
        path = file_of(found)
        try:
            data = thumbnails.get((item_id, found.get("content_hash")), path)
        except Exception as e:  # the file changed since it was indexed
            raise HTTPException(404, f"the image of item {item_id} cannot be read ({type(e).__name__})") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "items": len(col)}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    app.state.collection = col
    app.add_middleware(BodyLimit, limit=max_request_bytes)  # outermost: before the key check
    return app


def serve(collection: str | Path, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, **kwargs: Any) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    from ..progress import logger
    app = create_app(collection, api_key=api_key, **kwargs)
    where = f"http://{host}:{port}"
    logger.info("serving %s at %s (API docs: %s/docs)%s", collection, where, where,
                "; an API key is required" if api_key else "")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        logger.warning("listening on %s without an API key: anyone who can reach it can search", host)
    uvicorn.run(app, host=host, port=port, log_level="warning")


__all__ = ["create_app", "serve"]
