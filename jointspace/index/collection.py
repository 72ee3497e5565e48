"""Collections: items embedded by one model, searchable by any modality and by mixes.

A collection folder::

    collection.json        what made it: model folder and fingerprint, dim, store, roots
    catalog.sqlite         items, their vectors and the quarantine (the source of truth)
    stores/<modality>/     one vector store per indexed modality (derived, rebuildable)
    writer.lock            held by the one process writing (``jointspace index``)

Reading never takes the lock: a reader opens each store at the change number
it was committed at and replays the catalog's later changes in memory, so
searches keep working, and see new items, while an ingest runs.

This module makes, opens and writes collections and keeps their stores up to
date; searching is :mod:`jointspace.index.search`'s, warming up
:mod:`jointspace.index.warm`'s (both parts of :class:`Collection`).
"""
from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import JointspaceError
from ..fileio import atomic_write_json
from ..model import JointModel, load, resolve_device
from ..model_io import CONFIG_FILE, folder_fingerprint, model_fingerprint
from ..progress import logger
from ..vectors import prefix_normalise
from . import exact, faiss_store  # noqa: F401  (register the "exact" and "faiss" stores)
from .batching import QueryBatcher
from .catalog import Catalog, ItemRow, Quarantined
from .lock import LOCK_FILE, WriterLock  # noqa: F401 (LOCK_FILE: importable from here as before)
from .query import Calibration
from .search import EXACT_FILTER_MAX, MAX_QUERY_TEXT, RERANK_FACTOR, Hit, Searching  # noqa: F401 (as before)
from .store import STORES, VectorStore, open_store
from .warm import WarmingUp

FORMAT = 2
INFO_FILE = "collection.json"
CATALOG_FILE = "catalog.sqlite"


class ModelMovedError(JointspaceError):
    """The collection's model is not where ``collection.json`` says (moved, or replaced)."""


def check_model_arg(collection: str | Path, model_dir: str | Path) -> None:
    """Raise :class:`ModelMovedError` if ``model_dir``, given to index into ``collection``, is
    the folder the collection records and it is gone: the user should give its new place."""
    info, model_dir = Path(collection) / INFO_FILE, Path(model_dir).resolve()
    if not (model_dir / CONFIG_FILE).is_file() and info.is_file() and \
            json.loads(info.read_text()).get("model") == str(model_dir):
        raise ModelMovedError(f"the model folder {model_dir} of {collection} is gone (moved?): "
                              "give its new place as the model (jointspace index NEW_PLACE SOURCE "
                              "--collection …)")


