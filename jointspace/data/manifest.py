"""Reading and validating paired-data manifests (CSV or JSONL).

A manifest has one row per item: one column per *field* a run reads (a
modality such as ``image`` or ``text``, or ``modality@column`` such as
``text@paraphrase``) and optional ``id``, ``label``, ``group``; file paths are
relative to the manifest, and other column names can be mapped onto fields
(``columns={"image": "filepath"}``). What a cell means and how it is checked
is its modality's (:class:`jointspace.towers.base.Modality`), so a new
modality needs no change here. Files are read as UTF-8, with or without
a byte-order mark (Excel's "CSV UTF-8"). Every row is checked (missing or
unreadable file, truncated image, empty or over-long text, duplicate id); a
modality's check may also return an :class:`ItemCheck` whose notes (a
resampled or downmixed sound …) are kept in :attr:`Manifest.notes` and logged
once per kind. A bad row is, by default, skipped, counted and
written with its reason to a quarantine file; with ``on_bad_row="fail"`` the
first bad row raises :class:`~jointspace.errors.BadRowError` naming the file,
line and problem. Nothing is dropped silently.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

from ..config import column_of, modality_of
from ..errors import BadRowError, DataError
from ..fileio import atomic_write_text
from ..modalities import MODALITIES, ItemCheck  # noqa: F401 (ItemCheck re-exported)
from ..modalities.image import check_image  # noqa: F401 (re-exported)
from ..progress import logger, progress

OnBadRow = Literal["skip", "fail"]
META_FIELDS = ("id", "label", "group")
#: names of modalities this module's code uses: :func:`read_manifest`'s default ``required``
#: fields, the image–caption manifest of the quick start and the documented Python API
#: (``read_manifest("train.csv")``); every other use asks :data:`MODALITIES`
USER_FACING_DEFAULTS = ("image", "text")


@dataclass(frozen=True)
class Record:
    """One validated row: ``fields`` maps each field to its item (file paths
    resolved, text stripped)."""

    id: str
    line: int
    fields: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    #: rows with the same group are the same item (e.g. several captions of one
    #: image); retrieval evaluation counts any of them as a hit
    group: str | None = None

    def __getattr__(self, name: str) -> Any:
        # record.image, record.audio, record.<any registered modality>: that field's item
        if not name.startswith("_") and name in MODALITIES:
            return self.fields.get(name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str
    row: dict


@dataclass
class Manifest:
    """The valid records of a manifest plus what was quarantined and where, and the
    notes on kept rows (``(line, note)``: resampled, downmixed, truncated …)."""

    path: Path
    records: list[Record]
    bad_rows: list[BadRow] = field(default_factory=list)
    quarantine_path: Path | None = None
    notes: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def labels(self) -> list[str]:
        return [r.label for r in self.records if r.label is not None]


def _read_text(path: Path) -> str:
    """The whole manifest as text; a non-UTF-8 file is a one-line DataError with its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # -sig: drop the BOM Excel writes in "CSV UTF-8"
    except UnicodeDecodeError as e:
        raw = e.object  # positions count from after the BOM, if there is one
        line = raw.count(b"\n", 0, e.start) + 1
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        column = len(raw[line_start:e.start].decode("utf-8")) + 1  # in characters, like an editor
        raise DataError(
            f"manifest {path} is not UTF-8: byte 0x{raw[e.start]:02X} at line {line}, column "
            f"{column} cannot be decoded (another encoding, e.g. cp1252/Latin-1?); "
            "save it as UTF-8 (in Excel: 'CSV UTF-8')") from None


