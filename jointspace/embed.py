"""Deprecated: the bulk embedder is :mod:`jointspace.bulk_embed` now.

``import jointspace.embed`` warns once; its names are that module's very objects (public
ones re-exported, any other forwarded). Patch :mod:`jointspace.bulk_embed` itself: a name
set here changes nothing there."""
import warnings
from typing import Any

from . import bulk_embed
from .bulk_embed import *  # noqa: F401,F403
from .bulk_embed import __all__  # noqa: F401

warnings.warn("jointspace.embed is now jointspace.bulk_embed; the old name will be removed",
              DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:
    return getattr(bulk_embed, name)
