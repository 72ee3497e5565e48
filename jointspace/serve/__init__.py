"""``jointspace serve``: an HTTP API and a search page over a collection."""
from .app import create_app
from .run import serve

__all__ = ["create_app", "serve"]