def manifest_columns(path: str | Path) -> list[str]:
    """The column names of a manifest (its header, or the keys of its JSON lines).

    A CSV/TSV is read only up to its header, so asking before :func:`read_manifest`
    does not parse a large file twice; JSON lines may differ in keys, so all are read.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with open(path, "rb") as f:
            first = f.readline()
        try:
            header = first.decode("utf-8-sig")
        except UnicodeDecodeError:
            return read_rows(path)[0]  # the full read names the bad byte's line and column
        cells = next(csv.reader([header], delimiter="\t" if suffix == ".tsv" else ","), [])
        return [c.strip() for c in cells if c.strip()]
    return read_rows(path)[0]


#: fields the CLI has a ``--<field>-column`` flag for
_SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'", ",": "','"}


def column_advice(path: str | Path, found: Sequence[str], wanted: Mapping[str, str]) -> str:
    """What to do about the ``wanted`` columns (field → column name) a manifest whose
    header holds ``found`` lacks, naming the likely cause: a CSV separated by another
    character (its header reads as one column), or a name that differs only in case.

    >>> column_advice("m.csv", ["Image", "Text"], {"image": "image"})
    "no 'image' column; 'Image' differs only in case — rename it or pass --image-column Image"
    """
    tsv = Path(path).suffix.lower() == ".tsv"
    if len(found) == 1:
        other = [s for s in _SEPARATORS if s in found[0] and s != ("\t" if tsv else ",")]
        if other and Path(path).suffix.lower() in (".csv", ".tsv"):
            return (f"the header has one column {found[0]!r}: is the file separated by "
                    f"{_SEPARATORS[other[0]]}? jointspace reads comma-separated .csv and "
                    "tab-separated .tsv files (in Excel: save as 'CSV UTF-8')")
    advice = []
    for f, name in wanted.items():
        if name in found:
            continue
        same = [c for c in found if c.casefold() == name.casefold()]
        if len(same) == 1:
            how = f"--{f}-column {same[0]}" if f in MODALITIES else f"columns={{{f!r}: {same[0]!r}}}"
            advice.append(f"no {name!r} column; {same[0]!r} differs only in case — rename it or pass {how}")
    if len(advice) < sum(name not in found for name in wanted.values()):
        advice.append("map other names with --image-column/--text-column (columns=...)")
    return "; ".join(advice)


def read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict | None, str | None]]]:
    """The manifest's column names and its (line number, row or None, parse error or None)."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".ndjson"):
        raise DataError(f"manifest {path} must end in .csv, .tsv or .jsonl")
    text = _read_text(path)
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        if reader.fieldnames is None:
            return [], []
        # strip header cells so "image, text" works (row keys would keep the space otherwise)
        reader.fieldnames = [c.strip() for c in reader.fieldnames]
        return [c for c in reader.fieldnames if c], list(_csv_rows(reader))
    rows = list(_jsonl_rows(text))
    names: dict[str, None] = {}  # ordered union of the keys of all rows
    for _, row, _ in rows:
        names.update(dict.fromkeys(row or ()))
    return list(names), rows


def _csv_rows(reader: csv.DictReader) -> Iterator[tuple[int, dict | None, str | None]]:
    for row in reader:
        if None in row:  # more cells than header columns
            yield reader.line_num, None, "row has more cells than the header has columns"
            continue
        yield reader.line_num, row, None


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict | None, str | None]]:
    # split on "\n" only: str.splitlines would also split inside strings at U+2028 etc.
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield line_no, None, (f"line is not valid JSON ({e.msg} at line "
                                  f"{line_no + e.lineno - 1}, column {e.colno})")
            continue
        if not isinstance(row, dict):
            yield line_no, None, "line is not a JSON object"
            continue
        yield line_no, row, None


def _modalities() -> Any:
    return MODALITIES


def _field_columns(path: Path, columns: Mapping[str, str | None] | None,
                   required: tuple[str, ...]) -> dict[str, str]:
    """jointspace field → the manifest's column name for it."""
    known = tuple(_modalities().names())
    fields = tuple(dict.fromkeys(META_FIELDS + tuple(required) + known))
    # a None value means "not mapped", so a CLI can pass its unset flags straight through
    columns = {k: v for k, v in (columns or {}).items() if v}
    unknown = sorted(set(columns) - set(fields))
    if unknown:
        raise DataError(f"columns= for manifest {path} maps unknown field(s) "
                        f"{', '.join(map(repr, unknown))}; fields are: {', '.join(fields)}")
    return {f: str(columns.get(f, column_of(f))) for f in fields}


