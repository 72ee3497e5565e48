"""ASGI middleware in front of the app: a request-body size limit and the API key check.

Both are plain ASGI (no ``BaseHTTPMiddleware``: it costs a task per request) and
answer with the same ``{"detail": message}`` JSON as the app's own errors. The key
check is middleware, not a route dependency, so it also covers the routes FastAPI
adds itself (``/docs``, ``/openapi.json``).
"""
from __future__ import annotations

import hmac
from typing import Any, Collection

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers


class BodyLimit:
    """Answers 413 to request bodies over ``limit`` bytes, declared or streamed (chunked).

    The body is read here, up to the limit, and replayed to the app: an error
    raised inside the app's own body parsing would be turned into a 400."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

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
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # waits for the disconnect, as the server would
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, replay, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        await JSONResponse({"detail": f"request body is larger than {self.limit} bytes"},
                           status_code=413)(scope, receive, send)


class KeyCheck:
    """Answers 401 unless the request carries ``key`` as ``X-API-Key: KEY`` or
    ``Authorization: Bearer KEY`` (compared in constant time); ``public`` paths are open."""

    def __init__(self, app: Any, key: str, public: Collection[str]) -> None:
        self.app, self.key, self.public = app, key.encode(), frozenset(public)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
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
