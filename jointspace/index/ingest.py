"""Ingest: embed a folder of files or a manifest into a collection, incrementally and crash-safely.

The steps, in batches: hash each input (file bytes, text, label); skip those
whose hash the catalog already holds; check and decode the rest (bad ones are
quarantined with their reason, never fatal); embed the good ones; write the
batch — items, vectors and quarantine entries — in one catalog transaction.
An item is counted as indexed only after that commit, so ``kill -9`` at any
moment loses nothing that was reported, and the catalog's unique keys make a
re-run skip (or update) what was written, never duplicate it. The vector
stores are brought up to date and persisted at the end (:meth:`Collection.sync`);
a crash before that is repaired by the next open, which replays the catalog.
"""
from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..data.manifest import ItemCheck, column_advice, manifest_columns, read_manifest
from ..errors import DataError
from ..fileio import atomic_write_json, kill_point
from ..modalities import MODALITIES
from ..progress import logger, progress
from .catalog import ItemRow, Quarantined, item_text
from .collection import INFO_FILE, Collection, WriterLock, check_model_arg
from .ingest_vectors import embed_info, ingest_embeddings
from .keys import content_key, rekey_line_keys

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl")
MAX_TEXT_FILE_BYTES = 1 << 20


@dataclass
class Candidate:
    """An input found in a source, before it is checked: its key and one item per modality."""

    key: str
    modality: str
    fields: dict[str, Any]
    path: Path | None = None
    label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    by_content: bool = False  # a manifest row without an id (see :mod:`.keys`)


@dataclass
class IngestReport:
    """What one ingest did (counts of items) and how long it took."""

    source: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    problems: list[Quarantined] = field(default_factory=list)

    @property
    def indexed(self) -> int:
        return self.added + self.updated

    def summary(self) -> str:
        rate = self.indexed / self.seconds if self.seconds else 0.0
        return (f"{self.source}: {self.added} added, {self.updated} updated, {self.unchanged} "
                f"unchanged, {self.deleted} deleted, {self.quarantined} quarantined "
                f"({self.seconds:.1f} s, {rate:.0f} items/s)")


def scan_folder(folder: Path, modalities: Sequence[str]) -> list[Candidate]:
    """Every file under ``folder`` (recursively, sorted) whose suffix the plug-in of one of
    ``modalities`` claims (:attr:`~jointspace.modalities.Modality.suffixes`). A file of a
    modality whose items are values (a ``.txt`` of text) is read when it is checked: its
    content is the value."""
    by_suffix = {s: m for m in modalities for s in MODALITIES.get(m).suffixes}
    found, ignored, keys = [], 0, set()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if str(path.resolve()) in keys:  # a link to a file already found: one item, not two
            logger.info("%s is a link to a file indexed already; indexed once", path)
            continue
        keys.add(str(path.resolve()))
        modality = by_suffix.get(path.suffix.lower())
        if modality is None:
            ignored += 1
            continue
        value = path if MODALITIES.get(modality).is_file else None  # a value: read when checked
        found.append(Candidate(str(path.resolve()), modality, {modality: value}, path.resolve(),
                               meta={"name": path.name, "folder": str(path.parent.relative_to(folder))}))
    if ignored:
        logger.info("%s: %d files of no indexed kind ignored (indexed suffixes: %s)", folder,
                    ignored, " ".join(sorted(by_suffix)))
    if not found:
        raise DataError(f"no files to index under {folder} (looked for {' '.join(sorted(by_suffix))})")
    return found


