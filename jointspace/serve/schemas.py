"""The request and response bodies of the HTTP API (they also make the OpenAPI page)."""
from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import JointspaceError
from ..modalities import MODALITIES

#: the JSON body's fields named after the built-in modalities, kept for compatibility (a
#: field named after any other registered modality is taken alike, as an extra field)
USER_FACING_DEFAULTS = ("text", "image", "audio")
MODALITY_FIELDS = USER_FACING_DEFAULTS

Scalar = Union[str, int, float, bool]
MAX_TERMS = 32  # each term is one encoder call: a request cannot queue thousands
#: characters of one query text over HTTP (create_app's max_query_chars): tokenising 2 MB
#: took 2 s on the encoding thread every query shares; no text tower reads that far
MAX_QUERY_CHARS = 2000
#: filter values in one request over HTTP (all fields together): each costs parsing and a
#: row of SQLite's json_each; 1.3 M labels (14.5 MB) took 2.5 s. Python and the CLI take any
#: number (they are the server's own user).
MAX_FILTER_VALUES = 10_000
MAX_TARGETS = 64  # modalities one query may name as targets


class TooManyFilterValues(JointspaceError):
    """A request's ``where`` holds more than :data:`MAX_FILTER_VALUES` values (a 413): raised
    while validating the body, before its values are validated one by one."""


def count_filter_values(where: Any) -> int:
    """The values of a ``where`` as sent (a list counts its items, anything else one), read
    without validating them: O(fields), whatever the values."""
    if not isinstance(where, dict):
        return 0
    return sum(len(v) if isinstance(v, (list, tuple)) else 1 for v in where.values())


class TermIn(BaseModel):
    """One weighted query term: a file (base64 ``data``) or a value (``text``) of one of the
    model's modalities, a ``vector``, or an ``item`` of the collection by id, whose stored
    vector is the term ("more like this": ``{"item": 123}``; its own modality's vector, or
    the one ``modality`` names: an image's caption is ``{"item": 123, "modality": "text"}``;
    404 for an id no item has, 400 if it has no vector of that modality)."""

    modality: str | None = Field(None, description="one of the model's modalities (GET /modalities), "
                                                   "or vector; omitted: data is recognised from the "
                                                   "file's first bytes, a text is of the model's "
                                                   "text-like modality, an item's vector is of its "
                                                   "own modality")
    text: str | None = Field(None, description="the value of a modality that is not a file (a text)")
    value: str | None = Field(None, description="the same as text (for modalities whose values "
                                                "are not texts)")
    data: str | None = Field(None, description="base64 of a file (a data: URL works)")
    vector: list[float] | None = None
    item: int | None = Field(None, ge=1, le=2**63 - 1, description="an item's id (as in a hit): "
                                                                  "its stored vector")
    weight: float = Field(1.0, description="negative: push results away from this term")


class SearchIn(BaseModel):
    """A query: any mix of values of the model's modalities given in fields named after them
    (``text``: a text, ``image``, ``audio``: base64 files; any other modality's field works
    alike), a ``vector`` (each weight 1) and weighted ``terms``; results ``offset`` …
    ``offset + k`` of the ranking."""

    model_config = ConfigDict(extra="allow")  # a field named after any registered modality

    text: str | None = Field(None, description="a text query")
    image: str | None = Field(None, description="base64 of an image file (a data: URL works)")
    audio: str | None = Field(None, description="base64 of an audio file (WAV, FLAC, OGG, MP3 …)")
    vector: list[float] | None = Field(None, description="a query vector of the collection's size")
    terms: list[TermIn] = Field(default_factory=list, max_length=MAX_TERMS)
    k: int = Field(10, ge=1, description="results per page (at most the server's max_k)")
    offset: int = Field(0, ge=0, description="skip this many results (pagination)")
    where: dict[str, Union[Scalar, list[Scalar]]] | None = Field(
        None, description='filters on item fields (modality, label, text) or metadata keys: '
                          '{"label": ["a", "b"]}; at most 10,000 values in all (413 beyond)')
    target: str | list[str] | None = Field(
        None, description='the indexed modalities searched: one ("image"), several (["image", '
                          '"audio"] or "image,audio"), or every one ("*" or []); default: the first. '
                          "With several, each one's scores are standardised before they are merged "
                          "(with calibrate; raw cosines without)")
    calibrate: bool = Field(True, description="standardise each term's scores before adding them")
    nprobe: int | None = Field(None, ge=1, le=65536, description="IVF cells to visit")

    @field_validator("target")
    @classmethod
    def _few_targets(cls, target: Any) -> Any:
        if isinstance(target, list) and len(target) > MAX_TARGETS:
            raise ValueError(f"at most {MAX_TARGETS} targets")
        return target

    @field_validator("where", mode="before")
    @classmethod
    def _few_filter_values(cls, where: Any) -> Any:
        # before pydantic validates each value: a long list is refused for the cost of len()
        found = count_filter_values(where)
        if found > MAX_FILTER_VALUES:
            raise TooManyFilterValues(f"where holds {found} values; at most {MAX_FILTER_VALUES} "
                                      "are accepted over HTTP (filter on a coarser field, or use "
                                      "the Python API)")
        return where

    def modality_fields(self) -> list[tuple[str, Any]]:
        """``(modality, value)`` of each field named after a registered modality: the declared
        ones (:data:`MODALITY_FIELDS`) in their order, then any other given."""
        reserved = set(type(self).model_fields) - set(MODALITY_FIELDS)
        return [(name, value) for name, value in self
                if value is not None and name in MODALITIES and name not in reserved]


