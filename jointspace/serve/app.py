"""The HTTP API and search page over a collection (FastAPI).

Endpoints: ``POST /search`` (JSON: text, base64 image or audio, vectors, weighted
terms, filters, k, offset), ``POST /search/upload`` (the same from a multipart
form with a file, for ``curl -F``), ``GET /items/{id}`` and its ``/file`` and
``/thumbnail``, ``GET /healthz`` and ``GET /readyz``, the OpenAPI docs at ``/docs``
and ``/redoc`` (Swagger UI's files served from the ``fastapi-offline`` package: no
network needed; with an API key the schema declares it, so Swagger UI's "Authorize"
sends it), and the search page at ``/``.

Readiness: the app loads the collection's model when it is made (a collection it
cannot query, such as one whose model folder moved, is refused then, not at every
search), then warms up (:meth:`Collection.warm_up`: one query per modality, through
the decoding a real query's file takes, each store opened). By default it warms on a
thread while it already answers: until that is done ``/healthz`` says ``"ready":
false`` and ``/readyz`` answers 503. With ``warm_before_serving`` it warms in the
ASGI lifespan's startup instead, so the server (each uvicorn worker) accepts no
request before it is warm: ``jointspace serve --workers N`` does this, as each worker
process has its own model and its own readiness, and a probe answered by any of them
must speak for the one that answers the next query.

Safety, by default: bound to 127.0.0.1; no CORS headers (browsers refuse
cross-origin calls) unless origins are given; request bodies, uploads, decoded
image sizes, terms per query, result depth (``offset + k``) and filter values per
request (:data:`~.schemas.MAX_FILTER_VALUES`) limited; with an API key, every route
but the public ones (``/``, the page itself, ``/healthz``, ``/readyz``, and the docs:
``/docs``, ``/redoc``, ``/openapi.json``, ``/docs/*``; none holds data) needs it as
``X-API-Key`` or ``Authorization: Bearer``; a file is served only if its real path
(symlinks resolved) lies inside a folder the collection was indexed from. Malformed
input is answered with a 4xx and a message saying what is wrong (a 422 never echoes
the input back); the server carries on.

>>> app = create_app("runs/col", api_key="secret")    # doctest: +SKIP

:func:`jointspace.serve.serve` runs it (:mod:`jointspace.serve.run`).
"""
from __future__ import annotations

import contextlib
import json
import mimetypes
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi_offline import FastAPIOffline
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import ValidationError

from ..errors import JointspaceError
from ..index import Collection, Term, UnknownFilterError
from ..index.filters import refuse_hidden
from ..progress import logger
from .files import Files
from .guards import BodyLimit, KeyCheck
from .schemas import (ERRORS, MAX_FILTER_VALUES, MAX_QUERY_CHARS, MAX_TERMS, Health, ItemOut, Ready,
                      SearchIn, SearchOut, TooManyFilterValues)
from .uploads import Uploads, sniff

