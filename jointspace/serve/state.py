"""What every route of one app shares: the collection, its limits, its files and readiness.

One :class:`ServerState` is made per app by :func:`~jointspace.serve.app.create_app` and kept
as ``app.state.server``; a route asks for it with the :data:`State` dependency. Everything a
route needs to know about a modality it asks :data:`~jointspace.modalities.MODALITIES`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from ..errors import JointspaceError
from ..index import Collection
from ..modalities import MODALITIES, Modality
from ..progress import logger
from .files import Files
from .uploads import Uploads

#: item fields never shown to clients, nor filtered on by them (they name server paths)
HIDDEN = ("key", "path", "source")


@dataclass(frozen=True)
class Limits:
    """What one request may cost (see :func:`~jointspace.serve.app.create_app`)."""

    max_upload_bytes: int = 10 << 20
    max_request_bytes: int = 16 << 20
    max_k: int = 1000
    max_window: int = 10_000
    max_image_pixels: int = 50_000_000
    max_query_chars: int = 2000


def plugin(name: str) -> Modality | None:
    """The registered plug-in of modality ``name``, or None (a model's tower of a modality
    this process has no plug-in for is still searched by its raw values)."""
    return MODALITIES.get(name) if name in MODALITIES else None


class ServerState:
    """The collection served, the limits, the files and uploads, and the warm-up's outcome."""

    def __init__(self, col: Collection, limits: Limits) -> None:
        self.col, self.limits = col, limits
        self.files = Files(self.roots, max_member_bytes=limits.max_upload_bytes)
        self.uploads = Uploads(limits.max_upload_bytes, limits.max_image_pixels)
        self.ready = threading.Event()
        self.warm_error: list[str] = []
        self._counts: tuple[Any, dict[str, int]] = (None, {})
        self._counts_lock = threading.Lock()

    def roots(self) -> list[str]:
        """The folders files are served from (an ingest may add some while we serve)."""
        self.col.reload_info()  # cheap: one stat; rereads collection.json only if a writer changed it
        return self.col.info.get("roots", [])

    # -- readiness -----------------------------------------------------------------
    def warm_up(self) -> None:
        """Warm the collection up once (:meth:`Collection.warm_up`), recording the outcome."""
        try:
            seconds = self.col.warm_up()
            logger.info("ready: warmed up in %.1f s", seconds)
        except Exception as e:  # noqa: BLE001  (reported by /readyz; queries will say more)
            self.warm_error.append(f"warming up failed: {type(e).__name__}: {e}")
            logger.warning("%s", self.warm_error[0])
        finally:
            self.ready.set()

    def start_warming(self) -> None:
        threading.Thread(target=self.warm_up, name="jointspace-warm-up", daemon=True).start()

    def is_ready(self) -> bool:
        return self.ready.is_set() and not self.warm_error

    # -- the model's modalities ------------------------------------------------------
    def model_modalities(self) -> list[str]:
        return self.col.model_modalities()

    def need(self, modality: str, where: str) -> None:
        """400 unless the model encodes ``modality`` (asked before anything is decoded)."""
        if modality not in self.model_modalities():
            raise JointspaceError(f"{where}: the model has no {modality!r} tower; it encodes "
                                  f"{', '.join(self.model_modalities())}")

    def uploadable(self) -> list[str]:
        """The modalities a file upload may be: every uploadable plug-in, the model's first."""
        model = self.model_modalities()
        names = [n for n in model if n in MODALITIES] + [n for n in MODALITIES.names() if n not in model]
        return [n for n in names if MODALITIES.get(n).uploadable]

    def item_counts(self) -> dict[str, int]:
        """Items per modality in the catalog, recounted only after a writer committed."""
        token = self.col.catalog.change_token()
        with self._counts_lock:
            if self._counts[0] != token:
                rows = self.col.catalog.db.execute(
                    "SELECT modality, count(*) FROM items GROUP BY modality").fetchall()
                self._counts = (token, {str(m): int(n) for m, n in rows})
            return dict(self._counts[1])

    # -- items -------------------------------------------------------------------------
    def item_or_404(self, item_id: int) -> dict:
        try:
            return self.col.get(item_id)
        except KeyError:
            raise HTTPException(404, f"no item {item_id}") from None


def get_state(request: Request) -> ServerState:
    """The dependency every route takes: this app's :class:`ServerState`."""
    return request.app.state.server


State = Annotated[ServerState, Depends(get_state)]

__all__ = ["HIDDEN", "Limits", "ServerState", "State", "get_state", "plugin"]
