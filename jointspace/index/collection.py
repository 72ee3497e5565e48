"""Collections: items embedded by one model, searchable by any modality and by mixes.

A collection folder::

    collection.json        what made it: model folder and fingerprint, dim, store, roots
    catalog.sqlite         items, their vectors and the quarantine (the source of truth)
    stores/<modality>/     one vector store per indexed modality (derived, rebuildable)
    writer.lock            held by the one process writing (``jointspace index``)

Reading never takes the lock: a reader opens each store at the change number
it was committed at and replays the catalog's later changes in memory, so
searches keep working, and see new items, while an ingest runs.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import JointspaceError
from ..fileio import atomic_write_json
from ..model import JointModel, load, resolve_device
from ..model_io import CONFIG_FILE, folder_fingerprint, model_fingerprint
from ..progress import logger
from . import exact, faiss_store  # noqa: F401  (register the "exact" and "faiss" stores)
from .batching import QueryBatcher
from .catalog import Catalog, ItemRow, Quarantined
from .query import CALIBRATION_SAMPLE, Calibration, Term, check_terms, compose
from .store import VectorStore, open_store

FORMAT = 2
INFO_FILE = "collection.json"
CATALOG_FILE = "catalog.sqlite"
LOCK_FILE = "writer.lock"
EXACT_FILTER_MAX = 20_000  # a filter leaving this few items is answered exactly from the catalog
#: characters of a query text that are tokenised: the rest is cut first (no text tower reads
#: that far: 512 tokens are ~2,500 characters; tokenising 2 MB took 2 s)
MAX_QUERY_TEXT = 10_000
RERANK_FACTOR = 10  # two-stage search: prefix candidates per final result


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


@dataclass(frozen=True)
class Hit:
    """One search result: rank (1-based, counting across pages), score, and the item."""

    rank: int
    score: float
    item: dict[str, Any]


class WriterLock:
    """An exclusive, non-blocking lock on a collection (released by the OS if the holder dies).

    The holder signs the lock file with its pid, host and start time; a second writer's
    error names them. The signature is one fixed-size write over the old one (never an
    empty file in between), and a second writer that finds the file unsigned (the holder
    took the lock a moment ago and is signing it) waits up to ``SIGN_WAIT`` seconds for it."""

    RECORD_BYTES = 256
    SIGN_WAIT = 2.0

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> "WriterLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise JointspaceError(f"{self.path.parent} is being written by another process "
                                  f"({holder}); wait for it to finish") from None
        self._sign(fd)
        self._fd = fd
        return self

    def _sign(self, fd: int) -> None:
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
        os.pwrite(fd, record[:self.RECORD_BYTES].ljust(self.RECORD_BYTES), 0)
        os.ftruncate(fd, self.RECORD_BYTES)  # a longer record of an older version ends here

    def _holder(self, fd: int) -> str:
        """``pid N on HOST, since TIME`` of the holder, read from the lock file."""
        deadline = time.monotonic() + self.SIGN_WAIT
        while True:
            raw = os.pread(fd, self.RECORD_BYTES, 0).decode(errors="replace").strip()
            if raw.isdigit():  # signed by an older jointspace: a bare pid
                return f"pid {raw}"
            try:
                who = json.loads(raw)
                return f"pid {who['pid']} on {who['host']}, since {who['since']}"
            except (ValueError, TypeError, KeyError):
                if time.monotonic() > deadline:
                    return "pid unknown: the lock file is not signed"
                time.sleep(0.02)

    def __exit__(self, *_: Any) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Collection:
    """An opened collection. Make one with :meth:`create` (or ``jointspace index``).

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
        v = np.asarray(vectors, dtype=np.float32)[..., :p]
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)

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

    def calibration(self, modality: str) -> Calibration:
        """Mean and covariance of a modality's vectors (see :mod:`jointspace.index.query`)."""
        with self._lock:
            count = self.store(modality).count()
            fitted_at, cal = self._calibration.get(modality, (-1, None))
            if cal is None or abs(count - fitted_at) > 0.05 * fitted_at:  # refit as it grows
                cal = Calibration.fit(self.catalog.sample_vectors(modality, CALIBRATION_SAMPLE))
                self._calibration[modality] = (count, cal)
            return cal

    def encode_terms(self, terms: Sequence[Term]) -> list[np.ndarray]:
        """The unit vector of each term (``vector`` terms are checked and normalised; a text
        is encoded from its first :data:`MAX_QUERY_TEXT` characters)."""
        vectors = []
        for i, term in enumerate(terms):
            if term.modality == "vector":
                try:
                    v = np.asarray(term.value, dtype=np.float32).reshape(-1)
                except (TypeError, ValueError):
                    raise JointspaceError(f"query term {i + 1}: a vector must be a list of numbers, "
                                          f"not {type(term.value).__name__}") from None
                if v.shape != (self.dim,) or not np.isfinite(v).all() or not np.any(v):
                    raise JointspaceError(f"query term {i + 1}: a vector must hold {self.dim} "
                                          f"finite values, not all zero; got shape {v.shape}")
                vectors.append(v / np.linalg.norm(v))
            else:
                value = term.value
                if term.modality == "text" and isinstance(value, str):
                    value = value[:MAX_QUERY_TEXT]
                vectors.append(self._batcher.encode(term.modality, value))
        return vectors

    def search(self, *, text: str | None = None, image: Any = None, audio: Any = None,
               vector: Any = None, terms: Sequence[Term] = (), k: int = 10, offset: int = 0,
               where: Mapping[str, Any] | None = None, target: str | None = None,
               calibrate: bool = True, nprobe: int | None = None) -> list[Hit]:
        """Search by any mix of text, image, audio and vectors (each weight 1), plus
        weighted ``terms``; ``where`` filters on item fields or metadata keys (one no item
        has raises :class:`~jointspace.index.filters.UnknownFilterError`); results
        ``offset`` … ``offset + k`` of the ranking; ``target`` is the indexed modality
        searched (default: the first). See :mod:`jointspace.index.query` for scoring."""
        plain = [Term(m, v) for m, v in (("text", text), ("image", image), ("audio", audio),
                                          ("vector", vector)) if v is not None]
        terms = check_terms([*plain, *terms], self.model_modalities())
        if not isinstance(k, int) or not isinstance(offset, int) or k < 1 or offset < 0:
            raise JointspaceError(f"k must be ≥ 1 and offset ≥ 0 (got k={k!r}, offset={offset!r})")
        target = target or self.modalities[0]
        store = self.store(target)
        vectors = self.encode_terms(terms)
        cal = self.calibration(target) if calibrate and len(terms) > 1 else None
        query, shift = compose(vectors, [t.weight for t in terms], cal)
        allowed = None if where is None else self.catalog.filter_ids(where)  # unknown field: error
        want = min(offset + k, store.count())  # never deeper than the store: a huge offset
        if offset >= want:                     # must not allocate its size
            return []
        if allowed is not None and (len(allowed) <= EXACT_FILTER_MAX or getattr(store, "kind", "") == "flat"):
            ids, vecs = self.catalog.vectors(target, allowed, self.dim)
            scores = vecs @ query
            order = np.lexsort((ids, -scores))[:want]
            found_ids, found = ids[order], scores[order]
        elif self.info.get("prefix_dim"):
            _, cand = self._search_store(store, self._prefix(query), want * RERANK_FACTOR, allowed, nprobe)
            ids, vecs = self.catalog.vectors(target, cand[cand >= 0], self.dim)
            scores = vecs @ query
            order = np.lexsort((ids, -scores))[:want]
            found_ids, found = ids[order], scores[order]
        else:
            found, found_ids = self._search_store(store, query, want, allowed, nprobe)
            keep = found_ids >= 0
            found, found_ids = found[keep], found_ids[keep]
        found, found_ids = found[offset:], found_ids[offset:]
        items = self.catalog.items(found_ids)
        return [Hit(offset + i + 1, float(s) - shift, items[int(j)])
                for i, (s, j) in enumerate(zip(found, found_ids)) if int(j) in items]

    def search_vectors(self, queries: np.ndarray, k: int = 10, *, target: str | None = None,
                       nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The bulk path: ``(scores [Q, k], item ids [Q, k])`` for a batch of query vectors,
        without item lookups (ids ``-1`` where fewer than ``k`` items exist)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1:] != (self.dim,):
            raise JointspaceError(f"queries have shape {queries.shape}; the collection holds "
                                  f"{self.dim}-dim vectors")
        store = self.store(target or self.modalities[0])
        kwargs = {"nprobe": nprobe} if nprobe is not None else {}
        if not self.info.get("prefix_dim"):
            with self._lock:
                return store.search(queries, k, **kwargs)
        with self._lock:
            _, cand = store.search(self._prefix(queries), k * RERANK_FACTOR, **kwargs)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        for row, (query, found) in enumerate(zip(queries, cand)):
            have, vecs = self.catalog.vectors(target or self.modalities[0], found[found >= 0], self.dim)
            s = vecs @ query
            order = np.lexsort((have, -s))[:k]
            scores[row, :len(order)], ids[row, :len(order)] = s[order], have[order]
        return scores, ids

    def _search_store(self, store: VectorStore, query: np.ndarray, k: int,
                      allowed: np.ndarray | None, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        kwargs = {"nprobe": nprobe} if nprobe is not None else {}
        with self._lock:
            scores, ids = store.search(query[None, :], k, allowed=allowed, **kwargs)
        return scores[0], ids[0]

    def warm_up(self) -> float:
        """Encode one query in each modality the model takes (text, image, audio) and search
        each indexed store once, so that the first real query costs what any does (a server
        does this before it reports ready). Images and audio are files written to a
        temporary folder and taken the way a query's file is (checked, then decoded by the
        tower): the audio a 44.1 kHz WAV, so the decoder (soundfile) and the resampler
        (``scipy.signal``) are loaded here, not by the first real clip; the image a JPEG,
        through :func:`~jointspace.towers.vision.open_image`. Returns the seconds it took."""
        import tempfile

        from PIL import Image

        from .query import file_problem

        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="jointspace-warm-up-") as tmp:
            def image() -> Path:
                path = Path(tmp) / "warm-up.jpg"
                Image.new("RGB", (64, 64), "gray").save(path, "JPEG")
                return path

            def audio() -> Path:
                import soundfile

                path, rate = Path(tmp) / "warm-up.wav", 44_100
                t = np.arange(rate // 4, dtype=np.float32) / rate  # 0.25 s of 440 Hz
                soundfile.write(path, 0.1 * np.sin(2 * np.pi * 440 * t), rate, subtype="PCM_16")
                return path
            samples = {"text": lambda: "warm-up", "image": image, "audio": audio}
            for modality in self.model_modalities():
                if modality in samples:
                    item = samples[modality]()
                    problem = file_problem(modality, item)  # what a query's file goes through
                    if problem:
                        raise JointspaceError(f"warming up {modality}: {problem}")
                    self._batcher.encode(modality, item)
        probe = np.full(self.dim, self.dim ** -0.5, np.float32)
        for modality in self.modalities:
            if self.store(modality).count():
                self.search_vectors(probe, 1, target=modality)
        return time.perf_counter() - started

    def model_modalities(self) -> list[str]:
        """The modalities a query can be given in (the model's towers), without loading it."""
        from ..model_io import read_config

        if self._model is not None:
            return list(self._model.modalities)
        if not hasattr(self, "_towers"):
            self._towers = list(read_config(self.model_dir).towers) \
                if self.model_dir.is_dir() else list(self.model.modalities)
        return self._towers

    def search_text(self, text: str, k: int = 10, **kwargs: Any) -> list[Hit]:
        return self.search(text=text, k=k, **kwargs)

    def search_image(self, image: Any, k: int = 10, **kwargs: Any) -> list[Hit]:
        return self.search(image=image, k=k, **kwargs)

    def search_audio(self, audio: Any, k: int = 10, **kwargs: Any) -> list[Hit]:
        return self.search(audio=audio, k=k, **kwargs)


__all__ = ["Collection", "Hit", "ModelMovedError", "WriterLock"]
