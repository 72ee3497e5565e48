"""The probes (``GET /healthz``, ``GET /readyz``: public, they hold no data),
``GET /modalities``: what the collection's model takes and how its items are shown, and
``GET /fields``: what its items can be filtered on."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..schemas import FieldsOut, Health, ModalitiesOut, Ready
from ..state import HIDDEN, ServerState, State, plugin

#: values listed per field, and fields listed, by GET /fields
MAX_FIELD_VALUES, MAX_FIELDS = 100, 50

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
            "player_kind": found.player_kind if found else "",
            "uploadable": bool(found and found.uploadable),
            "is_file": bool(found and found.is_file), "text_like": bool(found and found.text_like),
            "suffixes": list(found.suffixes) if found else [],
            "indexed": name in state.col.modalities, "items": counts.get(name, 0)}


@router.get("/modalities", response_model=ModalitiesOut)
def modalities(state: State) -> dict:
    """The modalities of the collection's model: how a page shows each one's items
    (``preview_kind`` on a card, ``player_kind`` for the whole file), which ones a file upload may be and by which suffixes, which ones
    a search can target (``indexed``), and how many items of each the collection holds."""
    counts = state.item_counts()
    return {"modalities": [describe(state, name, counts) for name in state.model_modalities()],
            "target": state.col.modalities[0] if state.col.modalities else ""}


@router.get("/fields", response_model=FieldsOut)
def fields(state: State) -> dict:
    """What items can be filtered on (``where`` of ``POST /search``): the label and the
    metadata keys, each with its most common values (at most 100; ``distinct`` says how
    many there are) and their counts; never the fields naming server paths (``key``,
    ``path``, ``source``). Read once per change of the collection."""
    found = state.col.catalog.field_values(MAX_FIELD_VALUES, MAX_FIELDS)  # no item column's name
    return {"fields": [f for f in found if f["name"] not in HIDDEN], "items": len(state.col)}


__all__ = ["MAX_FIELDS", "MAX_FIELD_VALUES", "public", "router"]
