"""The API key, as a FastAPI dependency of every router that serves data.

The key is taken as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY`` and compared in
constant time; a request without it, or with another, is a 401 (``WWW-Authenticate:
Bearer``). Declared with :class:`fastapi.security.APIKeyHeader` and
:class:`~fastapi.security.HTTPBearer`, so the OpenAPI schema lists both schemes on the
operations that need the key and Swagger UI's "Authorize" sends it. The page, the probes
and the docs are on routers without the dependency (none holds data).

The refusing is done before any of this, by :class:`~jointspace.serve.guards.KeyCheck`,
an ASGI middleware around the body limit: a request without the key is answered 401
before its body is read, on every route but the public ones (a route a user adds to
the app included). The dependency is then a second check that also documents the
schemes (FastAPI resolves dependencies only after parsing the body).
"""
from __future__ import annotations

import hmac
from typing import Any, Callable

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

#: the header and scheme names of the OpenAPI schema (Swagger UI's "Authorize" dialog)
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", scheme_name="APIKeyHeader", auto_error=False)
BEARER = HTTPBearer(scheme_name="BearerAuth", auto_error=False)
MISSING = "an API key is required: send it as X-API-Key or Authorization: Bearer"
WRONG = "wrong API key"


def api_key_dependency(key: str) -> Callable[..., Any]:
    """The dependency that refuses requests not carrying ``key`` (401)."""
    expected = key.encode()

    async def require_api_key(
            given: str | None = Security(API_KEY_HEADER),
            bearer: HTTPAuthorizationCredentials | None = Security(BEARER)) -> None:
        token = given or (bearer.credentials.strip() if bearer is not None else "")
        if not token:
            raise HTTPException(401, MISSING, headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(token.encode(), expected):
            raise HTTPException(401, WRONG, headers={"WWW-Authenticate": "Bearer"})
    return require_api_key


__all__ = ["API_KEY_HEADER", "BEARER", "api_key_dependency"]
