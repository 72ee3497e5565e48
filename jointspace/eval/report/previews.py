"""Items shown in a report as their modality plug-in's previews, embedded as data URIs.

A preview of kind ``image`` is an ``<img>`` with alt text, ``audio`` an ``<audio>``
player, ``text`` the text itself (a value modality's item is its text); any other
kind, or an item with no preview, is shown by its name. Every preview is bounded:
thumbnails are small, an audio file over :data:`MAX_PREVIEW_BYTES` is named with a
note instead, a preview over :data:`REPEAT_BYTES` is embedded once (its later
appearances link to the first), and once a page holds :data:`PAGE_BUDGET` bytes of
previews the rest are named too, so a report stays a few megabytes whatever the data.
"""
from __future__ import annotations

import base64
from pathlib import Path

from ...modalities import MODALITIES
from .html import esc

#: the kinds of :class:`~jointspace.modalities.Preview` this page draws (the plug-ins'
#: preview contract); other kinds are shown by the item's name
USER_FACING_DEFAULTS = ("image", "audio", "text")
IMAGE_KIND, AUDIO_KIND, TEXT_KIND = USER_FACING_DEFAULTS
#: thumbnails' longest side in the file (shown at 96 CSS pixels)
THUMBNAIL_PX = 96
#: the largest single preview embedded (an audio file above it is named, with a note)
MAX_PREVIEW_BYTES = 1_000_000
#: preview bytes one page embeds at most; past it items are named
PAGE_BUDGET = 3_000_000
#: a preview larger than this (a sound) is embedded once; its other appearances link to it
REPEAT_BYTES = 16_000
#: the characters of a text item shown
TEXT_CHARS = 300


class Previews:
    """Renders items of the page's modalities; each distinct item is read once."""

    def __init__(self, budget: int = PAGE_BUDGET, max_bytes: int = MAX_PREVIEW_BYTES) -> None:
        self.budget, self.max_bytes = budget, max_bytes
        self.used = 0
        self.left_out = 0
        self._reasons: dict[str, str] = {}  # item → why it is named, not shown
        self._data: dict[tuple[str, str], tuple[str, str] | None] = {}
        self._anchors: dict[tuple[str, str], str] = {}  # large previews already on the page

    def __call__(self, modality: str, item: str, label: str = "") -> str:
        """Markup showing ``item`` (a path, or a value modality's value) of ``modality``;
        ``label`` is its accessible name (default: the item's file name)."""
        plugin = MODALITIES.get(modality) if modality in MODALITIES else None
        name = Path(item).name if plugin is not None and plugin.is_file else item
        label = label or name
        if plugin is None or not plugin.is_file:
            text = item if len(item) <= TEXT_CHARS else item[:TEXT_CHARS] + "…"
            return f"<span class='preview'><span class='text'>{esc(text)}</span></span>"
        key = (modality, item)
        if key in self._anchors:  # a large preview shown above: link to it
            return (f"<span class='preview'><a href='#{self._anchors[key]}'>▶ {esc(name)}</a> "
                    "<span class='tag'>(shown above)</span></span>")
        found = self._embedded(modality, item)
        if found is None:
            return f"<span class='preview'><code>{esc(name)}</code>{self._why(item)}</span>"
        kind, uri = found
        anchor = ""
        if len(uri) > REPEAT_BYTES:
            self._anchors[key] = f"preview-{len(self._anchors)}"
            anchor = f" id='{self._anchors[key]}'"
        if kind == IMAGE_KIND:
            return f"<span class='preview'{anchor}><img alt='{esc(label)}' src='{uri}'></span>"
        if kind == AUDIO_KIND:
            mime = uri[5:uri.index(";")]
            return (f"<span class='preview'{anchor}><audio controls preload='none' "
                    f"aria-label='{esc(label)}: {esc(name)}'><source src='{uri}' type='{esc(mime)}'>"
                    f"</audio><span class='tag'>{esc(name)}</span></span>")
        text = base64.b64decode(uri.split(",", 1)[1]).decode("utf-8", "replace")[:TEXT_CHARS]
        return f"<span class='preview'><span class='text'>{esc(text)}</span></span>"

    def _why(self, item: str) -> str:
        reason = self._reasons.get(item)
        return f" <span class='tag'>({esc(reason)})</span>" if reason else ""

    def _embedded(self, modality: str, item: str) -> tuple[str, str] | None:
        key = (modality, item)
        if key in self._data:
            found = self._data[key]
        else:
            found = self._data[key] = self._make(modality, item)
        if found is None:
            return None
        size = len(found[1])
        if self.used + size > self.budget:
            self.left_out += 1
            self._reasons[item] = "preview left out: the report's size bound"
            return None
        self.used += size
        return found

    def _make(self, modality: str, item: str) -> tuple[str, str] | None:
        plugin = MODALITIES.get(modality)
        if plugin.preview_kind not in (IMAGE_KIND, AUDIO_KIND, TEXT_KIND):
            return None  # a kind this page does not draw: the item's name
        try:
            size = Path(item).stat().st_size
        except OSError:
            self._reasons[item] = "file not found"
            return None
        if plugin.preview_kind == AUDIO_KIND and size > self.max_bytes:
            self._reasons[item] = f"{size / 1e6:.1f} MB: too large to embed"
            return None
        try:
            preview = plugin.preview(item, max_px=THUMBNAIL_PX)
        except Exception as e:  # noqa: BLE001  (a plug-in's errors: the item is named instead)
            self._reasons[item] = f"no preview: {type(e).__name__}"
            return None
        if len(preview.data) > self.max_bytes:
            self._reasons[item] = f"{len(preview.data) / 1e6:.1f} MB preview: too large to embed"
            return None
        data = base64.b64encode(preview.data).decode("ascii")
        return preview.kind, f"data:{preview.mime.split(';')[0]};base64,{data}"
