"""The exact store: every vector in one NumPy matrix, scored by a matrix product.

Needs nothing beyond NumPy; right for small collections and as the reference
an approximate store is measured against. Persisted as one ``.npy`` pair
named by the watermark plus a pointer file, so a kill at any moment leaves
the last committed state readable.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..fileio import atomic_path, atomic_write_json, fsync_dir
from .store import STORES, check_batch, check_queries, load_committed, top_k

POINTER = "store.json"
QUERY_CHUNK_BYTES = 256 << 20  # bound the [Q, n] score matrix of a batch of queries


@STORES.register("exact")
class ExactStore:
    """Brute-force inner-product search over an in-memory matrix."""

    def __init__(self, folder: Path, dim: int) -> None:
        self.folder, self.dim, self.watermark = Path(folder), int(dim), 0
        self.ids = np.zeros(0, dtype=np.int64)
        self.vectors = np.zeros((0, self.dim), dtype=np.float32)
        loaded = load_committed(self.folder, POINTER, lambda state: (
            np.load(self.folder / state["ids"]), np.load(self.folder / state["vectors"]),
            int(state["watermark"])))
        if loaded is not None:
            self.ids, self.vectors, self.watermark = loaded

    def count(self) -> int:
        return len(self.ids)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_batch(ids, vectors, self.dim)
        self.delete(ids)
        self.ids = np.concatenate([self.ids, ids])
        self.vectors = np.concatenate([self.vectors, vectors])

    def delete(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self.ids, np.asarray(ids, dtype=np.int64))
        if not keep.all():
            self.ids, self.vectors = self.ids[keep], self.vectors[keep]

    def search(self, queries: np.ndarray, k: int, *,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = check_queries(queries, self.dim)
        ids, vectors = self.ids, self.vectors
        if allowed is not None:
            mask = np.isin(ids, np.asarray(allowed, dtype=np.int64))
            ids, vectors = ids[mask], vectors[mask]
        rows = max(1, QUERY_CHUNK_BYTES // max(1, 4 * len(ids)))
        parts = [top_k(queries[s:s + rows] @ vectors.T, ids, k) for s in range(0, len(queries), rows)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def commit(self, watermark: int) -> None:
        for stale in self.folder.glob(".*.tmp"):  # left by a commit that was killed
            stale.unlink(missing_ok=True)
        names = {"ids": f"ids-{watermark}.npy", "vectors": f"vectors-{watermark}.npy"}
        old = {p.name for p in self.folder.glob("*.npy")}
        for key, array in (("ids", self.ids), ("vectors", self.vectors)):
            with atomic_path(self.folder / names[key], sync_dir=False) as tmp, open(tmp, "wb") as f:
                np.save(f, array)  # a file object: np.save would add ".npy" to a name
        fsync_dir(self.folder)
        atomic_write_json(self.folder / POINTER, {**names, "watermark": int(watermark),
                                                  "count": self.count()})
        self.watermark = int(watermark)
        for name in old - set(names.values()):
            (self.folder / name).unlink(missing_ok=True)


__all__ = ["ExactStore"]
