"""The vector store interface and its registry.

A store keeps ``int64`` ids with one float32 vector each, answers
inner-product top-k queries, and persists itself into one folder. It is a
derived index: the collection's catalog (SQLite) is the source of truth, and
each store remembers a *watermark* — the catalog change number it has seen —
so a collection reopened after a crash replays only what the store missed.

A new store (a server, a distributed engine) is one module with a class that
follows :class:`VectorStore`, plus one ``@STORES.register`` line; collections
look stores up by the name saved in ``collection.json``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from ..errors import JointspaceError
from ..registry import Registry
from ..vectors import top_k as _top_k_indices


@runtime_checkable
class VectorStore(Protocol):
    """What a collection needs from a vector index.

    ``add`` is an upsert (an id that exists is replaced); ``search`` returns
    ``(scores [Q, k], ids [Q, k])`` best first, padded with ``-1`` ids and
    ``-inf`` scores when fewer than ``k`` vectors qualify; ``allowed``
    restricts the answer to those ids (metadata filters). ``commit`` makes
    every change so far durable, with the catalog change number it reflects.
    """

    dim: int
    watermark: int

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def delete(self, ids: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int, *,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def commit(self, watermark: int) -> None: ...

    def count(self) -> int: ...


#: name → ``factory(folder: Path, dim: int, **params) -> VectorStore``
STORES: Registry[Any] = Registry("store")


def open_store(name: str, folder: str | Path, dim: int, **params: Any) -> VectorStore:
    """Open (or create, when ``folder`` holds none) the store registered as ``name``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return STORES.get(name)(folder, dim, **params)


def load_committed(folder: Path, pointer: str, load: Callable[[dict], Any]) -> Any:
    """``load(state)`` of the state the pointer file names, or None if nothing was committed.

    A writer may switch the pointer and delete the files it named between our
    reading the pointer and the files: then read the pointer again."""
    for attempt in range(50):
        path = Path(folder) / pointer
        if not path.is_file():
            return None
        state = json.loads(path.read_text())
        try:
            return load(state)
        except (FileNotFoundError, RuntimeError):  # faiss raises RuntimeError for a missing file
            if attempt == 49:
                raise
            time.sleep(0.01)
    return None


def check_batch(ids: np.ndarray, vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate an ``add`` batch: one finite ``dim``-wide float32 row per distinct int64 id."""
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise JointspaceError(f"vectors have shape {vectors.shape}; this store holds {dim}-dim vectors")
    if len(ids) != len(vectors):
        raise JointspaceError(f"{len(ids)} ids for {len(vectors)} vectors")
    if len(np.unique(ids)) != len(ids):
        raise JointspaceError("an add batch repeats an id")
    if not np.isfinite(vectors).all():
        raise JointspaceError("vectors hold NaN or infinite values")
    return ids, vectors


def check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """Queries as a C-contiguous float32 ``[Q, dim]`` matrix (one vector becomes ``[1, dim]``)."""
    queries = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise JointspaceError(f"query has shape {queries.shape}; the store holds {dim}-dim vectors")
    if not np.isfinite(queries).all():
        raise JointspaceError("the query vector holds NaN or infinite values")
    return queries


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns of each row of ``scores`` ``[Q, n]``, padded to ``k`` with -1/-inf.

    Ties are broken by the smaller id, so exact stores answer deterministically.
    """
    q, n = scores.shape
    out_scores = np.full((q, k), -np.inf, dtype=np.float32)
    out_ids = np.full((q, k), -1, dtype=np.int64)
    take = min(k, n)
    if take == 0:
        return out_scores, out_ids
    best = _top_k_indices(scores, take, ids)
    out_scores[:, :take] = np.take_along_axis(scores, best, axis=1)
    out_ids[:, :take] = ids[best]
    return out_scores, out_ids


__all__ = ["STORES", "VectorStore", "check_batch", "check_queries", "load_committed", "open_store",
           "top_k"]
