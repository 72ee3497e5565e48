"""ASGI middleware in front of the app: the request-body limits.

Plain ASGI (no ``BaseHTTPMiddleware``: it costs a task per request), answering with the
same ``{"detail": message}`` JSON as the app's own errors. The API key is a dependency of
the routers that serve data (:mod:`jointspace.serve.security`).
"""
from __future__ import annotations

import hmac
from typing import Any, Collection

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers


class BodyLimit:
    """Answers 413 to request bodies over ``limit`` bytes, declared or streamed (chunked),
    and to JSON bodies (any but a multipart form) holding more than ``max_commas`` commas.

    The body is read here, up to the limit, and replayed to the app: an error
    raised inside the app's own body parsing would be turned into a 400. The commas
    bound the values a JSON body holds, counted before it is parsed (12 ms for 14 MB):
    parsing 14 MB of short strings costs 0.15 s and 150 MB for a moment, for a request
    refused anyway. ``why`` ends the message (what a valid request holds at most)."""

    def __init__(self, app: Any, limit: int, max_commas: int | None = None, why: str = "") -> None:
        self.app, self.limit, self.max_commas, self.why = app, limit, max_commas, why

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._too_large(scope, receive, send)
        if self.max_commas is not None and not Headers(scope=scope).get("content-type", "").startswith(
                "multipart/form-data"):
            commas = body.count(b",")
            if commas > self.max_commas:
                return await JSONResponse({"detail": f"the request body holds {commas} commas, more "
                                           f"values than a valid request ({self.max_commas}){self.why}"},
                                          status_code=413)(scope, receive, send)
        body = bytes(body)  # one copy held while the app parses it, not two
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # waits for the disconnect, as the server would
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, replay, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        await JSONResponse({"detail": f"request body is larger than {self.limit} bytes"},
                           status_code=413)(scope, receive, send)


class KeyCheck:
    """Answers 401 unless the request carries ``key`` as ``X-API-Key: KEY`` or
    ``Authorization: Bearer KEY`` (compared in constant time); ``public`` paths, and those
    starting with one of ``public_prefixes``, are open."""

    def __init__(self, app: Any, key: str, public: Collection[str],
                 public_prefixes: tuple[str, ...] = ()) -> None:
        self.app, self.key, self.public = app, key.encode(), frozenset(public)
        self.public_prefixes = tuple(public_prefixes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self.public or (
                path.startswith(self.public_prefixes) and ".." not in path):  # no way out of it
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        given = headers.get("x-api-key", "")
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if not given and scheme.lower() == "bearer":
            given = token.strip()
        if not given:
            message = "an API key is required: send it as X-API-Key or Authorization: Bearer"
        elif not hmac.compare_digest(given.encode(), self.key):
            message = "wrong API key"
        else:
            return await self.app(scope, receive, send)
        await JSONResponse({"detail": message}, status_code=401,
                           headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)


__all__ = ["BodyLimit", "KeyCheck"]
