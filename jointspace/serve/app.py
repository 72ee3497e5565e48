"""The HTTP API and search page over a collection (FastAPI).

Endpoints: ``POST /search`` (JSON: text, base64 image or audio, vectors, weighted
terms, filters, k, offset), ``POST /search/upload`` (the same from a multipart
form with a file, for ``curl -F``), ``GET /items/{id}`` and its ``/file``, ``/preview`` and
``/thumbnail``, ``GET /modalities`` and ``GET /fields`` (what a page builds its controls
from), ``GET /healthz`` and ``GET /readyz``, the OpenAPI docs at ``/docs``
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
image sizes (their plug-in's bound), terms per query, result depth (``offset + k``) and filter values per
request (:data:`~.schemas.MAX_FILTER_VALUES`) limited; with an API key, every route
but the public ones (``/``, the page itself, ``/healthz``, ``/readyz``, and the docs:
``/docs``, ``/redoc``, ``/openapi.json``, ``/docs/*``; none holds data) needs it as
``X-API-Key`` or ``Authorization: Bearer`` (a dependency of the routers serving data:
:mod:`~jointspace.serve.security`); a file is served only if its real path
(symlinks resolved) lies inside a folder the collection was indexed from. Malformed
input is answered with a 4xx and a message saying what is wrong (a 422 never echoes
the input back); the server carries on.

>>> app = create_app("runs/col", api_key="secret")    # doctest: +SKIP

:func:`jointspace.serve.serve` runs it (:mod:`jointspace.serve.run`).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Sequence

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from ..errors import JointspaceError
from ..index import Collection, UnknownFilterError
from .guards import BodyLimit, KeyCheck
from .routes import items, meta, page, search
from .schemas import MAX_FILTER_VALUES, MAX_QUERY_CHARS, MAX_TERMS, TooManyFilterValues
from .security import api_key_dependency
from .state import HIDDEN, Limits, ServerState
from .uploads import FileProblem

#: open without the key (none holds data): the page, the probes and the docs
PUBLIC = ("/", "/healthz", "/readyz", "/docs", "/redoc", "/openapi.json")
PUBLIC_PREFIXES = ("/docs/",)  # the docs' assets and Swagger UI's OAuth redirect page
DOCS_ASSETS = "/docs/assets"  # Swagger UI's and ReDoc's JS and CSS, from the fastapi-offline package


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
    shares. ``max_image_pixels`` is the ``max_pixels`` every decoded file is given (its
    plug-in's bound for a picture's size; 413 beyond). Filters may name only the fields a
    client sees (not ``key``, ``path``, ``source``: they would tell which server paths are
    indexed) and hold at most :data:`~.schemas.MAX_FILTER_VALUES` values in all (413
    beyond). A JSON body holding more commas than a valid request (``10 ×
    MAX_FILTER_VALUES + 33 × (dim + max_query_chars) + 1000``: its filter values with up
    to 9 commas each, vectors and texts) is a 413 before it is parsed (parsing 1.3 M labels
    took 150 MB for a moment). ``warm_before_serving``: warm up in the lifespan's startup
    (the server accepts nothing before), not on a thread while answering (module docstring)."""
    col = open_collection(collection, device=device, model=model)
    state = ServerState(col, Limits(max_upload_bytes, max_request_bytes, max_k, max_window,
                                    max_image_pixels, max_query_chars))
    # the docs pages load Swagger UI / ReDoc from this server, not from a CDN
    app = FastAPIOffline(title="jointspace", version="1", static_url=DOCS_ASSETS,
                         lifespan=lifespan(state, warm_before_serving),
                         swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
                         description=f"Search the collection {col.path.name} by "
                                     f"{', '.join(col.model_modalities())}, vectors and weighted "
                                     "mixes of them.")
    if not warm_before_serving:
        state.start_warming()
    add_error_handlers(app)
    include_routers(app, api_key)
    app.state.server, app.state.collection, app.state.ready = state, col, state.ready
    add_guards(app, state, cors_origins, api_key)
    return app