class Collection(Searching, WarmingUp):
    """An opened collection. Make one with :meth:`create` (or ``jointspace index``); search
    it with :meth:`~jointspace.index.search.Searching.search`.

    >>> col = Collection.open("runs/demo/collection")                  # doctest: +SKIP
    >>> col.search(text="a red circle", k=5)                           # doctest: +SKIP
    >>> col.search(terms=[Term("image", "q.png"), Term("text", "red", 0.5),
    ...                   Term("text", "blurry", -0.5)], where={"label": "circle"})  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, *, device: str | None = None,
                 model: JointModel | str | Path | None = None) -> None:
        self.path = Path(path)
        info_file = self.path / INFO_FILE
        if not info_file.is_file():
            raise JointspaceError(f"not a collection (no {INFO_FILE}): {self.path}")
        self._info_stamp = info_file.stat().st_mtime_ns
        self.info = json.loads(info_file.read_text())
        if self.info.get("format") != FORMAT:
            raise JointspaceError(f"{self.path} was written by an older jointspace (format "
                                  f"{self.info.get('format', 1)}); index the source again into a "
                                  "new collection folder")
        self.catalog = Catalog(self.path / CATALOG_FILE)
        self.device = device
        self._model: JointModel | None = None
        self._model_dir: Path | None = None  # where the model was given from, if not the recorded place
        self._stores: dict[str, VectorStore] = {}
        self._applied: dict[str, int] = {}  # catalog change each in-memory store reflects
        self._tokens: dict[str, tuple] = {}  # the catalog files' state when last caught up
        self._calibration: dict[str, tuple[int, Calibration]] = {}
        self._lock = threading.RLock()
        # queries from concurrent threads (a server) are encoded in shared batches
        self._batcher = QueryBatcher(lambda modality, items: self.model.encode(modality, list(items)))
        if model is not None:
            self.use_model(model)
            self.record_model_dir()  # if it moved: later opens find it without model=

    def reload_info(self) -> None:
        """Reread ``collection.json`` if a writer changed it (new roots, new modalities)."""
        path = self.path / INFO_FILE
        stamp = path.stat().st_mtime_ns
        if stamp != getattr(self, "_info_stamp", None):
            self.info, self._info_stamp = json.loads(path.read_text()), stamp

    # -- making and opening ------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, **kwargs: Any) -> "Collection":
        """Open a collection; queries are embedded on ``device`` ("auto": CUDA if present)."""
        return cls(path, **kwargs)

    @classmethod
    def create(cls, path: str | Path, model_dir: str | Path, *, modalities: Sequence[str] | None = None,
               store: str = "faiss", store_params: Mapping[str, Any] | None = None,
               prefix_dim: int | None = None, device: str | None = None) -> "Collection":
        """Make a collection for vectors of the model in ``model_dir``, or open the one at
        ``path`` if it was made with the same model (a different model is an error)."""
        path, model_dir = Path(path), Path(model_dir).resolve()
        check_model_arg(path, model_dir)
        fingerprint = folder_fingerprint(model_dir)
        if (path / INFO_FILE).is_file():
            col = cls(path, device=device)
            if col.info["fingerprint"] != fingerprint:
                raise JointspaceError(
                    f"{path} holds vectors of another model (fingerprint {col.info['fingerprint']}, "
                    f"made from {col.info['model']}); {model_dir} has fingerprint {fingerprint}. "
                    "Index into a new collection folder")
            col._model_dir = model_dir  # the same model, wherever it lives now
            return col
        model = load(model_dir)
        dim = model.config.embed_dim
        if prefix_dim is not None and prefix_dim not in model.config.nested_dims():
            raise JointspaceError(f"prefix_dim {prefix_dim} is not a nested size of this model: "
                                  f"{model.config.nested_dims()}")
        needs = getattr(STORES.get(store), "needs", None)
        if needs is not None:  # a missing extra, before anything is written to the folder
            needs()
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / INFO_FILE, {
            "format": FORMAT, "model": str(model_dir), "fingerprint": fingerprint,
            "model_fingerprint": model_fingerprint(model), "dim": dim,
            "modalities": list(modalities or model.modalities), "store": store,
            "store_params": dict(store_params or {}), "prefix_dim": prefix_dim, "roots": []})
        col = cls(path, device=device)
        col._model = model.to(resolve_device(device))
        return col

    def add_roots(self, roots: Sequence[Path]) -> None:
        """Record folders whose files this collection may serve (the writer calls this)."""
        new = [r for r in dict.fromkeys(str(Path(r).resolve()) for r in roots)
               if r not in self.info["roots"]]
        if new:
            self.info["roots"] += new
            atomic_write_json(self.path / INFO_FILE, self.info)

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    @property
    def modalities(self) -> list[str]:
        """The modalities whose vectors are indexed (search targets)."""
        return list(self.info["modalities"])

    def __len__(self) -> int:
        return self.catalog.count()

    # -- the model ---------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        """The folder queries are embedded with: the one given (``model=DIR`` or
        :meth:`create`'s, its fingerprint checked), else the one ``collection.json`` records."""
        return self._model_dir or Path(self.info["model"])

    def use_model(self, model: JointModel | str | Path) -> None:
        """Embed queries with ``model``: a loaded model, or its folder wherever it lives now
        (loaded on first use). It must be the model the collection was made with: its
        fingerprint is checked here."""
        if isinstance(model, JointModel):
            self._same_model(model_fingerprint(model), self.info["model_fingerprint"])
            self._model = model.eval().to(resolve_device(self.device))
            return
        folder = Path(model).resolve()
        self._same_model(folder_fingerprint(folder), self.info["fingerprint"])
        with self._lock:
            self._model_dir, self._model = folder, None

    def _same_model(self, found: str, expected: str, advice: str = "") -> None:
        if found != expected:
            raise JointspaceError(f"this model (fingerprint {found}) did not make {self.path} "
                                  f"(fingerprint {expected}, {self.info['model']}); its vectors "
                                  f"would not be comparable{advice}")

    def check_model(self) -> Path:
        """The folder of the model queries are embedded with, checked without loading it:
        the one given (already checked), else the recorded one, which must still hold the
        model. :class:`ModelMovedError` says how to give its new place otherwise."""
        if self._model_dir is not None:
            return self._model_dir
        folder = Path(self.info["model"])
        advice = "give its new place with --model DIR (in Python: Collection.open(..., model=DIR))"
        if not (folder / CONFIG_FILE).is_file():
            raise ModelMovedError(f"the model folder {folder} of {self.path} is gone (moved?): "
                                  + advice)
        try:
            self._same_model(folder_fingerprint(folder), self.info["fingerprint"],
                             f": {folder} holds another model now; " + advice)
        except JointspaceError as e:
            raise ModelMovedError(str(e)) from None
        return folder

    @property
    def model(self) -> JointModel:
        """The model that made the vectors, loaded on first use (its fingerprint checked)."""
        if self._model is not None:  # no lock once loaded: searches hold it meanwhile
            return self._model
        with self._lock:
            if self._model is None:
                self._model = load(self.check_model()).eval().to(resolve_device(self.device))
            return self._model

    def model_moved(self) -> bool:
        """Whether the model was given from a new place (:attr:`model_dir`) because the folder
        ``collection.json`` records no longer holds it."""
        recorded = Path(self.info["model"])
        if self._model_dir is None or self._model_dir == recorded:
            return False
        try:
            return folder_fingerprint(recorded) != self.info["fingerprint"]
        except JointspaceError:  # gone, or no longer a model folder
            return True

    def record_model_dir(self, *, locked: bool = False) -> bool:
        """Record the model's new place (:attr:`model_dir`) in ``collection.json`` if it
        moved (:meth:`model_moved`), so that later opens need no ``model=``. Takes the
        writer lock unless the caller holds it (``locked``); returns whether it recorded
        (a busy writer or a read-only folder: a warning, and False)."""
        if not self.model_moved():
            return False
        try:
            with (contextlib.nullcontext() if locked else WriterLock(self.path)):
                self.reload_info()
                self.info["model"] = str(self.model_dir)
                atomic_write_json(self.path / INFO_FILE, self.info)
        except (JointspaceError, OSError) as e:
            logger.warning("the model's new place was not recorded in %s (%s); give it again "
                           "next time", self.path / INFO_FILE, e)
            return False
        logger.info("recorded the model's new place %s in %s", self.model_dir, self.path / INFO_FILE)
        return True

    # -- stores ------------------------------------------------------------------
    def _store_dim(self) -> int:
        return int(self.info.get("prefix_dim") or self.dim)

    def _prefix(self, vectors: np.ndarray) -> np.ndarray:
        p = self.info.get("prefix_dim")
        if not p or p == self.dim:
            return vectors
        return prefix_normalise(np.asarray(vectors, dtype=np.float32), p)

    def store(self, modality: str) -> VectorStore:
        """The store of one indexed modality, brought up to date with the catalog."""
        if modality not in self.modalities:
            self.reload_info()  # an ingest may have added it since this collection was opened
        if modality not in self.modalities:
            raise JointspaceError(f"{self.path} indexes {', '.join(self.modalities)}; "
                                  f"not {modality!r}")
        with self._lock:
            if modality not in self._stores:
                self._stores[modality] = open_store(self.info["store"], self.path / "stores" / modality,
                                                    self._store_dim(), **self.info["store_params"])
            store = self._stores[modality]
            self._catch_up(modality, store)
            return store

    def _catch_up(self, modality: str, store: VectorStore) -> None:
        token = self.catalog.change_token()
        if modality in self._applied and self._tokens.get(modality) == token:
            return  # no process has committed since the last look
        self._tokens[modality] = token
        # replaying a change twice is harmless (adds are upserts), so read seq first
        seq, since = self.catalog.seq(), self._applied.get(modality, store.watermark)
        if since >= seq:
            return
        ids, vectors, gone = self.catalog.changes(modality, since, self.dim)
        store.delete(gone)
        if len(ids):
            store.add(ids, self._prefix(vectors))
        self._applied[modality] = seq

    def sync(self) -> None:
        """Bring every store up to date and persist it (the writer calls this after an ingest)."""
        with self._lock:
            seq = self.catalog.seq()
            for modality in self.modalities:
                store = self.store(modality)
                if store.watermark < seq or not (self.path / "stores" / modality / "store.json").is_file():
                    store.commit(self._applied.get(modality, seq))
                    logger.info("store %s: %d vectors (%s)", modality, store.count(),
                                getattr(store, "kind", self.info["store"]))
            self.catalog.checkpoint()

    # -- writing -----------------------------------------------------------------
    def write(self, rows: Sequence[ItemRow], bad: Sequence[Quarantined] = ()) -> int:
        """Upsert items (with a vector per modality) and quarantine entries in one
        transaction; visible to searches at once, persisted in stores at :meth:`sync`."""
        keys = [row.key for row in rows]
        if len(set(keys)) != len(keys):
            raise JointspaceError("a write repeats an item key")
        for row in rows:
            for modality, vector in row.vectors.items():
                if modality not in self.modalities:
                    raise JointspaceError(f"item {row.key}: {self.path} does not index {modality!r}")
                if np.shape(vector) != (self.dim,) or not np.isfinite(vector).all():
                    raise JointspaceError(f"item {row.key}: its {modality} vector has shape "
                                          f"{np.shape(vector)} (or non-finite values); the "
                                          f"collection holds {self.dim}-dim vectors")
        return self.catalog.write(rows, bad)

    def delete(self, keys: Sequence[str]) -> int:
        """Delete items by key; returns how many existed."""
        return self.catalog.delete_keys(keys)[1]

    # -- reading -----------------------------------------------------------------
    def get(self, item_id: int) -> dict[str, Any]:
        item = self.catalog.item(item_id)
        if item is None:
            raise KeyError(item_id)
        return item

    def quarantined(self) -> list[Quarantined]:
        return self.catalog.quarantined()

    def model_modalities(self) -> list[str]:
        """The modalities a query can be given in (the model's towers), without loading it."""
        from ..model_io import read_config

        if self._model is not None:
            return list(self._model.modalities)
        if not hasattr(self, "_towers"):
            self._towers = list(read_config(self.model_dir).towers) \
                if self.model_dir.is_dir() else list(self.model.modalities)
        return self._towers


__all__ = ["Collection", "Hit", "ModelMovedError", "WriterLock"]