PAGE = Path(__file__).with_name("static") / "index.html"
DOCS_ASSETS = "/docs/assets"  # Swagger UI's and ReDoc's JS and CSS, from the fastapi-offline package
#: routes open without the API key: the page, the probes and the docs (none holds data)
PUBLIC = ("/", "/healthz", "/readyz", "/docs", "/redoc", "/openapi.json")
PUBLIC_PREFIXES = ("/docs/",)  # the docs' assets and Swagger UI's OAuth redirect page
#: the API key in the OpenAPI schema: Swagger UI's "Authorize" asks for it and sends it
SECURITY_SCHEMES = {"APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                    "BearerAuth": {"type": "http", "scheme": "bearer"}}
UPLOAD_MODALITIES = ("image", "audio")
ITEM_ID = PathParam(ge=1, le=2**63 - 1, description="an item id, as in a hit")
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
HIDDEN = ("key", "path", "source")  # item fields never shown to clients (they name server paths)
PAGE_HEADERS = {  # the page talks to this server only; nothing may frame it
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer", **NOSNIFF}


def create_app(collection: str | Path | Collection, *, api_key: str | None = None,
               max_upload_bytes: int = 10 << 20, max_request_bytes: int = 16 << 20,
               cors_origins: Sequence[str] = (), max_k: int = 1000, max_window: int = 10_000,
               max_image_pixels: int = 50_000_000, max_query_chars: int = MAX_QUERY_CHARS,
               device: str | None = None, model: str | Path | None = None,
               warm_before_serving: bool = False) -> FastAPI:
    """The FastAPI app serving ``collection`` (a folder or an opened :class:`Collection`).

    ``model``: the collection's model folder, if it moved (fingerprint checked; see
    :meth:`Collection.record_model_dir`). The model is loaded here: a collection that
    cannot be queried raises :class:`~jointspace.errors.JointspaceError` now.
    ``max_window`` bounds ``offset + k``: the ranking is computed that deep, so an
    unbounded offset would let one request exhaust memory. ``max_query_chars`` bounds
    each query text (413 beyond): texts are encoded on the one thread every query
    shares. Filters may name only the fields a client sees (not ``key``, ``path``,
    ``source``: they would tell which server paths are indexed) and hold at most
    :data:`~.schemas.MAX_FILTER_VALUES` values in all (413 beyond). A JSON body holding
    more commas than a valid request (``10 × MAX_FILTER_VALUES + 33 × (dim +
    max_query_chars) + 1000``: its filter values with up to 9 commas each, vectors and
    texts) is a 413 before it is parsed (parsing 1.3 M labels took 150 MB for a moment).
    ``warm_before_serving``: warm up in the lifespan's startup (the server accepts
    nothing before), not on a thread while answering (module docstring)."""
    col = collection if isinstance(collection, Collection) else \
        Collection.open(collection, device=device, model=model)
    if model is not None and isinstance(collection, Collection):
        col.use_model(model)
    col.model  # noqa: B018  (loads and checks it: a server that cannot answer does not start)

    def roots() -> list[str]:
        col.reload_info()  # cheap: one stat; rereads collection.json only if a writer changed it
        return col.info.get("roots", [])
    files = Files(roots)
    uploads = Uploads(max_upload_bytes, max_image_pixels)
    ready, warm_error = threading.Event(), []

    def warm_up() -> None:
        try:
            seconds = col.warm_up()
            logger.info("ready: warmed up in %.1f s", seconds)
        except Exception as e:  # noqa: BLE001  (reported by /readyz; queries will say more)
            warm_error.append(f"warming up failed: {type(e).__name__}: {e}")
            logger.warning("%s", warm_error[0])
        finally:
            ready.set()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        if warm_before_serving:  # uvicorn opens the socket (a worker accepts) after this
            import anyio

            await anyio.to_thread.run_sync(warm_up)
        yield
    # the docs pages load Swagger UI / ReDoc from this server, not from a CDN
    app = FastAPIOffline(title="jointspace", version="1", static_url=DOCS_ASSETS, lifespan=lifespan,
                         swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
                         description=f"Search the collection {col.path.name} by text, image, "
                                     "audio, vectors and weighted mixes of them.")
    if not warm_before_serving:
        threading.Thread(target=warm_up, name="jointspace-warm-up", daemon=True).start()

    @app.exception_handler(JointspaceError)
    async def user_error(request: Request, e: JointspaceError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=400)

    @app.exception_handler(TooManyFilterValues)
    async def too_many_values(request: Request, e: TooManyFilterValues) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=413)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer echoes each bad value: a 10 MB list back to its sender, encoded
        # item by item (seconds of the server's time)
        return JSONResponse({"detail": [{k: v for k, v in error.items() if k in ("type", "loc", "msg")}
                                        for error in e.errors()]}, status_code=422)

    @app.exception_handler(UnknownFilterError)
    async def unknown_filter(request: Request, e: UnknownFilterError) -> JSONResponse:
        # the fields a client may filter on, not those the server keeps to itself
        return JSONResponse({"detail": e.describe(hidden=HIDDEN)}, status_code=400)

    def need(modality: str, where: str) -> None:  # before decoding an upload for nothing
        if modality not in col.model_modalities():
            raise JointspaceError(f"{where}: the model has no {modality!r} tower; it encodes "
                                  f"{', '.join(col.model_modalities())}")

    def file_term(where: str, modality: str, data: list[bytes], weight: float, folder: Path) -> Term:
        """The term of a file's bytes, ``data`` a list of one that is emptied: the bytes are
        not held while the file is decoded (a 10 s clip at 384 kHz is 7.7 MB)."""
        if modality == "image":
            return Term("image", uploads.image(where, data.pop()), weight)
        if modality == "audio":  # checked here (naming the field): the search does not again
            path = uploads.save(where, data.pop(), folder)
            return Term("audio", uploads.audio(where, path), weight, checked=True)
        raise HTTPException(400, f"{where}: a file is an image or audio, not {modality!r}")

    def check_text(where: str, text: str | None) -> None:
        if text is not None and len(text) > max_query_chars:
            raise HTTPException(413, f"{where} is {len(text)} characters long; at most "
                                     f"{max_query_chars} are accepted")

    def terms_of(body: SearchIn, folder: Path) -> list[Term]:
        check_text("text", body.text)
        for i, t in enumerate(body.terms, 1):
            check_text(f"term {i}'s text", t.text)
        for modality in ("image", "audio"):
            if getattr(body, modality) is not None:
                need(modality, modality)
        for i, t in enumerate(body.terms, 1):
            if sum(x is not None for x in (t.text, t.data, t.vector)) != 1:
                raise HTTPException(400, f"term {i}: give exactly one of text, data, vector")
            if t.data is not None:
                need(t.modality, f"term {i}")
        terms = []
        if body.text is not None:
            terms.append(Term("text", body.text))
        for modality in ("image", "audio"):
            if getattr(body, modality) is not None:
                data = [uploads.decode(modality, getattr(body, modality))]
                terms.append(file_term(modality, modality, data, 1.0, folder))
        if body.vector is not None:
            terms.append(Term("vector", body.vector))
        for i, t in enumerate(body.terms, 1):
            # a request string never becomes a path on this machine: files come as data
            if t.modality != "vector":
                need(t.modality, f"term {i}")  # an unknown modality is named as such
            takes = {"text": "text", "vector": "vector"}.get(t.modality, "data")
            if getattr(t, takes) is None:
                raise HTTPException(400, f"term {i}: a {t.modality!r} term takes {takes!r}")
            if t.text is not None:
                terms.append(Term("text", t.text, t.weight))
            elif t.vector is not None:
                terms.append(Term("vector", t.vector, t.weight))
            else:
                data = [uploads.decode(f"term {i}", t.data)]
                terms.append(file_term(f"term {i}", t.modality, data, t.weight, folder))
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

    def run(body: SearchIn, build: Callable[[Path], list[Term]], audio: bool) -> JSONResponse:
        if body.k > max_k:
            raise HTTPException(422, f"k must be at most {max_k}, got {body.k}")
        if body.offset + body.k > max_window:
            raise HTTPException(422, f"offset + k must be at most {max_window} (got "
                                     f"{body.offset + body.k}); narrow the query with where instead")
        refuse_hidden(body.where, HIDDEN, col.catalog.meta_keys)
        started = time.perf_counter()
        # audio is decoded from a file: only such queries pay for a temporary folder
        with (tempfile.TemporaryDirectory(prefix="jointspace-query-") if audio
              else contextlib.nullcontext("")) as tmp:
            terms = build(Path(tmp))
            hits = col.search(terms=terms, k=body.k, offset=body.offset, where=body.where,
                              target=body.target, calibrate=body.calibrate, nprobe=body.nprobe)
        # a JSONResponse of plain data skips FastAPI's generic encoder (a measurable cost per hit)
        return JSONResponse({"hits": [hit_json(h) for h in hits], "k": body.k, "offset": body.offset,
                             "took_ms": round((time.perf_counter() - started) * 1000, 2)})

    @app.post("/search", response_model=SearchOut, responses=ERRORS)
    def search(body: SearchIn) -> JSONResponse:
        """Search by any mix of text, image, audio, vectors and weighted terms."""
        audio = body.audio is not None or any(t.modality == "audio" and t.data is not None
                                              for t in body.terms)
        return run(body, lambda tmp: terms_of(body, tmp), audio)

    @app.post("/search/upload", response_model=SearchOut, responses=ERRORS)
    def search_upload(
            file: UploadFile | None = File(None, description="an image or audio file"),
            modality: str | None = Form(None, description="image or audio (default: from the "
                                                          "file's first bytes, else its content "
                                                          "type)"),
            weight: float = Form(1.0, description="the file's weight"),
            text: str | None = Form(None), text_weight: float = Form(1.0),
            k: int = Form(10), offset: int = Form(0),
            where: str | None = Form(None, description='filters as JSON: {"label": "red circle"}'),
            target: str | None = Form(None), calibrate: bool = Form(True)) -> JSONResponse:
        """Search with an uploaded file (``curl -F file=@q.png -F text=red -F text_weight=0.5``)."""
        # the cheap checks first: nothing is read or decoded for a request refused anyway
        if modality is not None and modality not in UPLOAD_MODALITIES:
            raise HTTPException(422, f"modality must be {' or '.join(UPLOAD_MODALITIES)} (the "
                                     f"file's), got {modality!r}; a text goes in the form field text")
        check_text("text", text)
        try:
            filters = json.loads(where) if where else None
        except RecursionError:
            raise HTTPException(400, "where is not JSON a filter can be: it is nested too deeply") from None
        except ValueError as e:  # json.JSONDecodeError, and numbers of too many digits
            raise HTTPException(400, f"where is not JSON: {e}") from None
        try:
            body = SearchIn(terms=[{"modality": "text", "text": text, "weight": text_weight}]
                            if text is not None else [], k=k, offset=offset, where=filters,
                            target=target, calibrate=calibrate)
        except ValidationError as e:
            raise RequestValidationError(e.errors(include_url=False, include_context=False)) from None
        kind, data = None, []
        if file is not None:
            data = [file.file.read(max_upload_bytes + 1)]
            uploads.check_size(file.filename or "file", len(data[0]))
            if not data[0]:
                raise HTTPException(400, f"{file.filename} is empty")
            # what the form names, else what the bytes are, else what the client labelled them
            kind = modality or sniff(data[0]) or (file.content_type or "").split("/")[0]
            if kind not in UPLOAD_MODALITIES:
                raise HTTPException(415, f"{file.filename}: not a known image or audio format "
                                         "(PNG, JPEG, GIF, WebP, BMP, TIFF; WAV, FLAC, OGG, MP3, "
                                         f"AIFF) and its content type is {file.content_type!r}; "
                                         "say modality=image or modality=audio")
            need(kind, file.filename or "file")

        def build(tmp: Path) -> list[Term]:
            found = [file_term(file.filename or "file", kind, data, weight, tmp)] if kind else []
            return found + terms_of(body, tmp)
        return run(body, build, kind == "audio")

    def item_or_404(item_id: int) -> dict:
        try:
            return col.get(item_id)
        except KeyError:
            raise HTTPException(404, f"no item {item_id}") from None

    @app.get("/items/{item_id}", response_model=ItemOut, responses={404: ERRORS[400] | {
        "description": "no such item"}})
    def item(item_id: int = ITEM_ID) -> dict:
        """An item's metadata (not where its file lives on the server)."""
        found = item_or_404(item_id)
        return {k: v for k, v in found.items() if k not in HIDDEN} | {
            "name": Path(found["path"]).name if found.get("path") else None}

    @app.get("/items/{item_id}/file", response_class=FileResponse)
    def item_file(item_id: int = ITEM_ID) -> FileResponse:
        """The item's original file (image or audio); 403 if it lies outside the
        collection's folders."""
        path = files.path(item_or_404(item_id))
        return FileResponse(path, headers=NOSNIFF,
                            media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    @app.get("/items/{item_id}/thumbnail", response_class=Response)
    def item_thumbnail(item_id: int = ITEM_ID) -> Response:
        """A JPEG of the item's image, at most 256 px a side."""
        data = files.thumbnail(item_or_404(item_id))
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600", **NOSNIFF})

    @app.get("/healthz", response_model=Health)
    def healthz() -> dict:
        """Liveness: the server answers (``ready``: whether it has warmed up)."""
        return {"status": "ok", "items": len(col), "ready": ready.is_set() and not warm_error}

    @app.get("/readyz", response_model=Ready, responses={503: {"model": Ready, "description":
                                                               "still warming up, or failed to"}})
    def readyz() -> JSONResponse:
        """Readiness: 200 once the model has warmed up (a query then costs what any does),
        503 until then."""
        if ready.is_set() and not warm_error:
            return JSONResponse({"ready": True})
        detail = warm_error[0] if warm_error else "warming up: loading the model's first batches"
        return JSONResponse({"ready": False, "detail": detail}, status_code=503)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers=PAGE_HEADERS)

    app.state.collection, app.state.ready = col, ready
    if api_key:
        base = app.openapi

        def openapi() -> dict[str, Any]:
            if app.openapi_schema is None:
                schema = base()  # FastAPI's, kept as app.openapi_schema: completed here, once
                schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
                for path, operations in schema["paths"].items():
                    if path not in PUBLIC:  # either scheme will do
                        for operation in operations.values():
                            operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
                app.openapi_schema = schema
            return app.openapi_schema
        app.openapi = openapi  # type: ignore[method-assign]
    # outermost last: CORS answers preflights (which carry no key) and labels every
    # answer, 413 and 401 included; then the body limit; then the key
    if api_key:
        app.add_middleware(KeyCheck, key=api_key, public=PUBLIC, public_prefixes=PUBLIC_PREFIXES)
    # a JSON body's commas bound the values it holds: more than a valid request can hold
    # (commas in its texts and filter values allowed for) is refused before it is parsed
    max_commas = 10 * MAX_FILTER_VALUES + (MAX_TERMS + 1) * (col.dim + max_query_chars) + 1000
    app.add_middleware(BodyLimit, limit=max_request_bytes, max_commas=max_commas,
                       why=f": at most {MAX_FILTER_VALUES} filter values, {MAX_TERMS + 1} vectors of "
                           f"{col.dim} and texts of {max_query_chars} characters; refused unparsed")
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    return app


__all__ = ["create_app"]
