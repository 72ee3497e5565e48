"""Ingest vectors made elsewhere: the Parquet parts of ``jointspace embed`` (no encoding).

The parts must come from the collection's model (``embed.json`` records its
fingerprint). Each row becomes an item keyed by the folder, its shard's path
(keys of img2dataset shards are unique only within one) and its key; its content hash
is that of its vector and metadata, so a re-run skips unchanged rows and
updates changed ones, as a folder ingest does. The parts are read a batch at
a time, so memory does not grow with the folder.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from ..errors import JointspaceError
from ..progress import progress
from .catalog import TEXT_COLUMN, ItemRow
from .collection import Collection

BATCH = 5_000


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
            in_shard = item_path.endswith((".tar", ".parquet"))
            plain = f"{source}#{row['key']}"
            key = f"{source}#{item_path}#{row['key']}" if in_shard else plain
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
    if legacy:  # the same rows now stand under keys that name their shard
        col.delete(sorted(legacy))
        for key in legacy:
            known.pop(key, None)
    if delete_missing:
        gone = [k for k in known if k not in seen]
        if gone:
            report.deleted = col.delete(gone)