class HitOut(BaseModel):
    rank: int = Field(description="1-based, counted across pages")
    score: float
    id: int
    modality: str
    text: str | None = None
    label: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(None, description="the file's name")
    url: str | None = Field(None, description="the item's file; absent when it has none")
    thumbnail: str | None = Field(None, description="a JPEG of at most 256 px; images only")
    preview: str | None = Field(None, description="the item's preview (GET /modalities: its kind)")
    preview_kind: str | None = Field(None, description="how a page shows the preview: image, "
                                                       "audio, text …")
    player_kind: str | None = Field(None, description="how a page shows the whole file (url) in "
                                                      "a detail view: image, audio, video …; absent: "
                                                      "by its preview")


class SearchOut(BaseModel):
    hits: list[HitOut]
    k: int
    offset: int
    took_ms: float
    total: int | None = Field(None, description="the items the query ranks: those of the target "
                                                "modalities that pass the filters")


class FieldValue(BaseModel):
    value: str = Field(description="as a filter compares it (a number as its text)")
    count: int = Field(description="items with this value")


class FieldOut(BaseModel):
    """A field items can be filtered on (``where``), and its most common values."""

    name: str
    values: list[FieldValue] = Field(description="the most common first; all of them when "
                                                 "distinct is no more than their number")
    distinct: int = Field(description="how many values the field has")
    items: int = Field(description="items that have the field")


class FieldsOut(BaseModel):
    fields: list[FieldOut]
    items: int = Field(description="items in the collection")


class ItemOut(BaseModel):
    """An item's metadata; never where its file lives on the server."""

    id: int
    modality: str
    content_hash: str
    text: str | None = None
    label: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None


class ModalityOut(BaseModel):
    """One of the model's modalities, as its plug-in describes it."""

    name: str
    preview_kind: str = Field("", description="how a page shows an item's preview (image: an "
                                              "<img>, audio: a player, text: the text; empty: none)")
    player_kind: str = Field("", description="how a page shows an item's whole file in a detail "
                                             "view (image: an <img>, audio, video: a player; "
                                             "empty: by its preview)")
    uploadable: bool = Field(description="files of it are taken as queries (POST /search/upload)")
    is_file: bool = Field(description="its items are files (else values: a text …)")
    text_like: bool = False
    suffixes: list[str] = Field(default_factory=list, description="file name endings of it")
    indexed: bool = Field(description="the collection holds its vectors: a search can target it")
    items: int = Field(description="items of this modality in the collection")


class ModalitiesOut(BaseModel):
    modalities: list[ModalityOut]
    target: str = Field(description="the modality searched when a query names no target")


class Health(BaseModel):
    status: str
    items: int
    ready: bool = Field(description="warmed up: a query costs what any does (see /readyz)")


class Ready(BaseModel):
    ready: bool
    detail: str | None = Field(None, description="why not yet")


class Problem(BaseModel):
    detail: str = Field(description="what is wrong, and what to change")
    problem: str | None = Field(None, description="for a query's file: unreadable (its modality's "
                                                  "plug-in cannot decode it), unrecognised (no "
                                                  "known format), too_large")
    modality: str | None = Field(None, description="the modality the file was taken as")
    field: str | None = Field(None, description="where the request held the file: its name, term 2 …")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text} for code, text in (
        (400, "a malformed query: bad base64, a non-image, a wrong-sized vector, an unknown "
              "modality, target, filter or item"),
        (401, "the API key is missing or wrong"),
        (413, "an upload, a query text, the filter values or the request body are too large"))}

__all__ = ["ERRORS", "FieldOut", "FieldValue", "FieldsOut", "Health", "HitOut", "ItemOut", "MAX_FILTER_VALUES",
           "MAX_QUERY_CHARS", "MAX_TARGETS", "MAX_TERMS",
           "MODALITY_FIELDS", "ModalitiesOut", "ModalityOut", "Problem", "Ready", "SearchIn", "SearchOut",
           "TermIn", "TooManyFilterValues", "count_filter_values"]