def read_manifest(path: str | Path, *, required: tuple[str, ...] = ("image", "text"),
                  on_bad_row: OnBadRow = "skip", quarantine_dir: str | Path | None = None,
                  max_text_chars: int = 1000, check_files: bool = True,
                  columns: Mapping[str, str | None] | None = None,
                  optional: tuple[str, ...] = ()) -> Manifest:
    """Read and validate a manifest.

    ``required`` names the fields every row must have (modalities, or
    ``modality@column``); ``optional`` fields are kept when a row has them,
    unchecked (e.g. the text beside an indexed image). ``columns`` maps a field (or ``id``, ``label``,
    ``group``) to the manifest's column holding it, e.g.
    ``{"image": "filepath", "text": "caption"}``; unmapped fields use their own
    name. Returns a :class:`Manifest` of valid records. Bad rows go to
    ``<quarantine_dir>/quarantine-<manifest name>-<8 hex>.jsonl`` (one JSON
    object per row: line, reason, the original row) when ``quarantine_dir`` is
    given; the hex is a hash of the manifest's resolved path, so same-named
    manifests from different folders do not overwrite each other; with no bad
    row, an earlier read's file there is removed. If no row is valid, raises :class:`DataError` (after writing the quarantine).

    >>> m = read_manifest("data/train.csv", quarantine_dir="runs/model")  # doctest: +SKIP
    """
    path = Path(path)
    if on_bad_row not in ("skip", "fail"):
        raise DataError(f"on_bad_row must be 'skip' or 'fail', got {on_bad_row!r}")
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    field_col = _field_columns(path, columns, tuple(required) + tuple(optional))
    modality = {f: _modalities().get(modality_of(f)) for f in required}
    found, rows = read_rows(path)
    if not rows:
        raise DataError(f"manifest {path} has no rows")
    missing = [field_col[f] for f in required if field_col[f] not in found]
    if missing:
        raise DataError(f"manifest {path} lacks required column(s) {', '.join(map(repr, missing))}; "
                        f"found: {', '.join(sorted(found)) or 'none'} — "
                        + column_advice(path, found, {f: field_col[f] for f in required}))

    bad: list[BadRow] = []
    base = path.parent
    original = {line: row for line, row, _ in rows if row is not None}

    def reject(line: int, reason: str) -> None:
        if on_bad_row == "fail":
            raise BadRowError(f"{path}, line {line}: {reason}")
        bad.append(BadRow(line, reason, original.get(line, {})))  # the row as written

    candidates: list[Record] = []
    seen_ids: dict[str, int] = {}
    for line, row, parse_error in rows:
        if parse_error:
            reject(line, parse_error)
            continue
        reason = None
        values = {f: _cell(row.get(col)) for f, col in field_col.items()}
        for f in required:
            if not values[f]:
                reason = f"empty {field_col[f]!r}"
                break
        for f in required:
            if reason is None and not modality[f].is_file and len(values[f]) > max_text_chars:
                reason = (f"{field_col[f]!r} has {len(values[f])} characters (limit "
                          f"{max_text_chars}); raise train.max_text_chars to keep longer texts")
        item_id = values["id"] or f"{path.stem}:{line}"
        if reason is None and item_id in seen_ids:
            reason = f"duplicate id {item_id!r} (first on line {seen_ids[item_id]})"
        if reason:
            reject(line, reason)
            continue
        seen_ids[item_id] = line
        items = {f: base / values[f] if modality[f].is_file else values[f] for f in required}
        items.update({f: values[f] for f in optional if f not in items and values.get(f)})
        candidates.append(Record(item_id, line, items, values["label"] or None,
                                 values["group"] or None))

    records = candidates
    notes: list[tuple[int, str]] = []
    checks = {f: m.check for f, m in modality.items() if m.check is not None}
    if check_files and checks:
        records, notes = _check_files(path, candidates, checks, reject)
    result = Manifest(path, records, sorted(bad, key=lambda b: b.line), notes=notes)
    _log_notes(path, notes)
    if bad:
        logger.warning("%s: %d of %d rows quarantined (first: line %d, %s)", path, len(bad),
                       len(rows), result.bad_rows[0].line, result.bad_rows[0].reason)
    if quarantine_dir is not None and bad:
        result.quarantine_path = write_quarantine(result, quarantine_dir)
    elif quarantine_dir is not None:  # an earlier read's list no longer holds
        quarantine_file(path, quarantine_dir).unlink(missing_ok=True)
    if not records:
        first = result.bad_rows[0]
        where = (f"see {result.quarantine_path}" if result.quarantine_path is not None
                 else f"first: line {first.line}, {first.reason}")
        raise DataError(f"{path}: 0 valid rows of {len(rows)}; {where}")
    return result


