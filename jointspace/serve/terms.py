"""A request's query terms, built by asking the modality registry.

Each value a request carries is one of: a file (base64 ``data``, a field named after a file
modality, or an upload) that its modality's plug-in decodes; a value of a modality that is
not a file (a text …), given as ``text`` or ``value``; a vector; or an ``item`` of the
collection, by id, whose stored vector is the term ("more like this": nothing is encoded). Everything cheap is
checked first, for every term (text lengths, the model's towers, which field a modality
takes), and only then is anything decoded: a request refused anyway costs no decoding.
A request string never becomes a path on this machine: files come as data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException

from ..errors import JointspaceError
from ..index import Term
from ..modalities import MODALITIES
from .schemas import SearchIn, TermIn
from .state import ServerState, plugin
from .uploads import UNRECOGNISED, FileProblem, sniff

#: the request field a value that is not a file is given in (a term's ``text``, the upload
#: form's ``text``), named for the built-in text modality's values since the first version
USER_FACING_DEFAULTS = ("text",)
VECTOR = "vector"  # the pseudo-modality of a query vector
ITEM = "item"  # what a term naming a collection's item takes: its id
DATA, VALUE = "data", USER_FACING_DEFAULTS[0]  # the fields a file's and a value's term takes


@dataclass(frozen=True)
class Wanted:
    """One term as asked for, checked but not decoded: ``modality`` None: a file whose
    modality is recognised from its bytes when it is decoded."""

    field: str
    modality: str | None
    takes: str  # DATA, VALUE, VECTOR or ITEM
    value: Any
    weight: float


def check_text(where: str, text: str | None, max_chars: int) -> None:
    """413 for a query value longer than the server takes (texts are encoded on the one
    thread every query shares)."""
    if text is not None and len(text) > max_chars:
        raise HTTPException(413, f"{where} is {len(text)} characters long; at most "
                                 f"{max_chars} are accepted")


def takes(modality: str) -> str:
    """The field a term of ``modality`` takes: vector, data (files), or text (values)."""
    if modality == VECTOR:
        return VECTOR
    found = plugin(modality)
    return DATA if found is not None and found.is_file else VALUE


def check_upload_modality(state: ServerState, named: str | None) -> None:
    """422 unless ``named`` (an upload form's modality) is None or an uploadable plug-in's."""
    uploadable = state.uploadable()
    if named is not None and named not in uploadable:
        takes = _takes(state, uploadable)
        raise HTTPException(422, f"modality must be {' or '.join(takes)} (the file's), got "
                                 f"{named!r}; a text goes in the form field {VALUE}")


def _takes(state: ServerState, uploadable: list[str]) -> list[str]:
    """The uploadable modalities a message offers: the model's (another plug-in's file would
    only be refused next, for want of a tower), or every one if the model takes none."""
    return [m for m in uploadable if m in state.model_modalities()] or uploadable


def recognise(state: ServerState, field: str, data: bytes, named: str | None = None,
              content_type: str | None = None) -> str:
    """The modality of a file: ``named``, else what its first bytes are, else what the
    client labelled it; 422 for a name no uploadable plug-in has, 415 if not recognised,
    400 if the model has no tower for it."""
    check_upload_modality(state, named)
    uploadable = state.uploadable()
    kind = named or sniff(data) or (content_type or "").split("/")[0]
    if kind not in uploadable:
        takes = _takes(state, uploadable)
        formats = "; ".join(", ".join(s.lstrip(".").upper() for s in MODALITIES.get(m).suffixes)
                            for m in takes)
        labelled = f" and its content type is {content_type!r}" if content_type is not None else ""
        raise FileProblem(415, f"{field}: not a known {' or '.join(takes)} format ({formats})"
                               f"{labelled}; say {' or '.join(f'modality={m}' for m in takes)}",
                          UNRECOGNISED, field=field)
    state.need(kind, field)
    return kind


def _fields(state: ServerState, body: SearchIn) -> list[Wanted]:
    """The body's fields named after modalities (``text``, ``image`` …), then ``vector``."""
    wanted = []
    for name, value in body.modality_fields():
        if not isinstance(value, str):
            raise HTTPException(400, f"{name} must be a string: a value, or base64 of a file")
        if takes(name) == VALUE:
            check_text(name, value, state.limits.max_query_chars)
        wanted.append(Wanted(name, name, takes(name), value, 1.0))
    for want in wanted:  # before anything is decoded
        state.need(want.modality, want.field)
    if body.vector is not None:
        wanted.append(Wanted(VECTOR, VECTOR, VECTOR, body.vector, 1.0))
    return wanted


