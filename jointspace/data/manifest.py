"""Reading and validating paired-data manifests (CSV or JSONL).

A manifest has one row per item with columns ``image``, ``text`` and optional
``id``, ``label``, ``audio``; file paths are relative to the manifest. Every
row is checked (missing or unreadable file, truncated image, empty or
over-long text, duplicate id). A bad row is, by default, skipped, counted and
written with its reason to a quarantine file; with ``on_bad_row="fail"`` the
first bad row raises :class:`~jointspace.errors.BadRowError` naming the file,
line and problem. Nothing is dropped silently.
"""
from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

from PIL import Image

from ..errors import BadRowError, DataError
from ..fileio import atomic_write_text
from ..progress import logger, progress

OnBadRow = Literal["skip", "fail"]
FILE_COLUMNS = ("image", "audio")
OPTIONAL_COLUMNS = ("id", "label", "audio")


@dataclass(frozen=True)
class Record:
    """One validated row: file paths resolved, text stripped."""

    id: str
    line: int
    image: Path | None = None
    text: str | None = None
    label: str | None = None
    audio: Path | None = None


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str
    row: dict


@dataclass
class Manifest:
    """The valid records of a manifest plus what was quarantined and where."""

    path: Path
    records: list[Record]
    bad_rows: list[BadRow] = field(default_factory=list)
    quarantine_path: Path | None = None

    def __len__(self) -> int:
        return len(self.records)

    def texts(self) -> list[str]:
        return [r.text for r in self.records if r.text is not None]

    def labels(self) -> list[str]:
        return [r.label for r in self.records if r.label is not None]


def _read_rows(path: Path) -> tuple[set[str], list[tuple[int, dict | None, str | None]]]:
    """The manifest's columns and its (line number, row or None, parse error or None)."""
    rows = list(_iter_rows(path))
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            header = next(csv.reader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","), [])
        return {c.strip() for c in header if c.strip()}, rows
    return set().union(*(r.keys() for _, r, _ in rows if r is not None)), rows


def _iter_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    yield line_no, None, f"line is not valid JSON ({e.msg})"
                    continue
                if not isinstance(row, dict):
                    yield line_no, None, "line is not a JSON object"
                    continue
                yield line_no, row, None
    elif path.suffix.lower() in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            if reader.fieldnames is None:
                return
            for row in reader:
                if None in row:  # more cells than header columns
                    yield reader.line_num, None, "row has more cells than the header has columns"
                    continue
                yield reader.line_num, row, None
    else:
        raise DataError(f"manifest {path} must end in .csv, .tsv or .jsonl")


def check_image(path: Path) -> str | None:
    try:
        with Image.open(path) as im:
            im.load()  # full decode: catches truncated files, not only bad headers
    except FileNotFoundError:
        return f"image file not found: {path}"
    except Exception as e:  # PIL raises many types for corrupt data
        return f"image file cannot be decoded ({type(e).__name__}: {e}): {path}"
    return None


def read_manifest(path: str | Path, *, required: tuple[str, ...] = ("image", "text"),
                  on_bad_row: OnBadRow = "skip", quarantine_dir: str | Path | None = None,
                  max_text_chars: int = 1000, check_files: bool = True) -> Manifest:
    """Read and validate a manifest.

    Returns a :class:`Manifest` of valid records. Bad rows go to
    ``<quarantine_dir>/quarantine-<manifest name>.jsonl`` (one JSON object per
    row: line, reason, the original row) when ``quarantine_dir`` is given.

    >>> m = read_manifest("data/train.csv", quarantine_dir="runs/model")  # doctest: +SKIP
    """
    path = Path(path)
    if on_bad_row not in ("skip", "fail"):
        raise DataError(f"on_bad_row must be 'skip' or 'fail', got {on_bad_row!r}")
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    columns, rows = _read_rows(path)
    if not rows:
        raise DataError(f"manifest {path} has no rows")
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(f"manifest {path} lacks required column(s) {', '.join(map(repr, missing))}; "
                        f"found: {', '.join(sorted(columns)) or 'none'}")

    bad: list[BadRow] = []
    base = path.parent

    def reject(line: int, row: dict | None, reason: str) -> None:
        if on_bad_row == "fail":
            raise BadRowError(f"{path}, line {line}: {reason}")
        bad.append(BadRow(line, reason, row or {}))

    candidates: list[Record] = []
    seen_ids: dict[str, int] = {}
    for line, row, parse_error in rows:
        if parse_error:
            reject(line, row, parse_error)
            continue
        reason = None
        values = {k: (str(v).strip() if v is not None else "") for k, v in row.items()}
        for col in required:
            if not values.get(col):
                reason = f"empty {col!r}"
                break
        text = values.get("text") or None
        if reason is None and text is not None and len(text) > max_text_chars:
            reason = f"text has {len(text)} characters (limit {max_text_chars})"
        item_id = values.get("id") or f"{path.stem}:{line}"
        if reason is None and item_id in seen_ids:
            reason = f"duplicate id {item_id!r} (first on line {seen_ids[item_id]})"
        if reason:
            reject(line, row, reason)
            continue
        seen_ids[item_id] = line
        files = {c: (base / values[c]) if values.get(c) else None for c in FILE_COLUMNS}
        candidates.append(Record(item_id, line, files["image"], text, values.get("label") or None,
                                 files["audio"]))

    records = candidates
    if check_files:
        records = _check_files(path, candidates, reject)
    result = Manifest(path, records, sorted(bad, key=lambda b: b.line))
    if bad:
        logger.warning("%s: %d of %d rows quarantined (first: line %d, %s)", path, len(bad),
                       len(rows), result.bad_rows[0].line, result.bad_rows[0].reason)
    if quarantine_dir is not None and bad:
        result.quarantine_path = write_quarantine(result, quarantine_dir)
    return result


def _check_files(path: Path, candidates: list[Record], reject) -> list[Record]:
    def problem(rec: Record) -> str | None:
        if rec.image is not None and (err := check_image(rec.image)):
            return err
        if rec.audio is not None and not rec.audio.is_file():
            return f"audio file not found: {rec.audio}"
        return None

    kept = []
    # decoding releases the GIL for most of its time, so threads pay off
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        problems = pool.map(problem, candidates, chunksize=64)
        for rec, err in progress(zip(candidates, problems), desc=f"check {path.name}",
                                 total=len(candidates), unit="row", leave=False):
            if err:
                reject(rec.line, {"id": rec.id, "image": str(rec.image), "text": rec.text}, err)
            else:
                kept.append(rec)
    return kept


def write_quarantine(manifest: Manifest, out_dir: str | Path) -> Path:
    """Write the bad rows with their reasons as JSONL (atomically) and return its path."""
    lines = (json.dumps({"manifest": str(manifest.path), "line": b.line, "reason": b.reason,
                         "row": b.row}) + "\n" for b in manifest.bad_rows)
    return atomic_write_text(Path(out_dir) / f"quarantine-{manifest.path.stem}.jsonl", "".join(lines))
