"""``jointspace serve``: an HTTP API and a search page over a collection."""
from ..extras import require

for _module in ("fastapi", "fastapi_offline", "python_multipart", "uvicorn"):  # before .app imports them
    require(_module, "serve", "jointspace serve")
from .app import create_app  # noqa: E402
from .run import serve

__all__ = ["create_app", "serve"]
