"""Shards: WebDataset tar files and Parquet files of paired samples, read as streams.

A shard *source* is a tar or Parquet file, a glob (``shards/*.tar``), a brace
range (``shards/{00000..00099}.tar``) or a folder of ``.parquet`` files.
Listing a source opens no shard, so a run over thousands of them starts at once.

Which member or column holds which modality is the modality plug-ins' to say
(:attr:`~jointspace.modalities.Modality.shard_keys`, preferred first, and the
modality's own name; :func:`shard_keys`):

- **WebDataset** (img2dataset's ``--output_format webdataset``): consecutive tar
  members sharing a key form a sample — with the built-in plug-ins
  ``KEY.jpg|jpeg|png|webp|image`` (image), ``KEY.txt|caption|text`` (text),
  ``KEY.wav|flac|ogg|audio`` (audio) — and ``KEY.json`` (metadata: ``label``,
  ``group`` and anything else). The key is the member path up to the first dot
  of its basename, folders included (``a/0001.jpg`` → ``a/0001``).
- **Parquet** (img2dataset's ``--output_format parquet``): one row per sample —
  a file modality's item as bytes (raw or a ``{"bytes": …}`` struct) or a path
  (relative to the shard's folder) in the first of its columns the file has
  (``jpg``/``png``/``webp``/``image`` …), a value modality's in its column
  (``caption``/``text`` …), ``key``, ``label``, ``group``; other columns are
  metadata.

Samples come out *raw* (:class:`RawSample`: a file modality's bytes or path, a
value modality's string — a member of one is read as UTF-8, the form a manifest
cell has); decoding and checking them is :mod:`jointspace.data.stream`'s job.
"""
from __future__ import annotations

import glob
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import DataError
from ..fileio import atomic_path
from ..modalities import MODALITIES, Modality, modality_for_shard_key

#: shard keys this module's code names: the Parquet column :class:`ShardWriter` writes a
#: caption into (:data:`CAPTION_COLUMN`) is part of the shard format — img2dataset's name
#: for it, used by the shards earlier versions wrote and by the tools that read them
USER_FACING_DEFAULTS = ("caption",)
#: the Parquet column of a value modality whose plug-in reads it (the built-in text's)
CAPTION_COLUMN = "caption"
SHARD_SUFFIXES = (".tar", ".parquet")
KEY_COLUMNS = ("key", "id")  # a Parquet shard's column of sample keys, the first it has


def shard_keys() -> dict[str, tuple[str, ...]]:
    """Each registered modality → the member extensions and Parquet columns that hold it,
    preferred first, then its own name (a member ``KEY.<name>`` is always read)."""
    return {m: tuple(dict.fromkeys((*MODALITIES.get(m).shard_keys, m))) for m in MODALITIES.names()}


class ShardError(DataError):
    """A whole shard cannot be read (missing, not a tar/Parquet file, truncated)."""


@dataclass
class RawSample:
    """One sample as stored: ``items`` maps a modality to the bytes of a file modality's
    member or column, its path (a Parquet column holding paths), or a value modality's
    string (a text); ``index`` is its place in the shard."""

    shard: str
    key: str
    index: int
    items: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # found while reading (a malformed json member …)


def is_shard_source(spec: str | Path) -> bool:
    """Whether ``--data`` names shards rather than a manifest."""
    text = str(spec)
    if any(c in text for c in "*?[{"):
        return True
    path = Path(text)
    return path.suffix.lower() in SHARD_SUFFIXES or (path.is_dir() and any(path.glob("*.parquet")))


def _braces(text: str) -> list[str]:
    """``a{00..02}b`` → a00b a01b a02b (zero padding kept); ``{x,y}`` lists too."""
    match = re.search(r"\{([^{}]*)\}", text)
    if not match:
        return [text]
    head, tail, body = text[:match.start()], text[match.end():], match.group(1)
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        lo, hi = numeric.groups()
        width = len(lo) if lo.startswith("0") else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    return [out for option in options for out in _braces(head + option + tail)]


def list_shards(spec: str | Path) -> list[str]:
    """The shard files a source names, in a stable order (no shard is opened)."""
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        found = sorted(str(p) for p in path.glob("*.parquet"))
        kind = "folder"
    elif "{" in text:
        found = _braces(text)  # listed even if missing: the stream reports those when it gets there
        kind = "brace range"
    elif any(c in text for c in "*?["):
        found = sorted(glob.glob(text))
        kind = "glob"
    else:
        if not path.is_file():
            raise DataError(f"shard not found: {text}")
        found, kind = [text], "file"
    if not found:
        raise DataError(f"no shards match {text} ({kind})")
    suffixes = {Path(s).suffix.lower() for s in found}
    if len(suffixes) != 1 or not suffixes <= set(SHARD_SUFFIXES):
        raise DataError(f"{text}: shards must all be .tar or all be .parquet, found "
                        f"{', '.join(sorted(suffixes))}")
    return found


