"""The catalog: a collection's items, vectors and quarantine in one SQLite file.

SQLite is the source of truth of a collection; the vector stores are indexes
derived from it. Every write is one transaction that bumps a change number
(``seq``), and every item row and deletion carries the ``seq`` of the change
that made it, so a store that has seen changes up to its watermark can catch
up by replaying ``seq > watermark`` (after a crash, or in a reader while an
ingest runs). WAL mode lets readers query while one writer commits; an item
counted as indexed has been committed, so a kill never loses it.

Vectors live in one table per modality keyed by the item id (a rowid table:
a 1 KB vector is stored inline in its B-tree page, where a WITHOUT ROWID
table would spill each one to an overflow page of its own).
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import JointspaceError
from ..modalities import MODALITIES
from .filters import FILTER_COLUMNS, UnknownFilterError, where_sql

#: names this module's code uses that a modality has too: the catalog's ``text`` column (an
#: item's text), a stored field name — in every catalog file written, in each hit's item,
#: and filterable by name (``where={"text": …}``)
USER_FACING_DEFAULTS = ("text",)
TEXT_COLUMN = "text"

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the id the stores know (never reused)
    key TEXT NOT NULL UNIQUE,        -- stable identity: source + file or manifest row
    source TEXT NOT NULL,            -- the folder or manifest it was read from
    modality TEXT NOT NULL,          -- what the item is (image, audio, text)
    path TEXT,                       -- its file, when it has one
    content_hash TEXT NOT NULL,      -- of the file bytes (and text); unchanged items are skipped
    text TEXT, label TEXT,
    meta TEXT NOT NULL DEFAULT '{}', -- user metadata, JSON
    seq INTEGER NOT NULL             -- the change that last wrote it
);
CREATE INDEX IF NOT EXISTS items_seq ON items(seq);
CREATE INDEX IF NOT EXISTS items_source ON items(source);
CREATE TABLE IF NOT EXISTS modalities (name TEXT PRIMARY KEY);  -- one vectors_<name> table each
CREATE TABLE IF NOT EXISTS deleted (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deleted_seq ON deleted(seq);
CREATE TABLE IF NOT EXISTS quarantine (
    key TEXT PRIMARY KEY, source TEXT NOT NULL, path TEXT, reason TEXT NOT NULL,
    content_hash TEXT, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO state VALUES ('seq', 0);
"""
#: counts (:meth:`Catalog.count_items`) kept, each until the catalog changes
COUNTS_KEPT = 256
COLUMNS = ("id", "key", "source", "modality", "path", "content_hash", TEXT_COLUMN, "label", "meta")


def item_text(fields: Mapping[str, Any]) -> str | None:
    """What an item stores in the :data:`TEXT_COLUMN`: the string value of its first
    text-like modality (a caption beside an image, a text file's content), or None."""
    for modality, value in fields.items():
        if isinstance(value, str) and modality in MODALITIES and MODALITIES.get(modality).text_like:
            return value
    return None


@dataclass
class ItemRow:
    """One item to write: its identity, content hash, metadata and a vector per modality."""

    key: str
    source: str
    modality: str
    content_hash: str
    vectors: dict[str, np.ndarray]
    path: str | None = None
    text: str | None = None
    label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Quarantined:
    """An input that could not be indexed, and why."""

    key: str
    source: str
    path: str | None
    reason: str
    content_hash: str | None = None


def _item(row: Sequence[Any]) -> dict[str, Any]:
    """An items row (selected as ``COLUMNS``) as a dict: None fields left out, meta parsed."""
    item = {k: v for k, v in zip(COLUMNS[:-1], row) if v is not None}
    item["meta"] = json.loads(row[-1]) if row[-1] != "{}" else {}
    return item


