"""The modality plug-in interface and its registry.

A :class:`Modality` owns everything that depends on what an item *is*: which
file names and shard members hold one, how a path or the bytes of an upload or
a shard member become an item a tower takes (with the check and the bounded
cost every reader applies), how an uploaded file is recognised, how an item is
previewed in a report or the search page, and which tower a new model gets for
it. The layers above (manifests, shards, export, streams, embedding, indexing,
serving, evaluation, the CLI) ask :data:`MODALITIES` and never name a modality.

A new modality is one module that subclasses :class:`Modality` and registers an
instance, plus a tower for it::

    class Tabular(Modality):
        name, is_file, default_tower = "tabular", False, "tabular_mlp"
        def decode(self, source, *, where="", max_pixels=None):
            return parse_numbers(source, where)

    MODALITIES.register("tabular")(Tabular())

What a tower's ``preprocess_one`` receives: from a manifest, the cell (a path for a
file modality, resolved against the manifest's folder; the cell's text otherwise),
and from shards, streams, uploads and in-memory queries what :meth:`Modality.decode`
returns. A tower takes both (the built-in ones do; ``decode`` is the one way from
the first to the second, so a tower can call it).

This module is the bottom layer: it imports nothing of jointspace but errors
and the registry class.
"""
from __future__ import annotations

import inspect
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import DataError
from ..registry import Registry


@dataclass(frozen=True)
class ItemCheck:
    """What a modality's check found: why an item cannot be used (None: it can),
    and notes on what decoding does to make it usable (resampled, downmixed …)."""

    problem: str | None = None
    notes: tuple[str, ...] = ()


class TooLarge(DataError):
    """An item over a size bound (bytes, pixels, duration): a server answers 413."""


#: the largest file :meth:`Modality.player` hands out whole
PLAYER_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class Preview:
    """A small rendering of an item for a person: ``kind`` says how a page shows it
    (``"image"``: an ``<img>``, ``"audio"``: an ``<audio>`` player, ``"video"``: a
    ``<video>`` player, ``"text"``: the text; a plug-in may add kinds its own page
    code renders), ``mime`` the type of ``data``."""

    kind: str
    mime: str
    data: bytes


def _read(source: str | Path | bytes, where: str) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except FileNotFoundError:
        raise DataError(f"file not found: {source}") from None
    except OSError as e:
        raise DataError(f"cannot read {where or source} ({e.strerror})") from None