def read_shard(path: str) -> Iterator[RawSample]:
    """The samples of one shard, in stored order. Raises :class:`ShardError` if the shard
    cannot be opened; a shard broken part-way yields what came before, then raises."""
    if not Path(path).is_file():
        raise ShardError(f"shard not found: {path}")
    if path.lower().endswith(".parquet"):
        yield from _read_parquet(path)
    else:
        yield from _read_tar(path)


def sample_key(member: str) -> tuple[str, str]:
    """A tar member's ``(key, extension)`` by WebDataset's convention: the key is the
    member path up to the first dot of its basename, folders included, so ``a/0001.jpg``
    and ``b/0001.jpg`` are the samples ``a/0001`` and ``b/0001``. A leading ``./`` is
    dropped; a hidden file (basename starting with a dot) gives the key ``""``."""
    while member.startswith("./"):
        member = member[2:]
    folder, _, name = member.rpartition("/")
    stem, _, ext = name.partition(".")
    if not stem:
        return "", ext
    return (f"{folder}/{stem}" if folder else stem), ext


def _read_tar(path: str) -> Iterator[RawSample]:
    try:
        archive = tarfile.open(path, "r|*")  # streaming: members in order, nothing held back
    except (tarfile.TarError, OSError) as e:
        raise ShardError(f"shard cannot be opened as a tar file ({e}): {path}") from None
    sample: RawSample | None = None
    index = 0
    try:
        for member in archive:
            if not member.isfile():
                continue
            key, ext = sample_key(member.name)
            if not key:
                continue
            if sample is None or key != sample.key:
                if sample is not None:
                    yield sample
                    index += 1
                sample = RawSample(path, key, index)
            data = archive.extractfile(member).read()
            _add(sample, ext.lower(), data)
    except (tarfile.TarError, OSError, EOFError) as e:
        if sample is not None:
            sample.problem = sample.problem or f"tar member cannot be read ({e})"
            yield sample
        raise ShardError(f"shard is broken after {index} samples ({type(e).__name__}: {e}): "
                         f"{path}") from None
    finally:
        end = archive.offset  # where the member that could not be read would have begun
        archive.close()
    if sample is not None:
        yield sample
    if not _ends_cleanly(path, end):
        # streaming tarfile stops quietly at a truncated or garbled header: a shard cut at
        # a member boundary would otherwise lose its tail without a word
        raise ShardError(f"shard is broken after {index + (sample is not None)} samples (no "
                         f"end-of-archive marker at byte {end}: truncated or corrupt): {path}")


def is_compressed(path: str | Path) -> bool:
    """Whether a tar file is compressed (gzip, bzip2 or xz): read as a stream only."""
    with open(path, "rb") as f:
        head = f.read(6)
    return head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head == b"\xfd7zXZ\x00"


def _ends_cleanly(path: str, end: int) -> bool:
    """Whether an uncompressed tar has its end-of-archive marker (a zero block) at ``end``;
    a compressed one is checked by its decompressor, which raises on a cut stream."""
    if is_compressed(path):
        return True
    with open(path, "rb") as f:
        f.seek(end)
        return f.read(512) == bytes(512)


