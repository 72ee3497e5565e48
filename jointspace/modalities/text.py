"""The text modality: a manifest cell (or a ``.txt`` file in a folder) is the text."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError
from .base import MODALITIES, Modality, Preview

#: the most characters a caption may have (the manifest reader's default limit)
MAX_TEXT_CHARS = 1000


class TextModality(Modality):
    """Text: the cell's value, stripped; a shard member or upload is UTF-8 (a BOM is dropped)."""

    name = "text"
    is_file = False
    suffixes = (".txt",)
    shard_keys = ("txt", "caption", "text")
    default_tower = "transformer"
    preview_kind = "text"
    text_like = True

    def decode(self, source: str | Path | bytes, *, where: str = "",
               max_pixels: int | None = None, max_chars: int = MAX_TEXT_CHARS) -> str:
        """A cell's value, or UTF-8 bytes → stripped text of at most ``max_chars``."""
        if isinstance(source, bytes):
            try:
                source = source.decode("utf-8-sig")
            except UnicodeDecodeError as e:
                raise DataError(f"{where or 'text'} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        if not isinstance(source, str):
            raise DataError(f"{where or 'text'}: expected text, got {type(source).__name__}")
        text = source.strip()
        if not text:
            raise DataError(f"{where or 'text'}: the text is empty")
        if len(text) > max_chars:
            raise DataError(f"{where or 'text'} has {len(text)} characters (limit {max_chars})")
        return text

    def check(self, path: Any) -> None:
        """Nothing beyond what the manifest reader checks of every text (empty, its
        ``max_text_chars``): the plug-in's own 1,000-character bound would override it."""
        return None

    def check_value(self, value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return "the text is empty"
        return None

    def preview(self, path: str | Path, *, max_px: int = 256) -> Preview:
        """The first 2,000 characters of a ``.txt`` file."""
        return Preview("text", "text/plain; charset=utf-8",
                       Path(path).read_text("utf-8", errors="replace")[:2000].encode())

    def sample(self, folder: Path) -> str:
        """A short text (no file: a text query is its value)."""
        return "warm-up"


TEXT = MODALITIES.register("text")(TextModality())
