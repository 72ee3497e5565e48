"""Keys of manifest rows without an ``id``: their content, not their line.

A row with an ``id`` is keyed ``<manifest>#<id>``. A row without one is keyed
by what it holds: the resolved path of each of its files and its text
(``<manifest>#row:<digest>``), so inserting, deleting or moving rows leaves
the other rows' keys alone and a re-index embeds only the rows that are new.
Rows that hold the same files and text are told apart by their occurrence
(``…/2``, ``…/3`` in manifest order). Editing a row's file or text makes it a
new item; editing its label or other columns updates it in place.

Earlier versions keyed such rows by line (``<manifest>#<stem>:<line>``, the
line-based id also in the metadata); :func:`rekey_line_keys` renames those
items to their content keys, keeping their ids and vectors.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..progress import logger
from .catalog import TEXT_COLUMN, item_text

if TYPE_CHECKING:
    from .catalog import Catalog
    from .ingest import Candidate


def content_key(source: str, fields: Mapping[str, Any], is_file: Callable[[str], bool],
                seen: dict[str, int]) -> str:
    """The key of a row without an id: a digest of its files' resolved paths and its text,
    and its occurrence among identical rows (``seen`` counts them, in manifest order)."""
    parts = [(m, str(Path(v).resolve()) if is_file(m) else str(v)) for m, v in sorted(fields.items())]
    digest = hashlib.blake2b(json.dumps(parts).encode(), digest_size=12).hexdigest()
    n = seen[digest] = seen.get(digest, 0) + 1
    return f"{source}#row:{digest}" + (f"/{n}" if n > 1 else "")


def _signature(path: Any, text: Any) -> tuple[str | None, str | None]:
    return (str(path) if path else None, text if isinstance(text, str) else None)


def rekey_line_keys(catalog: "Catalog", source: str, stem: str, candidates: Sequence["Candidate"],
                    content_hash: Callable[["Candidate"], str]) -> int:
    """Rename the items an earlier version keyed by line to the content keys of the rows
    that hold the same file and text (in line order; ids and vectors stay). An item whose
    content is unchanged also takes the new hash and metadata, so it is not re-embedded.
    Returns how many were renamed."""
    line_key = re.compile(re.escape(source) + "#" + re.escape(stem) + r":(\d+)")
    current = {c.key for c in candidates}
    old = [k for k in catalog.keys(source) if k not in current and line_key.fullmatch(k)]
    stale = [k for k in catalog.quarantine_hashes(source) if k not in current and line_key.fullmatch(k)]
    if not old and not stale:
        return 0
    items = catalog.items_by_key(old)
    indexed = catalog.keys(source)
    waiting: dict[tuple, list["Candidate"]] = {}
    for c in candidates:
        if c.by_content and c.key not in indexed:
            waiting.setdefault(_signature(c.path, item_text(c.fields)), []).append(c)
    changes = []
    for key in sorted(items, key=lambda k: int(line_key.fullmatch(k)[1])):
        queue = waiting.get(_signature(items[key].get("path"), items[key].get(TEXT_COLUMN)))
        if not queue:
            continue  # its row is gone: left as it is (--delete-missing deletes it)
        c = queue.pop(0)
        as_before = dataclasses.replace(c, meta={**c.meta, "id": key[len(source) + 1:]})
        same = items[key]["content_hash"] == content_hash(as_before)
        changes.append((key, c.key, content_hash(c) if same else None, c.meta if same else None))
    catalog.rekey(changes, stale)
    logger.info("%s: %d items keyed by line number re-keyed by content (ids and vectors kept)",
                source, len(changes))
    return len(changes)


__all__ = ["content_key", "rekey_line_keys"]