def _add(sample: RawSample, ext: str, data: bytes) -> None:
    if ext == "json":
        try:
            meta = json.loads(data.decode("utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (UnicodeDecodeError, ValueError) as e:
            sample.problem = f"{sample.key}.json is not a JSON object ({e})"
            return
        sample.label = _str(meta.pop("label", None)) or sample.label
        sample.group = _str(meta.pop("group", None)) or sample.group
        sample.meta.update(meta)
        return
    plugin = modality_for_shard_key(ext)
    if plugin is None:
        sample.meta.setdefault("ignored", []).append(ext)
    elif not plugin.is_file:  # a value (a text …): its UTF-8, as a manifest cell holds it
        try:
            sample.items[plugin.name] = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            sample.problem = f"{sample.key}.{ext} is not UTF-8 text ({e.reason} at byte {e.start})"
    else:
        sample.items[plugin.name] = data


def _str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def parquet_sample_key(value: Any, shard: str | Path, row: int) -> str:
    """The key of a Parquet shard's row: its key column's value (:data:`KEY_COLUMNS`), else
    ``STEM:ROW`` (the row's place in the shard)."""
    return _str(value) or f"{Path(shard).stem}:{row}"


def _read_parquet(path: str) -> Iterator[RawSample]:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError …
        raise ShardError(f"shard cannot be opened as a Parquet file ({e}): {path}") from None
    names = file.schema_arrow.names
    columns = {m: next((c for c in keys if c in names), None) for m, keys in shard_keys().items()}
    is_file = {m: MODALITIES.get(m).is_file for m in columns}
    key_col = next((c for c in KEY_COLUMNS if c in names), None)
    used = {c for c in columns.values() if c} | {key_col, "label", "group"}
    base = Path(path).parent
    index = 0
    try:
        for batch in file.iter_batches(batch_size=256):
            for row in batch.to_pylist():
                sample = RawSample(path, parquet_sample_key(row.get(key_col), path, index), index,
                                   label=_str(row.get("label")), group=_str(row.get("group")),
                                   meta={k: v for k, v in row.items() if k not in used and v is not None
                                         and isinstance(v, (str, int, float, bool))})
                for modality, column in columns.items():
                    value = row.get(column) if column else None
                    if isinstance(value, dict):  # the {"bytes", "path"} struct of HF datasets
                        value = value.get("bytes") or value.get("path")
                    if value is None or value == "":
                        continue
                    if is_file[modality] and isinstance(value, str):
                        # a path, relative to the shard's folder (as a manifest's paths are
                        # to the manifest's), not to the working directory
                        value = str(base / value)
                    sample.items[modality] = value
                yield sample
                index += 1
    except Exception as e:
        raise ShardError(f"shard is broken after {index} samples ({type(e).__name__}: {e}): "
                         f"{path}") from None


# -- writing ---------------------------------------------------------------------------
@dataclass
class ShardWriter:
    """Writes samples into numbered shards of ``shard_size`` samples each:
    ``out/{00000..}.tar`` or ``.parquet``. Each shard is written under a temporary
    name and renamed when complete, so a reader never sees half a shard."""

    out: Path
    format: str
    shard_size: int
    written: list[Path] = field(default_factory=list)
    _pending: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.format not in ("webdataset", "parquet"):
            raise DataError(f"format must be webdataset or parquet, not {self.format!r}")
        if self.shard_size < 1:
            raise DataError(f"shard size must be at least 1, got {self.shard_size}")
        self.out = Path(self.out)
        # numbering starts at 00000: shards already there would be read along with the new
        old = sorted(p.name for p in self.out.glob("*") if p.suffix in SHARD_SUFFIXES) \
            if self.out.is_dir() else []
        if old:
            raise DataError(f"{self.out} already holds shards ({', '.join(old[:3])}"
                            f"{' …' if len(old) > 3 else ''}): write into an empty folder, or "
                            "delete them first")
        self.out.mkdir(parents=True, exist_ok=True)

    def add(self, key: str, items: dict[str, tuple[str, bytes | str]], meta: dict[str, Any]) -> None:
        """``items``: modality → (member extension, bytes or text); a Parquet shard names
        its column after the extension (a caption's: :data:`CAPTION_COLUMN`)."""
        self._pending.append({"key": key, "items": items, "meta": meta})
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        suffix = ".tar" if self.format == "webdataset" else ".parquet"
        final = self.out / f"{len(self.written):05d}{suffix}"
        with atomic_path(final) as tmp:  # a kill mid-write leaves no half shard
            (self._write_tar if self.format == "webdataset" else self._write_parquet)(tmp)
        self.written.append(final)
        self._pending = []

    def _write_tar(self, path: Path) -> None:
        with tarfile.open(path, "w") as tar:
            for sample in self._pending:
                members = [(ext, data) for ext, data in sample["items"].values()]
                if sample["meta"]:
                    members.append(("json", json.dumps(sample["meta"])))
                for ext, data in members:
                    raw = data.encode("utf-8") if isinstance(data, str) else data
                    info = tarfile.TarInfo(f"{sample['key']}.{ext}")
                    info.size = len(raw)
                    tar.addfile(info, io.BytesIO(raw))

    def _write_parquet(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns: dict[str, list[Any]] = {"key": [s["key"] for s in self._pending]}
        exts = {m: ext for s in self._pending for m, (ext, _) in s["items"].items()}
        for modality, ext in exts.items():
            name = _column(MODALITIES.get(modality) if modality in MODALITIES else None, ext)
            columns[name] = [s["items"].get(modality, (None, None))[1] for s in self._pending]
        for name in sorted({k for s in self._pending for k in s["meta"]}):
            columns[name] = [_str(s["meta"].get(name)) for s in self._pending]
        pq.write_table(pa.table(columns), path)


def _column(plugin: Modality | None, ext: str) -> str:
    """The Parquet column of a member extension: the caption column for a value modality
    whose plug-in reads it (img2dataset's layout), else the extension."""
    if plugin is not None and not plugin.is_file and CAPTION_COLUMN in plugin.shard_keys:
        return CAPTION_COLUMN
    return ext


def sample_count(shards: Sequence[str]) -> int | None:
    """Samples in Parquet shards, read from their footers (None for tar shards)."""
    if not shards or not shards[0].lower().endswith(".parquet"):
        return None
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(s).metadata.num_rows for s in shards if Path(s).is_file())


__all__ = ["CAPTION_COLUMN", "KEY_COLUMNS", "RawSample", "ShardError", "ShardWriter", "is_compressed",
           "is_shard_source", "list_shards", "parquet_sample_key", "read_shard", "sample_key", "sample_count",
           "shard_keys"]