class Modality:
    """One kind of item. Subclass it (or instantiate it with keyword arguments for
    a simple one) and register the instance in :data:`MODALITIES`.

    Attributes:
        name: the registry name, also the manifest column and the field name.
        is_file: a manifest cell is a path relative to the manifest (default: the
            cell is the item's value itself, as for text).
        suffixes: file name endings of this modality in a folder being indexed,
            lower case with the dot.
        shard_keys: WebDataset member extensions and Parquet columns holding it,
            preferred first; a member named after the modality itself
            (``KEY.image``) is always read.
        default_tower: the registered tower a new model gets for it when the
            config names none (e.g. when binding it).
        preview_kind: how a page shows its :meth:`preview` (``""``: no preview): the
            small rendering of a grid card or a report (a clip's poster is an image).
        player_kind: how a page shows an item's whole file in its detail view (the
            kind of :meth:`player`: ``"image"``, ``"audio"``, ``"video"`` …; ``""``: the
            page shows the preview there too).
        uploadable: a server takes uploaded files of it as queries.
        text_like: its manifest cells are free text (length-limited like
            captions); zero-shot's class names are of such a modality.
    """

    name: str = ""
    is_file: bool = False
    suffixes: tuple[str, ...] = ()
    shard_keys: tuple[str, ...] = ()
    default_tower: str = ""
    preview_kind: str = ""
    player_kind: str = ""
    #: suffix → MIME type of the files :meth:`player` hands out (``mimetypes``' guess for others)
    mime_types: dict[str, str] = {}
    uploadable: bool = False
    text_like: bool = False

    def __init__(self, name: str | None = None, *, is_file: bool | None = None,
                 check: Callable[[Any], Any] | None = None, default_tower: str | None = None,
                 suffixes: tuple[str, ...] | None = None) -> None:
        # keyword form of earlier versions: Modality("x", is_file=True, check=f, ...)
        for key, value in (("name", name), ("is_file", is_file), ("default_tower", default_tower),
                           ("suffixes", suffixes)):
            if value is not None:
                setattr(self, key, value)
        if check is not None:
            self._check_fn = check

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # -- reading -----------------------------------------------------------------
    def check(self, path: Any) -> ItemCheck | str | None:
        """Why the file at ``path`` cannot be used (a string or an :class:`ItemCheck`
        with notes), or None. Runs the decoding :meth:`decode` runs, so an item that
        passes here loads later. Called on worker threads when a manifest is read."""
        fn = getattr(self, "_check_fn", None)
        if fn is not None:
            return fn(path)
        if self.is_file and type(self).decode is Modality.decode:
            return None  # nothing to check but that the file is there (read whole otherwise)
        try:
            self.decode(path, where=str(path) if self.is_file else "")
        except DataError as e:
            return str(e)
        return None

    def decode(self, source: str | Path | bytes, *, where: str = "",
               max_pixels: int | None = None) -> Any:
        """A path (file modalities), a cell's value (others) or the bytes of a file
        (a shard member, an upload) → the item a tower's ``preprocess_one`` takes.

        Bounded cost: reads at most what the item holds within the plug-in's
        limits; ``max_pixels`` caps a decoded picture's size where the modality
        has pixels (:class:`TooLarge` beyond). Raises
        :class:`~jointspace.errors.DataError` naming ``where`` and what is wrong.
        The default returns file bytes / the value unchanged."""
        if isinstance(source, bytes) or self.is_file:
            return _read(source, where)
        return source

    def check_value(self, value: Any) -> str | None:
        """Why an in-memory item (not a path) given as a query cannot be used, or None:
        for a value modality, what its :meth:`check` (its decoding) finds."""
        if self.is_file:
            return None
        found = self.check(value)
        return getattr(found, "problem", found)

    def sniff(self, head: bytes) -> bool:
        """Whether a file starting with ``head`` (its first 64 bytes or more) is of
        this modality: how an upload that names no modality is recognised."""
        return False

    def preview(self, path: str | Path, *, max_px: int = 256) -> Preview:
        """A small rendering of the file at ``path`` for reports and the page."""
        raise DataError(f"{self.name} items have no preview")

    def player(self, path: str | Path, *, max_bytes: int = PLAYER_BYTES) -> Preview:
        """The whole file at ``path`` for a page's element of :attr:`player_kind` (an
        ``<audio>`` or ``<video>`` player, an ``<img>``), its type from its suffix
        (:attr:`mime_types`, else ``mimetypes``);
        :class:`TooLarge` above ``max_bytes``. A modality without a player refuses."""
        if not self.player_kind:
            raise DataError(f"{self.name} items have no player")
        path = Path(path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise DataError(f"{self.name} file not found: {path}") from None
        if size > max_bytes:
            raise TooLarge(f"{path.name} is {size} bytes; {self.name} files are played up to "
                           f"{max_bytes} bytes")
        return Preview(self.player_kind, self.mime_type(path), path.read_bytes())

    def mime_type(self, path: str | Path) -> str:
        """The MIME type of a file of this modality, from its suffix (:attr:`mime_types`,
        else ``mimetypes``' guess, else ``application/octet-stream``)."""
        path = Path(path)
        return (self.mime_types.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
                or "application/octet-stream")

    def sample(self, folder: Path) -> Any:
        """A tiny item of this modality, taken the way a query's item is, so that a server
        can encode one before it reports ready (its decoder's imports and first-call costs
        paid then, not by the first real query): a file written into ``folder`` for a file
        modality, else a value. None (the default): the plug-in has none, and the modality
        is not warmed up."""
        return None

    def shard_member(self, path: str | Path) -> str:
        """The member extension a file is exported under: its own suffix when the
        shard readers know it, else the modality's name."""
        ext = Path(path).suffix.lower().lstrip(".")
        return ext if ext in self.shard_keys else self.name


MODALITIES: Registry[Modality] = Registry("modality")


def decode_with_limits(plugin: Modality, source: Any, *, where: str = "", **limits: Any) -> Any:
    """``plugin.decode(source, where=where, …)`` with those of ``limits`` (not None) that
    its ``decode`` takes as keywords — a text's ``max_chars``, a picture's ``max_pixels``
    or ``min_size`` —, so a plug-in's decode need declare only the bounds it has."""
    params = inspect.signature(plugin.decode).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        takes = set(limits)
    else:
        takes = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return plugin.decode(source, where=where, **{k: v for k, v in limits.items()
                                                 if v is not None and k in takes})


def modality_for_suffix(path: str | Path) -> Modality | None:
    """The file modality whose :attr:`~Modality.suffixes` hold ``path``'s ending."""
    suffix = Path(path).suffix.lower()
    for name in MODALITIES.names():
        m = MODALITIES.get(name)
        if m.is_file and suffix in m.suffixes:
            return m
    return None


def modality_for_shard_key(key: str) -> Modality | None:
    """The modality a WebDataset member extension or Parquet column holds, or None."""
    key = key.lower()
    for name in MODALITIES.names():
        m = MODALITIES.get(name)
        if key == m.name or key in m.shard_keys:
            return m
    return None


def sniff(head: bytes) -> Modality | None:
    """The uploadable modality whose :meth:`~Modality.sniff` recognises ``head``, or None."""
    for name in MODALITIES.names():
        m = MODALITIES.get(name)
        if m.uploadable and m.sniff(head):
            return m
    return None
