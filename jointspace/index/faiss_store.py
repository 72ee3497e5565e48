"""The FAISS store: exact below a size threshold, an inverted-file (IVF) index above it.

Why IVF-Flat and not HNSW (measured on this machine, 1M × 256 clustered
vectors, see ``bench/search.py`` and BASELINES.md): IVF builds in well
under a minute where HNSW (M=32, efConstruction=80) needs over four; it
deletes ids natively (HNSW cannot), so upserts and ``--delete-missing``
never force a rebuild; and at a few dozen probed lists its recall@10 is at
or above HNSW's at a comparable query rate. LanceDB was measured too: its
ingest and crash safety are good, but its Python API costs 4–7 ms per
query, ten times faiss's, and metadata already lives in the catalog.

The switch is automatic at :meth:`commit`: below ``exact_below`` vectors the
index is a flat inner-product scan (exact); at or above it an IVF index with
``lists`` cells (default about 16·√n, a power of two, at most 4,096) is
trained on a sample and filled. ``nprobe`` — how many cells a query visits — is the
recall/speed knob, settable per query. An IVF index that has grown to
``regrow`` times the size it was trained at is retrained at the next commit.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_path, atomic_write_json, kill_point
from ..progress import logger
from .store import STORES, check_batch, check_queries, load_committed

POINTER = "store.json"
TRAIN_POINTS_PER_LIST = 40  # faiss warns below 39 points per centroid


MAX_LISTS = 4096  # k-means for more centroids costs minutes on a laptop's cores


def default_lists(n: int) -> int:
    """About 16·√n inverted lists, a power of two, at most 4,096 (reached at 65,536 vectors).

    Many lists make each one short: on clustered data, fewer lists than the data
    has clusters cost recall at the same nprobe, and queries were no faster
    (bench/search.py; the README has the figures)."""
    return min(MAX_LISTS, max(16, 2 ** round(math.log2(16 * math.sqrt(max(n, 1))))))


def _faiss() -> Any:
    from ..extras import require  # imported lazily: `import jointspace` stays light
    faiss = require("faiss", "index", "the faiss store", instead="a new collection with "
                    "--store exact (store=\"exact\")")

    return faiss


@STORES.register("faiss")
class FaissStore:
    """FAISS inner-product index with int64 ids; flat (exact) or IVF-Flat by size."""

    #: what it needs beyond the core install: checked before a collection is made with it
    needs = staticmethod(_faiss)

    def __init__(self, folder: Path, dim: int, *, exact_below: int = 50_000,
                 lists: int | None = None, nprobe: int = 32, regrow: float = 4.0,
                 seed: int = 0) -> None:
        self.folder, self.dim = Path(folder), int(dim)
        self.exact_below, self.lists, self.nprobe = int(exact_below), lists, int(nprobe)
        self.regrow, self.seed = float(regrow), int(seed)
        self.watermark, self.trained_on = 0, 0
        self._ivf_of: tuple[Any, Any] | None = None  # (index, its IVF view): downcast once
        self._default_params: Any = None  # unfiltered search parameters at the default nprobe
        faiss = _faiss()
        loaded = load_committed(self.folder, POINTER, lambda state: (
            faiss.read_index(str(self.folder / state["file"])), int(state["watermark"]),
            int(state["trained_on"])))
        if loaded is not None:
            self.index, self.watermark, self.trained_on = loaded
        else:
            self.index = self._flat()

    # -- what the index is -------------------------------------------------------
    @property
    def kind(self) -> str:
        return "ivf" if self._ivf() is not None else "flat"

    def _flat(self) -> Any:
        faiss = _faiss()
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _ivf(self) -> Any:
        if self._ivf_of is None or self._ivf_of[0] is not self.index:
            faiss = _faiss()
            index = faiss.downcast_index(self.index)
            self._ivf_of = (self.index, index if isinstance(index, faiss.IndexIVF) else None)
        return self._ivf_of[1]

    def count(self) -> int:
        return int(self.index.ntotal)

    # -- changes -----------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_batch(ids, vectors, self.dim)
        self.delete(ids)
        self.index.add_with_ids(vectors, ids)

    def delete(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) and self.count():
            self.index.remove_ids(_faiss().IDSelectorBatch(ids))

    def search(self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        queries = check_queries(queries, self.dim)
        if k <= 0:
            return (np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64))
        sel = None if allowed is None else faiss.IDSelectorBatch(
            np.ascontiguousarray(allowed, dtype=np.int64))
        if self._ivf() is not None:
            probes = int(nprobe or self.nprobe)
            if sel is None and probes == self.nprobe:  # read-only in a search: made once
                if self._default_params is None:
                    self._default_params = faiss.SearchParametersIVF(nprobe=probes)
                params = self._default_params
            else:  # a caller's own nprobe is not cached (any value would stay for good)
                params = faiss.SearchParametersIVF(sel=sel, nprobe=probes)
        else:
            params = faiss.SearchParameters(sel=sel) if sel is not None else None
        scores, ids = self.index.search(queries, int(k), params=params)
        scores[ids < 0] = -np.inf
        return scores, ids

    # -- building and persisting -------------------------------------------------
    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every ``(ids, vectors)`` held, read back from the index itself."""
        faiss = _faiss()
        ivf = self._ivf()
        if ivf is None:
            flat = faiss.downcast_index(self.index.index)
            vectors = faiss.vector_to_array(flat.codes).view(np.float32).reshape(-1, self.dim)
            return faiss.vector_to_array(self.index.id_map).astype(np.int64), vectors
        ids, vectors = [], []
        lists = ivf.invlists
        for cell in range(ivf.nlist):
            n = lists.list_size(cell)
            if n:
                codes = faiss.rev_swig_ptr(lists.get_codes(cell), n * self.dim * 4)
                vectors.append(np.frombuffer(codes, dtype=np.uint8).view(np.float32)
                               .reshape(n, self.dim).copy())
                ids.append(faiss.rev_swig_ptr(lists.get_ids(cell), n).copy())
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        return np.concatenate(ids).astype(np.int64), np.concatenate(vectors)

    def needs_rebuild(self) -> bool:
        n = self.count()
        if self._ivf() is None:
            return n >= self.exact_below
        return n < self.exact_below // 2 or n > self.regrow * self.trained_on

    def rebuild(self) -> None:
        """Re-make the index for its current size: flat when small, IVF trained anew when large."""
        faiss = _faiss()
        ids, vectors = self.vectors()
        n = len(ids)
        if n < self.exact_below:
            self.index, self.trained_on = self._flat(), 0
            self._ivf_of = None  # the old index's view would keep it alive
            if n:
                self.index.add_with_ids(vectors, ids)
            return
        lists = self.lists or default_lists(n)
        sample = min(n, lists * TRAIN_POINTS_PER_LIST)
        rng = np.random.default_rng(self.seed)
        train = vectors[np.sort(rng.choice(n, sample, replace=False))] if sample < n else vectors
        logger.info("building an IVF index: %d vectors, %d lists, trained on %d", n, lists, sample)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, lists,
                                   faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = self.seed
        index.cp.min_points_per_centroid = 5  # many short lists are the point (default warns < 39)
        index.train(train)
        for start in range(0, n, 200_000):
            index.add_with_ids(vectors[start:start + 200_000], ids[start:start + 200_000])
        self.index, self.trained_on = index, n
        self._ivf_of = None  # the old index's view would keep it alive

    def commit(self, watermark: int) -> None:
        """Rebuild if the size calls for it, then write the index under a new name and
        switch the pointer to it atomically; the previous file is removed after."""
        faiss = _faiss()
        if self.needs_rebuild():
            self.rebuild()
        for stale in self.folder.glob(".*.tmp"):  # left by a commit that was killed
            stale.unlink(missing_ok=True)
        name = f"index-{int(watermark)}.faiss"
        with atomic_path(self.folder / name) as tmp:
            faiss.write_index(self.index, str(tmp))
        kill_point("store")  # the new file is in place, the pointer still names the old
        atomic_write_json(self.folder / POINTER, {
            "file": name, "watermark": int(watermark), "kind": self.kind, "count": self.count(),
            "trained_on": self.trained_on, "lists": getattr(self._ivf(), "nlist", 0)})
        self.watermark = int(watermark)
        for old in self.folder.glob("index-*.faiss"):
            if old.name != name:
                old.unlink(missing_ok=True)


__all__ = ["FaissStore", "default_lists"]