def open_collection(collection: str | Path | Collection, *, device: str | None,
                    model: str | Path | None) -> Collection:
    """The collection, its model loaded and checked: a server that cannot answer does not start."""
    col = collection if isinstance(collection, Collection) else \
        Collection.open(collection, device=device, model=model)
    if model is not None and isinstance(collection, Collection):
        col.use_model(model)
    col.model  # noqa: B018  (loads and checks it)
    return col


def lifespan(state: ServerState, warm_first: bool) -> Callable[[FastAPI], Any]:
    """The ASGI lifespan: with ``warm_first`` it warms up before the server accepts."""
    @contextlib.asynccontextmanager
    async def run(_: FastAPI) -> Any:
        if warm_first:  # uvicorn opens the socket (a worker accepts) after this
            import anyio

            await anyio.to_thread.run_sync(state.warm_up)
        yield
    return run


def include_routers(app: FastAPI, api_key: str | None) -> None:
    """The routers; those serving data need the key (the page, the probes and the docs —
    FastAPI's own routes — hold none)."""
    keyed = [Depends(api_key_dependency(api_key))] if api_key else []
    app.include_router(search.router, dependencies=keyed)
    app.include_router(items.router, dependencies=keyed)
    app.include_router(meta.router, dependencies=keyed)
    app.include_router(meta.public)
    app.include_router(page.router)


async def user_error(request: Request, e: JointspaceError) -> JSONResponse:
    return JSONResponse({"detail": str(e)}, status_code=400)


async def too_many_values(request: Request, e: TooManyFilterValues) -> JSONResponse:
    return JSONResponse({"detail": str(e)}, status_code=413)


async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
    # FastAPI's own answer echoes each bad value: a 10 MB list back to its sender, encoded
    # item by item (seconds of the server's time)
    return JSONResponse({"detail": [{k: v for k, v in error.items() if k in ("type", "loc", "msg")}
                                    for error in e.errors()]}, status_code=422)


async def file_problem(request: Request, e: FileProblem) -> JSONResponse:
    # the detail, and what a page needs to say it in a sentence of its own
    return JSONResponse({"detail": e.detail, "problem": e.problem, "modality": e.modality,
                         "field": e.field}, status_code=e.status_code)


async def unknown_filter(request: Request, e: UnknownFilterError) -> JSONResponse:
    # the fields a client may filter on, not those the server keeps to itself
    return JSONResponse({"detail": e.describe(hidden=HIDDEN)}, status_code=400)


def add_error_handlers(app: FastAPI) -> None:
    """A user's mistake is a 4xx with a message; a 422 never echoes the input back."""
    app.add_exception_handler(JointspaceError, user_error)
    app.add_exception_handler(TooManyFilterValues, too_many_values)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(UnknownFilterError, unknown_filter)
    app.add_exception_handler(FileProblem, file_problem)


def add_guards(app: FastAPI, state: ServerState, cors_origins: Sequence[str],
               api_key: str | None = None) -> None:
    """The body limit, the key check around it (a request without the key is refused
    before its body is read, on every route, a user's own included), then CORS
    outermost: it answers preflights (which carry no key) and labels every answer, 413
    and 401 included. The routers' key dependency only declares the schemes in the
    OpenAPI schema (Swagger UI's "Authorize")."""
    # a JSON body's commas bound the values it holds: more than a valid request can hold
    # (commas in its texts and filter values allowed for) is refused before it is parsed
    chars, dim = state.limits.max_query_chars, state.col.dim
    max_commas = 10 * MAX_FILTER_VALUES + (MAX_TERMS + 1) * (dim + chars) + 1000
    app.add_middleware(BodyLimit, limit=state.limits.max_request_bytes, max_commas=max_commas,
                       why=f": at most {MAX_FILTER_VALUES} filter values, {MAX_TERMS + 1} vectors of "
                           f"{dim} and texts of {chars} characters; refused unparsed")
    if api_key:  # outside the body limit: a request without the key is refused unread
        app.add_middleware(KeyCheck, key=api_key, public=PUBLIC, public_prefixes=PUBLIC_PREFIXES)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"])


__all__ = ["create_app"]