def text_modality(state: ServerState, where: str) -> str:
    """The modality a text naming none is a term of: the model's first text-like one."""
    for name in state.model_modalities():
        found = plugin(name)
        if found is not None and found.text_like:
            return name
    raise HTTPException(400, f"{where}: name its modality: the model has no text-like modality; it "
                             f"encodes {', '.join(state.model_modalities())}")


def _term(state: ServerState, where: str, t: TermIn) -> Wanted:
    value = t.text if t.text is not None else t.value
    if sum(x is not None for x in (t.text, t.value, t.data, t.vector, t.item)) != 1:
        raise HTTPException(400, f"{where}: give exactly one of text, data, vector or item "
                                 "(value: as text)")
    if t.item is not None:  # its stored vector: of its own modality, or of the one named
        return Wanted(where, t.modality, ITEM, t.item, t.weight)
    modality = t.modality
    if modality is None:
        if t.data is not None:
            return Wanted(where, None, DATA, t.data, t.weight)  # recognised when decoded
        modality = VECTOR if t.vector is not None else text_modality(state, where)
    if modality != VECTOR:
        state.need(modality, where)  # an unknown modality is named as such
    field = takes(modality)
    given = {VECTOR: t.vector, DATA: t.data, VALUE: value}[field]
    if given is None:
        raise HTTPException(400, f"{where}: a {modality!r} term takes {field!r}")
    return Wanted(where, modality, field, given, t.weight)


def wanted_terms(state: ServerState, body: SearchIn) -> list[Wanted]:
    """Every term of ``body``, checked (lengths first, then towers and fields), not decoded."""
    for i, t in enumerate(body.terms, 1):
        check_text(f"term {i}'s text", t.text, state.limits.max_query_chars)
        check_text(f"term {i}'s value", t.value, state.limits.max_query_chars)
    fields = _fields(state, body)
    return fields + [_term(state, f"term {i}", t) for i, t in enumerate(body.terms, 1)]


def build(state: ServerState, want: Wanted) -> Term:
    """The term of ``want``: a file decoded by its modality's plug-in, a value decoded or
    checked by its plug-in, or a vector."""
    if want.takes == VECTOR:
        return Term(VECTOR, want.value, want.weight)
    if want.takes == ITEM:
        return Term(VECTOR, item_vector(state, want), want.weight)
    if want.takes == VALUE:
        return state.uploads.value_term(want.field, want.modality, want.value, want.weight)
    data = [state.uploads.from_base64(want.field, want.value)]
    modality = want.modality or recognise(state, want.field, data[0])
    return state.uploads.file_term(want.field, modality, data, want.weight)


def item_vector(state: ServerState, want: Wanted) -> Any:
    """The stored vector of the item a term names: 404 for an id no item has, 400 if it has
    no vector of the modality named."""
    try:
        return state.col.item_vector(want.value, want.modality)
    except KeyError:
        raise HTTPException(404, f"{want.field}: no item {want.value}") from None
    except JointspaceError as e:
        raise HTTPException(400, f"{want.field}: {e}") from None


def terms_of(state: ServerState, body: SearchIn) -> list[Term]:
    """The terms of a JSON query: all of them checked, then decoded."""
    return [build(state, want) for want in wanted_terms(state, body)]


__all__ = ["ITEM", "VECTOR", "Wanted", "build", "check_text", "check_upload_modality", "item_vector", "recognise",
           "takes", "terms_of", "text_modality", "wanted_terms"]
