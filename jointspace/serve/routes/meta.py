"""The probes (``GET /healthz``, ``GET /readyz``: public, they hold no data) and
``GET /modalities``: what the collection's model takes and how its items are shown."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..schemas import Health, ModalitiesOut, Ready
from ..state import ServerState, State, plugin

public = APIRouter(tags=["health"])
router = APIRouter(tags=["meta"])


@public.get("/healthz", response_model=Health)
def healthz(state: State) -> dict:
    """Liveness: the server answers (``ready``: whether it has warmed up)."""
    return {"status": "ok", "items": len(state.col), "ready": state.is_ready()}


@public.get("/readyz", response_model=Ready, responses={503: {"model": Ready, "description":
                                                              "still warming up, or failed to"}})
def readyz(state: State) -> JSONResponse:
    """Readiness: 200 once the model has warmed up (a query then costs what any does),
    503 until then."""
    if state.is_ready():
        return JSONResponse({"ready": True})
    detail = state.warm_error[0] if state.warm_error else "warming up: loading the model's first batches"
    return JSONResponse({"ready": False, "detail": detail}, status_code=503)


def describe(state: ServerState, name: str, counts: dict[str, int]) -> dict:
    """One of the model's modalities as its plug-in describes it (defaults without one)."""
    found = plugin(name)
    return {"name": name, "preview_kind": found.preview_kind if found else "",
            "uploadable": bool(found and found.uploadable),
            "is_file": bool(found and found.is_file), "text_like": bool(found and found.text_like),
            "suffixes": list(found.suffixes) if found else [],
            "indexed": name in state.col.modalities, "items": counts.get(name, 0)}


@router.get("/modalities", response_model=ModalitiesOut)
def modalities(state: State) -> dict:
    """The modalities of the collection's model: how a page shows each one's items
    (``preview_kind``), which ones a file upload may be and by which suffixes, which ones
    a search can target (``indexed``), and how many items of each the collection holds."""
    counts = state.item_counts()
    return {"modalities": [describe(state, name, counts) for name in state.model_modalities()],
            "target": state.col.modalities[0] if state.col.modalities else ""}


__all__ = ["public", "router"]
