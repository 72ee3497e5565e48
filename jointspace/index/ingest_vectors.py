"""Ingest vectors made elsewhere: the Parquet parts of ``jointspace embed`` (no encoding).

The parts must come from the collection's model (``embed.json`` records its
fingerprint). Each row becomes an item keyed by the folder, its shard's path
(keys of img2dataset shards are unique only within one) and its key; its content hash
is that of its vector and metadata, so a re-run skips unchanged rows and
updates changed ones, as a folder ingest does. The parts are read a batch at
a time, so memory does not grow with the folder.

A row's item lives in its shard (an image inside a WebDataset tar or a Parquet row): the
item keeps no path, and :func:`shard_origin` reads the shard and the sample's key back
from the item's key, so a server can serve the member. The folders of the shards (and of
the files a manifest's rows name) become the collection's roots: the folders whose files
it may serve.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

from ..data.shards import SHARD_SUFFIXES
from ..errors import JointspaceError
from ..progress import progress
from .catalog import TEXT_COLUMN, ItemRow
from .collection import Collection

BATCH = 5_000


def item_key(source: str, item_path: str, sample: str) -> str:
    """The key of a part's row: ``SOURCE#SHARD#KEY`` for a row from a shard (img2dataset's
    keys are unique within one shard only), ``SOURCE#KEY`` otherwise."""
    return f"{source}#{item_path}#{sample}" if item_path.endswith(SHARD_SUFFIXES) else f"{source}#{sample}"


def shard_origin(item: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(shard path, sample key)`` of a catalog item indexed from ``jointspace embed`` parts
    of shards (its key made by :func:`item_key`, its sample key kept as ``meta["key"]``), or
    None for any other item.

    >>> shard_origin({"key": "/e#/s/00000.tar#001", "source": "/e", "meta": {"key": "001"}})
    ('/s/00000.tar', '001')
    """
    key, source = item.get("key") or "", item.get("source") or ""
    sample = (item.get("meta") or {}).get("key")
    if item.get("path") or not isinstance(sample, str) or not sample or \
            not key.startswith(f"{source}#") or not key.endswith(f"#{sample}"):
        return None
    shard = key[len(source) + 1:-len(sample) - 1]
    return (shard, sample) if shard.endswith(SHARD_SUFFIXES) else None


def embed_info(folder: Path) -> dict | None:
    """``embed.json`` of a ``jointspace embed`` output folder, or None for any other source."""
    path = Path(folder) / "embed.json"
    return json.loads(path.read_text()) if path.is_file() else None


def ingest_embeddings(col: Collection, folder: Path, report: object, delete_missing: bool,
                      on_commit: Callable[[list[str]], None] | None = None) -> None:
    from ..bulk_embed import embedding_batches, embedding_count

    info = embed_info(folder)
    if info is None:
        raise JointspaceError(f"not an embed output folder (no embed.json): {folder}")
    if info["fingerprint"] != col.info["fingerprint"]:
        raise JointspaceError(f"{folder} holds embeddings of another model (fingerprint "
                              f"{info['fingerprint']}, {info['model']}); {col.path} is for "
                              f"{col.info['fingerprint']} ({col.info['model']})")
    modality, source = info["modality"], str(folder)
    known, indexed = col.catalog.hashes(source), col.catalog.keys(source)
    seen: set[str] = set()
    legacy: set[str] = set()
    pending: list[ItemRow] = []
    folders: set[str] = set()  # of the shards, and of the files a manifest's rows name

    def flush() -> None:
        col.write(pending)
        for row in pending:
            if row.key in indexed:
                report.updated += 1
            else:
                report.added += 1
            known[row.key] = row.content_hash
        if on_commit is not None:
            on_commit([row.key for row in pending])
        pending.clear()
    bar = progress(desc=f"index {folder.name}", total=embedding_count(folder), unit="vector")
    for rows, vectors in embedding_batches(folder, BATCH):
        for row, vector in zip(rows, vectors):
            item_path = row.get("source") or ""
            in_shard = item_path.endswith(SHARD_SUFFIXES)
            plain = f"{source}#{row['key']}"
            key = item_key(source, item_path, row["key"])
            if item_path:
                folders.add(str(Path(item_path).parent))
            seen.add(key)
            if in_shard and plain in indexed:  # keyed without its shard before
                legacy.add(plain)
            # a part's metadata columns are the catalog's (bulk_embed writes key, label, text, source)
            digest = hashlib.blake2b(vector.tobytes() + json.dumps(
                [row.get("label"), row.get(TEXT_COLUMN), item_path]).encode(), digest_size=16).hexdigest()
            if known.get(key) == digest:
                report.unchanged += 1
                continue
            is_file = bool(item_path) and not in_shard and Path(item_path).is_file()
            pending.append(ItemRow(key, source, modality, digest, {modality: vector.copy()},
                                   path=item_path if is_file else None, text=row.get(TEXT_COLUMN),
                                   label=row.get("label"), meta={"key": row["key"]}))
            if len(pending) >= BATCH:
                flush()
        bar.update(len(rows))
    bar.close()
    if pending:
        flush()
    # what may be served: the shards' folders (their members are previewed) and the files'
    col.add_roots([Path(f) for f in sorted(folders)])
    if legacy:  # the same rows now stand under keys that name their shard
        col.delete(sorted(legacy))
        for key in legacy:
            known.pop(key, None)
    if delete_missing:
        gone = [k for k in known if k not in seen]
        if gone:
            report.deleted = col.delete(gone)