def _cell(value: object) -> str:
    return str(value).strip() if value is not None else ""


def _check_files(path: Path, candidates: list[Record],
                 checks: Mapping[str, Callable[[Any], Any]],
                 reject: Callable[[int, str], None]) -> tuple[list[Record], list[tuple[int, str]]]:
    """Each distinct (check, item) is checked once — several rows (captions) naming one
    file cost one decode — and its verdict applies to every row naming it."""
    keys = {(check, rec.fields[f]): None for rec in candidates for f, check in checks.items()}

    def check_one(key: tuple) -> ItemCheck:
        check, item = key
        found = check(item)  # str | None, or an ItemCheck with notes
        return found if isinstance(found, ItemCheck) else ItemCheck(found)

    verdicts: dict[tuple, ItemCheck] = {}
    # decoding releases the GIL for most of its time, so threads pay off
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        found = pool.map(check_one, keys, chunksize=64)
        for key, verdict in progress(zip(keys, found), desc=f"check {path.name}",
                                     total=len(keys), unit="file", leave=False):
            verdicts[key] = verdict
    kept, notes = [], []
    for rec in candidates:
        row = [verdicts[(check, rec.fields[f])] for f, check in checks.items()]
        problem = next((v.problem for v in row if v.problem), None)
        if problem:
            reject(rec.line, problem)
        else:
            kept.append(rec)
            notes += [(rec.line, note) for v in row for note in v.notes]
    return kept, notes


def note_kind(note: str) -> str:
    """What notes of one kind share: the text before the file it names (a check's notes
    end in ``: <path>``) with every number written ``N`` ("5 of 8 sampled frames …" and
    "3 of 8 …" are one kind; "resampled from 44100 Hz …" and "… 8000 Hz …" too)."""
    text = note.rsplit(": ", 1)[0] if ": " in note else note
    return re.sub(r"\d+(?:\.\d+)?", "N", text)


def _log_notes(path: Path, notes: list[tuple[int, str]]) -> None:
    """One warning per kind of note (:func:`note_kind`), with the count and the first
    example, so a million resampled rows make one line, not a million."""
    kinds: dict[str, list[tuple[int, str]]] = {}
    for line, note in notes:
        kinds.setdefault(note_kind(note), []).append((line, note))
    for kind, items in kinds.items():
        line, note = items[0]
        logger.warning("%s: %d rows %s (first: line %d, %s)", path.name, len(items), kind, line, note)


def quarantine_file(source: Path, out_dir: str | Path) -> Path:
    """``out_dir/quarantine-<name>-<8 hex of the resolved source path>.jsonl``."""
    digest = hashlib.sha1(str(Path(source).resolve()).encode("utf-8")).hexdigest()[:8]
    return Path(out_dir) / f"quarantine-{Path(source).stem}-{digest}.jsonl"


def write_quarantine(manifest: Manifest, out_dir: str | Path) -> Path:
    """Write the bad rows with their reasons as JSONL (atomically) and return its path."""
    lines = (json.dumps({"manifest": str(manifest.path), "line": b.line, "reason": b.reason,
                         "row": b.row}) + "\n" for b in manifest.bad_rows)
    return atomic_write_text(quarantine_file(manifest.path, out_dir), "".join(lines))