class Catalog:
    """The SQLite file of a collection; one connection per thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._meta_keys: tuple[tuple, list[str]] | None = None  # (change token, keys)
        self._counts: dict[tuple, tuple[tuple, int]] = {}  # (tables, where) → (change token, count)
        self._fields: tuple[tuple, list[dict[str, Any]]] | None = None
        self._cache_lock = threading.Lock()
        made = self.db.execute("SELECT 1 FROM sqlite_master WHERE name='state'").fetchone()
        if not made:  # a reader never writes, so never waits for a writer's lock
            self.db.executescript(SCHEMA)  # idempotent; runs its own transaction

    @property
    def db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a committed batch survives power loss
            self._local.db = db
        return db

    def _tx(self) -> Any:
        catalog = self

        class Transaction:
            def __enter__(self) -> sqlite3.Connection:
                catalog.db.execute("BEGIN IMMEDIATE")
                return catalog.db

            def __exit__(self, kind: Any, *_: Any) -> None:
                catalog.db.execute("COMMIT" if kind is None else "ROLLBACK")

        return Transaction()

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- reading -----------------------------------------------------------------
    def change_token(self) -> tuple:
        """Changes whenever any process commits to the catalog (the database and WAL files'
        sizes and modification times): a cheap test before asking for :meth:`seq`."""
        token = []
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                st = os.stat(path)
                token += [st.st_mtime_ns, st.st_size, st.st_ino]
            except FileNotFoundError:
                token += [None]
        return tuple(token)

    def seq(self) -> int:
        return int(self.db.execute("SELECT value FROM state WHERE name='seq'").fetchone()[0])

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM items").fetchone()[0])

    def modalities(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM modalities ORDER BY name")]

    def _table(self, modality: str, db: sqlite3.Connection | None = None) -> str:
        """The vectors table of a modality (made on first write)."""
        if not modality.isidentifier():
            raise JointspaceError(f"modality name {modality!r} is not an identifier")
        table = f"vectors_{modality}"
        if db is not None:
            db.execute(f"CREATE TABLE IF NOT EXISTS {table} (item_id INTEGER PRIMARY KEY, "
                       "vector BLOB NOT NULL)")
            db.execute("INSERT OR IGNORE INTO modalities VALUES (?)", (modality,))
        return table

    def _has(self, modality: str) -> bool:
        return modality in self.modalities()

    def hashes(self, source: str) -> dict[str, str]:
        """``key → content_hash`` of the items and quarantined inputs of one source."""
        return {**self.item_hashes(source), **self.quarantine_hashes(source)}

    def item_hashes(self, source: str) -> dict[str, str]:
        """``key → content_hash`` of the items of one source."""
        rows = self.db.execute("SELECT key, content_hash FROM items WHERE source=?", (source,))
        return {r[0]: r[1] for r in rows}

    def quarantine_hashes(self, source: str) -> dict[str, str]:
        """``key → content_hash`` of the quarantined inputs of one source (an input that
        went bad after it was indexed has an entry here and keeps its item)."""
        rows = self.db.execute("SELECT key, content_hash FROM quarantine WHERE source=?", (source,))
        return {r[0]: r[1] for r in rows}

    def items_by_key(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``key → item`` of those of ``keys`` that are items."""
        ids = self._ids_of(self.db, list(keys))
        found = self.items(list(ids.values()))
        return {key: found[i] for key, i in ids.items() if i in found}

    def items(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for chunk in _chunks(list(map(int, ids)), 900):
            marks = ",".join("?" * len(chunk))
            cursor = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM items WHERE id IN ({marks})",
                                     chunk)
            cursor.row_factory = None  # plain tuples: this runs once per search
            for row in cursor:
                out[row[0]] = _item(row)
        return out

    def item(self, item_id: int) -> dict[str, Any] | None:
        return self.items([item_id]).get(int(item_id))

    def vectors(self, modality: str, ids: Sequence[int] | None = None,
                dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` of one modality: all of them, or those of ``ids``."""
        if not self._has(modality):
            return _unpack([], dim)
        table = self._table(modality)
        if ids is None:
            rows = self.db.execute(f"SELECT item_id, vector FROM {table} ORDER BY item_id").fetchall()
        else:
            rows = []
            for chunk in _chunks(sorted(set(map(int, ids))), 900):
                marks = ",".join("?" * len(chunk))
                rows += self.db.execute(f"SELECT item_id, vector FROM {table} WHERE "
                                        f"item_id IN ({marks})", chunk).fetchall()
        return _unpack(rows, dim)

    def sample_vectors(self, modality: str, limit: int) -> np.ndarray:
        """Up to about ``limit`` vectors of a modality, spread evenly over the ids (deterministic)."""
        if not self._has(modality):
            return _unpack([])[1]
        table = self._table(modality)
        low, high = self.db.execute(f"SELECT min(item_id), max(item_id) FROM {table}").fetchone()
        if low is None:
            return _unpack([])[1]
        # seeks to seeded random points of the id range: cheap, and blind to how the ids of
        # several modalities interleave (a stride over ids could miss a modality entirely)
        targets = np.random.default_rng(0).integers(low, high + 1, size=limit)
        seen, rows = set(), []
        for target in targets.tolist():
            row = self.db.execute(f"SELECT item_id, vector FROM {table} WHERE item_id >= ? "
                                  "ORDER BY item_id LIMIT 1", (target,)).fetchone()
            if row is not None and row[0] not in seen:
                seen.add(row[0])
                rows.append(row)
        return _unpack(rows)[1]

    def changes(self, modality: str, since: int, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What a store of ``modality`` at watermark ``since`` lacks:
        ``(upsert ids, their vectors, ids to delete)``."""
        if not self._has(modality):
            rows = [(r[0], None) for r in self.db.execute("SELECT id FROM items WHERE seq > ?", (since,))]
        else:
            rows = self.db.execute(
                f"SELECT i.id, v.vector FROM items i LEFT JOIN {self._table(modality)} v "
                "ON v.item_id = i.id WHERE i.seq > ? ORDER BY i.id", (since,)).fetchall()
        gone = [r[0] for r in rows if r[1] is None]  # re-indexed without this modality
        ids, vectors = _unpack([r for r in rows if r[1] is not None], dim)
        gone += [r[0] for r in self.db.execute("SELECT id FROM deleted WHERE seq > ?", (since,))]
        return ids, vectors, np.asarray(gone, dtype=np.int64)

    def meta_keys(self) -> list[str]:
        """Every metadata key some item has, sorted (for error messages). Reads every item
        once per change of the catalog: a client sending bad filters in a loop costs a stat."""
        token = self.change_token()
        cached = self._meta_keys
        if cached is None or cached[0] != token:
            cached = self._meta_keys = (token, [r[0] for r in self.db.execute(
                "SELECT DISTINCT j.key FROM items, json_each(items.meta) AS j ORDER BY 1")])
        return list(cached[1])

    def _has_meta_key(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM items WHERE json_type(meta, ?) IS NOT NULL LIMIT 1",
                               (f"$.{name}",)).fetchone() is not None

    def filter_ids(self, where: Mapping[str, Any]) -> np.ndarray:
        """Ids of the items matching every condition: ``{column or meta key: value or [values]}``.

        A metadata key that no item has raises :class:`UnknownFilterError` (a typo would
        otherwise read as "no matches"); it is looked for only when nothing matched."""
        sql, args, keys = where_sql(where, self.meta_keys)
        ids = np.fromiter((r[0] for r in self.db.execute(sql, args)), dtype=np.int64)
        if not len(ids):  # a match has every key, so only an empty answer can hide one
            self._refuse_unknown_keys(keys)
        return ids

    def _refuse_unknown_keys(self, keys: Sequence[str]) -> None:
        unknown = [name for name in keys if not self._has_meta_key(name)]
        if unknown:
            problem = "no item has this field" if len(unknown) == 1 else "no item has these fields"
            raise UnknownFilterError(unknown, problem, self.meta_keys())

    def count_items(self, modalities: Sequence[str], where: Mapping[str, Any] | None = None) -> int:
        """Items with a vector of one of ``modalities`` that match ``where`` (as
        :meth:`filter_ids`), each counted once: one SQL statement. Each count is kept until
        the catalog changes (an unfiltered count of a large collection reads its vectors'
        pages; a client paging through one query asks for the same count on every page)."""
        tables = [self._table(m) for m in dict.fromkeys(modalities) if self._has(m)]
        if not tables:
            if where:
                self.filter_ids(where)  # a filter naming no field is an error whatever the count
            return 0
        token = self.change_token()
        cache_key = (tuple(tables), json.dumps(where, sort_keys=True, default=str) if where else None)
        with self._cache_lock:
            cached = self._counts.get(cache_key)
        if cached is not None and cached[0] == token:
            return cached[1]
        sql, args, keys = where_sql(where or {}, self.meta_keys)
        has = " OR ".join(f"EXISTS (SELECT 1 FROM {t} v WHERE v.item_id = m.id)" for t in tables)
        count = int(self.db.execute(f"SELECT count(*) FROM ({sql}) m WHERE {has}", args).fetchone()[0])
        if not count:
            self._refuse_unknown_keys(keys)
        with self._cache_lock:
            if len(self._counts) >= COUNTS_KEPT:
                self._counts.pop(next(iter(self._counts)))
            self._counts[cache_key] = (token, count)
        return count

    def field_values(self, max_values: int = 100, max_fields: int = 50) -> list[dict[str, Any]]:
        """What items can be filtered on, and by which values: the label, then the metadata
        keys a filter can name (letters, digits, underscores; not an item column's name),
        those most items have first, at most ``max_fields``. Each is ``{"name", "values":
        [{"value", "count"}] (the most common first, at most max_values), "distinct": how
        many values it has, "items": how many items have it}``; a value is the text a filter
        compares (``7`` → ``"7"``), objects and lists are left out. Read once per change
        of the catalog (each metadata key's values take one pass over the items)."""
        token = self.change_token()
        cached = self._fields
        if cached is not None and cached[0] == (token, max_values, max_fields):
            return cached[1]
        fields = []
        label = self.db.execute("SELECT count(DISTINCT label), count(label) FROM items").fetchone()
        if label[1]:
            values = self.db.execute("SELECT label, count(*) c FROM items WHERE label IS NOT NULL "
                                     "GROUP BY label ORDER BY c DESC, label LIMIT ?", (max_values,))
            fields.append({"name": "label", "values": [{"value": v, "count": c} for v, c in values],
                           "distinct": label[0], "items": label[1]})
        rows = self.db.execute(
            "SELECT key, value, c, distinct_values, items FROM ("
            " SELECT key, value, c, row_number() OVER (PARTITION BY key ORDER BY c DESC, value) r,"
            "  count(*) OVER (PARTITION BY key) distinct_values, sum(c) OVER (PARTITION BY key) items"
            " FROM (SELECT j.key key, CAST(j.value AS TEXT) value, count(*) c"
            "       FROM items, json_each(items.meta) j WHERE j.type NOT IN ('object', 'array', 'null')"
            "       GROUP BY 1, 2)) WHERE r <= ? ORDER BY items DESC, key, r", (max_values,))
        by_key: dict[str, dict[str, Any]] = {}
        for key, value, count, distinct, items in rows:
            if key in FILTER_COLUMNS or not key.replace("_", "").isalnum():
                continue  # a filter naming it means the column, or cannot name it
            if key not in by_key:
                if len(by_key) == max_fields:
                    continue
                by_key[key] = {"name": key, "values": [], "distinct": distinct, "items": items}
            by_key[key]["values"].append({"value": value, "count": count})
        fields += by_key.values()
        self._fields = ((token, max_values, max_fields), fields)
        return fields

    def quarantined(self, source: str | None = None) -> list[Quarantined]:
        sql, args = "SELECT * FROM quarantine", ()
        if source is not None:
            sql, args = sql + " WHERE source=?", (source,)
        return [Quarantined(r["key"], r["source"], r["path"], r["reason"], r["content_hash"])
                for r in self.db.execute(sql + " ORDER BY key", args)]

    def keys(self, source: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT key FROM items WHERE source=?", (source,))}

    # -- writing (one transaction, one new seq, each) ----------------------------
    def write(self, rows: Iterable[ItemRow], bad: Iterable[Quarantined] = ()) -> int:
        """Upsert items with their vectors and record quarantined inputs, atomically.
        Returns the change number."""
        rows, bad = list(rows), list(bad)
        with self._tx() as db:
            seq = self._bump(db)
            existing = self._ids_of(db, [r.key for r in rows])
            found = db.execute("SELECT seq FROM sqlite_sequence WHERE name='items'").fetchone()
            next_id = (found[0] if found else 0) + 1  # ids are never reused (AUTOINCREMENT)
            new, old = [], []
            for row in rows:
                values = (row.source, row.modality, row.path, row.content_hash, row.text, row.label,
                          json.dumps(row.meta, sort_keys=True, default=str), seq)
                if row.key in existing:
                    old.append((*values, existing[row.key]))
                else:
                    existing[row.key] = next_id
                    new.append((next_id, row.key, *values))
                    next_id += 1
            db.executemany("INSERT INTO items (id, key, source, modality, path, content_hash, text, "
                           "label, meta, seq) VALUES (?,?,?,?,?,?,?,?,?,?)", new)
            db.executemany("UPDATE items SET source=?, modality=?, path=?, content_hash=?, text=?, "
                           "label=?, meta=?, seq=? WHERE id=?", old)
            self._drop_vectors(db, [o[-1] for o in old])
            for modality in sorted({m for row in rows for m in row.vectors}):
                db.executemany(f"INSERT INTO {self._table(modality, db)} VALUES (?,?)", [
                    (existing[row.key], np.ascontiguousarray(row.vectors[modality], np.float32).tobytes())
                    for row in rows if modality in row.vectors])
            db.executemany("DELETE FROM quarantine WHERE key=?", [(r.key,) for r in rows])
            # an input that went bad after it was indexed keeps its item (a read error may be
            # passing); the quarantine entry says why it was not updated
            db.executemany("INSERT OR REPLACE INTO quarantine VALUES (?,?,?,?,?,?)",
                           [(q.key, q.source, q.path, q.reason, q.content_hash, seq) for q in bad])
        return seq

    def release(self, keys: Sequence[str]) -> None:
        """Drop the quarantine entries of ``keys`` (inputs that read as their indexed item
        again). No vector changes, so no new change number."""
        with self._tx() as db:
            db.executemany("DELETE FROM quarantine WHERE key=?", [(k,) for k in keys])

    def rekey(self, changes: Sequence[tuple[str, str, str | None, dict | None]],
              stale: Sequence[str] = ()) -> None:
        """Rename items ``(old key, new key, new content hash or None, new meta or None)``
        (ids and vectors stay) and drop the quarantine entries ``stale``, in one transaction."""
        with self._tx() as db:
            db.executemany("UPDATE items SET key=?, content_hash=coalesce(?, content_hash), "
                           "meta=coalesce(?, meta) WHERE key=?",
                           [(new, digest, None if meta is None else json.dumps(
                               meta, sort_keys=True, default=str), old)
                            for old, new, digest, meta in changes])
            db.executemany("DELETE FROM quarantine WHERE key=?", [(k,) for k in stale])

    @staticmethod
    def _ids_of(db: sqlite3.Connection, keys: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for chunk in _chunks(keys, 900):
            marks = ",".join("?" * len(chunk))
            out.update(db.execute(f"SELECT key, id FROM items WHERE key IN ({marks})", chunk).fetchall())
        return out

    def delete_keys(self, keys: Iterable[str]) -> tuple[int, int]:
        """Delete items (and quarantine entries) by key; returns ``(seq, items deleted)``."""
        keys = list(keys)
        with self._tx() as db:
            seq = self._bump(db)
            deleted = 0
            for chunk in _chunks(keys, 900):
                marks = ",".join("?" * len(chunk))
                ids = [r[0] for r in db.execute(f"SELECT id FROM items WHERE key IN ({marks})", chunk)]
                self._drop_vectors(db, ids)
                for id_chunk in _chunks(ids, 900):
                    id_marks = ",".join("?" * len(id_chunk))
                    db.execute(f"DELETE FROM items WHERE id IN ({id_marks})", id_chunk)
                db.executemany("INSERT OR REPLACE INTO deleted VALUES (?,?)", [(i, seq) for i in ids])
                db.execute(f"DELETE FROM quarantine WHERE key IN ({marks})", chunk)
                deleted += len(ids)
        return seq, deleted

    def _drop_vectors(self, db: sqlite3.Connection, ids: list[int]) -> None:
        for modality in self.modalities():
            db.executemany(f"DELETE FROM {self._table(modality)} WHERE item_id=?", [(i,) for i in ids])

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file (it would otherwise grow with
        every ingest until the last connection closes)."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @staticmethod
    def _bump(db: sqlite3.Connection) -> int:
        db.execute("UPDATE state SET value = value + 1 WHERE name='seq'")
        return int(db.execute("SELECT value FROM state WHERE name='seq'").fetchone()[0])


def _unpack(rows: Sequence[Any], dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, dim or 0), np.float32)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    return ids, vectors


def _chunks(values: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


__all__ = ["Catalog", "ItemRow", "Quarantined"]
