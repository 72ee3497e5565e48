"""The items a query carries: base64 or raw bytes, or a string, decoded by their modality's
plug-in within limits.

A file (an upload, or a base64 ``data`` term) of modality ``M`` becomes the item a tower
takes through ``MODALITIES.get(M).decode(bytes, where=FIELD, max_pixels=LIMIT)``, after its
byte size is checked; a value of a modality that is not a file (a text, a row …) through the
plug-in's ``decode(str)``, or, for a text-like one, its ``check_value`` (its length is the
server's query-text bound). Every failure is an ``HTTPException`` naming the field: 400 for
data that is not what it claims to be (the plug-in's :class:`~jointspace.errors.DataError`),
413 for data over the limits (bytes, or the plug-in's :class:`~jointspace.modalities.TooLarge`:
a small PNG can hold a picture that takes gigabytes to decode). Those about a file are a
:class:`FileProblem`, whose answer also says what went wrong in words a page can turn
into a sentence (``problem``, ``modality``, ``field``).
"""
from __future__ import annotations

import binascii
import re
from typing import Any

from fastapi import HTTPException

from .. import modalities
from ..errors import DataError
from ..index import Term
from ..modalities import MODALITIES, Modality, TooLarge, decode_with_limits
# moved to the audio plug-in; importable from here for code written against earlier versions
from ..modalities.audio import mp3_start, mpeg_frame  # noqa: F401

BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")  # what base64.b64decode(validate=True) accepts
#: bytes of a file its modality is recognised from (:func:`jointspace.modalities.sniff`): an
#: MP3 is recognised by its second frame header, up to ~1.4 kB in
SNIFF_BYTES = 4096


def sniff(data: bytes) -> str | None:
    r"""The name of the uploadable modality whose plug-in recognises a file's first bytes,
    or None (:func:`jointspace.modalities.sniff`, which returns the plug-in itself).

    >>> sniff(b"\x89PNG\r\n\x1a\n..."), sniff(b"%PDF")
    ('image', None)
    """
    found = modalities.sniff(data[:SNIFF_BYTES])
    return found.name if found is not None else None


#: FileProblem.problem: its plug-in cannot decode it / no uploadable plug-in knows its
#: format / it is over a bound (bytes, pixels, duration)
UNREADABLE, UNRECOGNISED, TOO_LARGE = "unreadable", "unrecognised", "too_large"


class FileProblem(HTTPException):
    """A query's file refused (400, 413 or 415): besides the ``detail``, ``problem`` says
    which refusal it is (:data:`UNREADABLE`, :data:`UNRECOGNISED`, :data:`TOO_LARGE`),
    ``modality`` what the file was taken as (None: not known) and ``field`` where the
    request held it (an upload's file name, ``term 2``)."""

    def __init__(self, status: int, detail: str, problem: str, *, modality: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(status, detail)
        self.problem, self.modality, self.field = problem, modality, field


class Uploads:
    """Decodes uploads of at most ``max_bytes`` and pictures of at most ``max_pixels``."""

    def __init__(self, max_bytes: int, max_pixels: int) -> None:
        self.max_bytes, self.max_pixels = max_bytes, max_pixels

    def check_size(self, field: str, size: int) -> None:
        if size > self.max_bytes:
            raise FileProblem(413, f"{field} is larger than {self.max_bytes} bytes", TOO_LARGE,
                              field=field)

    def from_base64(self, field: str, value: str) -> bytes:
        """The bytes of a base64 string or a ``data:`` URL (as a browser's FileReader makes)."""
        if value.startswith("data:") and "," in value:
            value = value.split(",", 1)[1]
        self.check_size(field, len(value) * 3 // 4 - 2)  # before decoding anything
        try:  # from the str itself: b64decode would first copy it into bytes (10 MB more)
            if not BASE64.fullmatch(value):
                raise ValueError("not base64")
            data = binascii.a2b_base64(value)
        except (binascii.Error, ValueError):
            raise HTTPException(400, f"{field} is not valid base64") from None
        self.check_size(field, len(data))
        if not data:
            raise HTTPException(400, f"{field} is empty")
        return data

    def item(self, field: str, plugin: Modality, source: bytes | str) -> Any:
        """``source`` (a file's bytes, or a value) decoded by ``plugin``: 400 naming ``field``
        for what the plug-in refuses, 413 for what it finds too large."""
        try:
            return decode_with_limits(plugin, source, where=field, max_pixels=self.max_pixels)
        except TooLarge as e:
            raise FileProblem(413, str(e), TOO_LARGE, modality=plugin.name, field=field) from None
        except DataError as e:
            raise FileProblem(400, f"{field} is not usable {plugin.name}: {e}", UNREADABLE,
                              modality=plugin.name, field=field) from None

    def file_term(self, field: str, modality: str, data: list[bytes], weight: float) -> Term:
        """The term of a file's bytes, ``data`` a list of one that is emptied: only the
        plug-in holds the bytes while it decodes them (a 10 s clip at 384 kHz is 7.7 MB).
        The plug-in's decoding is the check every item of the modality gets (a silent clip
        is refused here, naming the field): the search does not check it again."""
        item = self.item(field, MODALITIES.get(modality), data.pop())
        return Term(modality, item, weight, checked=True)

    def value_term(self, field: str, modality: str, value: Any, weight: float) -> Term:
        """The term of a value that is not a file (a text, a row of a user's modality):
        decoded by its plug-in, or checked as it is when the modality is text-like (its
        length is bounded by the server's query-text limit, not the plug-in's own)."""
        plugin = MODALITIES.get(modality) if modality in MODALITIES else None
        if plugin is None:
            return Term(modality, value, weight)
        if plugin.text_like:
            problem = plugin.check_value(value)
            if problem:
                raise HTTPException(400, f"{field}: {problem}")
            return Term(modality, value, weight)
        return Term(modality, self.item(field, plugin, value), weight, checked=True)


__all__ = ["BASE64", "FileProblem", "SNIFF_BYTES", "TOO_LARGE", "UNREADABLE", "UNRECOGNISED", "Uploads",
           "mp3_start", "mpeg_frame", "sniff"]