def scan_manifest(path: Path, modalities: Sequence[str], quarantine_dir: Path,
                  columns: Mapping[str, str] | None = None,
                  items: str | None = None) -> tuple[list[Candidate], list[Quarantined]]:
    """The rows of a manifest: one candidate per row with an item per modality column
    present, keyed by its id or, without one, by its content (:mod:`.keys`); rows the
    reader rejects are returned as quarantined. The items are of modality ``items`` (its
    column is required; the row's other columns are the item's other fields), by default
    of the first of ``modalities`` (the model's order) whose items are files: a manifest
    naming a clip and its poster gives the poster unless ``items`` names the clip's."""
    mapped = {**{m: m for m in modalities}, **(columns or {})}
    header = manifest_columns(path)
    present = [m for m in modalities if mapped[m] in header]
    if not present:
        raise DataError(f"manifest {path} has no column for {', '.join(modalities)} "
                        f"(columns: {', '.join(header) or 'none'}) — "
                        + column_advice(path, header, {m: mapped[m] for m in modalities}))
    files = [m for m in present if MODALITIES.get(m).is_file]
    primary = items or (files or present)[0]
    if primary not in present:
        raise DataError(f"manifest {path} has no column {mapped.get(primary, primary)!r} for its "
                        f"{primary} items (columns: {', '.join(header) or 'none'})")
    data = read_manifest(path, required=(primary,), optional=tuple(m for m in present if m != primary),
                         check_files=False, columns=columns, quarantine_dir=quarantine_dir)
    source = str(path.resolve())
    extra = _extra_columns(path, {mapped.get(m, m) for m in modalities} | {
        (columns or {}).get(f, f) for f in ("id", "label", "group")})
    found, seen = [], {}
    for r in data.records:
        fields = {m: (path.parent / v if MODALITIES.get(m).is_file and m != primary else v)
                  for m, v in r.fields.items() if m in present}
        item_path = fields[primary] if MODALITIES.get(primary).is_file else None
        own_id = r.id != f"{path.stem}:{r.line}"  # else the reader's stand-in: the line moves
        key = f"{source}#{r.id}" if own_id else content_key(
            source, fields, lambda m: MODALITIES.get(m).is_file, seen)
        found.append(Candidate(key, primary, fields,
                               Path(item_path).resolve() if item_path else None, r.label,
                               {**extra.get(r.line, {}), **({"id": r.id} if own_id else {}),
                                **({"group": r.group} if r.group else {})}, by_content=not own_id))
    bad = [Quarantined(f"{source}#line{b.line}", source, None, b.reason) for b in data.bad_rows]
    return found, bad


def _extra_columns(path: Path, used: set[str]) -> dict[int, dict[str, str]]:
    """line → the row's other columns (user metadata: filterable with ``where``)."""
    from ..data.manifest import read_rows

    _, rows = read_rows(path)
    return {line: {k: v for k, v in row.items() if k and k not in used and v not in (None, "")}
            for line, row, error in rows if row is not None and not error}


def content_hash(candidate: Candidate) -> str:
    """blake2b of what decides an item's vectors and metadata (file bytes, texts, label)."""
    h = hashlib.blake2b(digest_size=16)
    for modality, value in sorted(candidate.fields.items()):
        h.update(modality.encode() + b"\0")
        if value is None:
            value = candidate.path
        if isinstance(value, Path):
            try:
                with open(value, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            except OSError as e:
                h.update(f"unreadable: {e}".encode())
        else:
            h.update(str(value).encode())
    h.update(f"\0{candidate.label}\0{sorted(candidate.meta.items())}".encode())
    return h.hexdigest()


def _read_value_file(path: Path, modality: str) -> str:
    """The content of a folder's file of a value modality (a ``.txt``): UTF-8, stripped,
    at most :data:`MAX_TEXT_FILE_BYTES`."""
    if path.stat().st_size > MAX_TEXT_FILE_BYTES:
        raise DataError(f"{modality} file is larger than {MAX_TEXT_FILE_BYTES} bytes: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig").strip()
    except UnicodeDecodeError as e:
        raise DataError(f"{modality} file is not UTF-8 ({e.reason} at byte {e.start}): {path}") from None
    if not text:
        raise DataError(f"{modality} file is empty: {path}")
    return text


def check_candidate(candidate: Candidate) -> str | None:
    """Why the candidate cannot be indexed, or None, as each modality's plug-in checks it
    (a file its ``check``); reads a folder's files of value modalities into ``fields``."""
    for modality, value in candidate.fields.items():
        spec = MODALITIES.get(modality)
        try:
            if value is None:  # a folder's file of a value modality (a .txt)
                candidate.fields[modality] = _read_value_file(candidate.path, modality)
            elif spec.check is not None:
                found = spec.check(Path(value) if spec.is_file else value)
                problem = found.problem if isinstance(found, ItemCheck) else found
                if problem:
                    return problem
        except (OSError, DataError) as e:
            return str(e)
    return None


def index_source(collection: str | Path, model_dir: str | Path, source: str | Path, *,
                 batch_size: int = 256, delete_missing: bool = False, device: str | None = None,
                 store: str = "faiss", store_params: Mapping[str, Any] | None = None,
                 prefix_dim: int | None = None, columns: Mapping[str, str] | None = None,
                 on_commit: Callable[[list[str]], None] | None = None,
                 items: str | None = None) -> IngestReport:
    """Embed a folder (images, audio, text files) or a manifest into ``collection``; or
    take the vectors of a ``jointspace embed`` output folder as they are.

    Creates the collection on first use (``store``, ``store_params`` and
    ``prefix_dim`` apply then); later runs must use the same model. Unchanged
    inputs are skipped by content hash, changed ones updated in place, and with
    ``delete_missing`` items of this source that are gone are deleted.
    ``on_commit`` is called with the keys of each batch once it is durable.
    ``items`` names the modality of the items: a folder's files of it only, a manifest's
    column of it (its other columns are fields of each item: a clip's poster and captions);
    default: every file a folder holds of the model's modalities, a manifest's first file
    column of the model's modalities in the model's order. A new collection searches it
    by default.
    """
    started = time.perf_counter()
    source = Path(source)
    if not source.exists():
        raise DataError(f"index source not found: {source}")
    vectors = embed_info(source) if source.is_dir() else None  # `jointspace embed` output
    check_model_arg(collection, model_dir)  # before reading the model's config
    if items is not None:
        _check_items(model_dir, items, vectors)
    col = Collection.create(collection, model_dir, store=store, store_params=store_params,
                            prefix_dim=prefix_dim, device=device,
                            modalities=[vectors["modality"]] if vectors else
                            _source_modalities(model_dir, source, columns, items))
    with WriterLock(col.path):
        col.record_model_dir(locked=True)  # the model moved: later commands find it here
        if vectors:
            report = IngestReport(str(source.resolve()))
            ingest_embeddings(col, source.resolve(), report, delete_missing, on_commit)
        else:
            report = _ingest(col, source.resolve(), batch_size, delete_missing, columns, on_commit,
                             items)
        col.sync()
    report.seconds = time.perf_counter() - started
    logger.info("%s", report.summary())
    return report


def _check_items(model_dir: str | Path, items: str, vectors: dict | None) -> None:
    """That ``items`` is a modality of the model (and of embed's output, for one)."""
    from ..model_io import read_config

    model = list(read_config(model_dir).towers)
    if items not in model or items not in MODALITIES:
        raise DataError(f"items of {items!r} cannot be indexed: the model encodes {', '.join(model)}")
    if vectors is not None and vectors["modality"] != items:
        raise DataError(f"this embed output holds {vectors['modality']} vectors, not {items}")


def _source_modalities(model_dir: str | Path, source: Path, columns: Mapping[str, str] | None,
                       items: str | None = None) -> list[str]:
    """The model's modalities the source holds, the items' first (a new collection's
    default target)."""
    from ..model_io import read_config

    model = list(read_config(model_dir).towers)
    if items is not None and source.is_dir():
        return [items]
    if source.is_dir():
        suffixes = {p.suffix.lower() for p in source.rglob("*") if p.is_file()}
        found = [m for m in model if set(MODALITIES.get(m).suffixes) & suffixes]
    else:
        mapped = {**{m: m for m in model}, **(columns or {})}
        found = [m for m in model if mapped[m] in manifest_columns(source)]
    files = [m for m in found if MODALITIES.get(m).is_file]
    ordered = files + [m for m in found if m not in files] or model
    return [items] + [m for m in ordered if m != items] if items in ordered else ordered


def _ingest(col: Collection, source: Path, batch_size: int, delete_missing: bool,
            columns: Mapping[str, str] | None,
            on_commit: Callable[[list[str]], None] | None, items: str | None = None) -> IngestReport:
    modalities = list(col.model.modalities)
    new = [m for m in _source_modalities(col.model_dir, source, columns, items)
           if m not in col.modalities]
    if new:
        col.info["modalities"] += new
        atomic_write_json(col.path / INFO_FILE, col.info)
    report = IngestReport(str(source))
    if source.is_dir():
        candidates, rejected = scan_folder(source, [items] if items else modalities), []
    else:
        candidates, rejected = scan_manifest(source, modalities, col.path, columns, items)
    # what may be served: the folder indexed, or a manifest's folder and those of its files
    # (a symlink inside a folder that points out of it is still refused: paths are resolved)
    col.add_roots([source] if source.is_dir() else
                  [source.parent] + sorted({c.path.parent for c in candidates if c.path}))
    if not source.is_dir():  # rows an earlier version keyed by line: renamed, not duplicated
        rekey_line_keys(col.catalog, str(source), source.stem, candidates, content_hash)
    held = col.catalog.item_hashes(str(source))
    stuck = col.catalog.quarantine_hashes(str(source))  # an input that went bad may be in both
    known = {**held, **stuck}
    indexed = set(held)
    if rejected:
        fresh = [q for q in rejected if q.key not in known]
        if fresh:
            col.write([], fresh)
        report.quarantined += len(fresh)
        report.problems += rejected
    pending: list[tuple[Candidate, str]] = []
    recovered: list[str] = []
    bar = progress(candidates, desc=f"index {source.name}", unit="item")
    for candidate in bar:
        digest = content_hash(candidate)
        if digest in (held.get(candidate.key), stuck.get(candidate.key)):
            report.unchanged += 1
            if stuck.get(candidate.key, digest) != digest:  # reads as its indexed item again
                recovered.append(candidate.key)
            continue
        pending.append((candidate, digest))
        if len(pending) >= batch_size:
            _write_batch(col, str(source), pending, known, indexed, report, on_commit)
            pending = []
    if pending:
        _write_batch(col, str(source), pending, known, indexed, report, on_commit)
    if recovered:
        col.catalog.release(recovered)
    if delete_missing:
        seen = {c.key for c in candidates} | {q.key for q in rejected}
        gone = [k for k in known if k not in seen]
        kill_point("delete")
        if gone:
            report.deleted = col.delete(gone)
    return report


def _write_batch(col: Collection, source: str, pending: list[tuple[Candidate, str]],
                 known: dict[str, str], indexed: set[str], report: IngestReport,
                 on_commit: Callable[[list[str]], None] | None) -> None:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(lambda pair: check_candidate(pair[0]), pending))
    good = [(c, d) for (c, d), p in zip(pending, problems) if p is None]
    # an item indexed before stays as it was: a read error may pass, and a bad version
    # must not take away a good one; the quarantine entry says why it was not updated
    bad = [Quarantined(c.key, source, str(c.path) if c.path else None,
                       f"{p} (the version indexed before is kept)" if c.key in indexed else p, d)
           for (c, d), p in zip(pending, problems) if p is not None]
    vectors: dict[int, dict[str, Any]] = {i: {} for i in range(len(good))}
    for modality in col.modalities:
        rows = [i for i, (c, _) in enumerate(good) if modality in c.fields]
        if rows:
            encoded = col.model.encode(modality, [good[i][0].fields[modality] for i in rows])
            for i, v in zip(rows, encoded):
                vectors[i][modality] = v
    kill_point("encoded")
    items = [ItemRow(c.key, source, c.modality, d, vectors[i],
                     path=str(c.path) if c.path else None, text=item_text(c.fields),
                     label=c.label, meta=c.meta) for i, (c, d) in enumerate(good)]
    col.write(items, bad)
    kill_point("written")
    for c, d in good:
        if c.key in indexed:
            report.updated += 1
        else:
            report.added += 1
        known[c.key] = d
        indexed.add(c.key)
    for q in bad:
        logger.warning("quarantined %s: %s", q.path or q.key, q.reason)
    report.quarantined += len(bad)
    report.problems += bad
    if on_commit is not None:
        on_commit([c.key for c, _ in good])


__all__ = ["Candidate", "IngestReport", "build_collection", "check_candidate", "content_hash", "index_source",
           "scan_folder", "scan_manifest"]


def build_collection(model_dir: str | Path, source: str | Path, collection: str | Path,
                     **kwargs: Any) -> Collection:
    """:func:`index_source`, then open the collection for searching."""
    index_source(collection, model_dir, source, **kwargs)
    return Collection.open(collection, device=kwargs.get("device"))
