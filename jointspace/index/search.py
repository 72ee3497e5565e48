"""Searching a collection: the terms of a query (an item of any registered modality, a
vector, weighted terms) encoded, composed (:mod:`jointspace.index.query`) and looked up in
the stores of one or several indexed modalities (the *targets*) — exactly, from the
catalog, when a filter leaves few items; through the store's prefixes and re-ranked at
full dimension when it holds prefixes.

**Several targets.** Cosines to items of different modalities are not on one scale: in
one joint space a text query's cosines to texts sat around 0.92 and to images around
0.02 (the modality gap; the tests' trained model), so a ranking merged by raw cosine is
the query's own modality first, whatever the others hold. With ``calibrate`` (the
default) each target's scores are therefore standardised over that target's vectors —
the calibration of :mod:`jointspace.index.query`, applied to a single term too — and
merged: a score reads "standard deviations above that modality's average for this
query". Without ``calibrate`` raw cosines are merged (as are those of a target holding a
single item). An item with vectors in several targets (an image and its caption) is
ranked once, at its best score.

:class:`Searching` is the searching half of :class:`~jointspace.index.Collection`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import JointspaceError
from ..modalities import MODALITIES
from ..vectors import top_k
from .query import CALIBRATION_SAMPLE, Calibration, Term, check_terms, compose
from .store import VectorStore

EXACT_FILTER_MAX = 20_000  # a filter leaving this few items is answered exactly from the catalog
#: characters of a query text that are tokenised: the rest is cut first (no text tower reads
#: that far: 512 tokens are ~2,500 characters; tokenising 2 MB took 2 s)
MAX_QUERY_TEXT = 10_000
RERANK_FACTOR = 10  # two-stage search: prefix candidates per final result
#: modality names this module's code uses: :meth:`Searching.search`'s keyword arguments
#: ``text=``, ``image=``, ``audio=`` (in this order), the documented API of earlier versions
#: kept for users' code; any other registered modality is a keyword of its own name
USER_FACING_DEFAULTS = ("text", "image", "audio")
VECTOR = "vector"  # the modality of a term that is a query vector
ALL_TARGETS = "*"  # target: every indexed modality


@dataclass(frozen=True)
class Hit:
    """One search result: rank (1-based, counting across pages), score, and the item."""

    rank: int
    score: float
    item: dict[str, Any]


def query_terms(items: Mapping[str, Any], vector: Any = None) -> list[Term]:
    """The terms (weight 1) of a search's keywords: ``items`` maps a registered modality's
    name to an item (None: not given), ``vector`` a query vector. A name that is no
    registered modality is a :class:`TypeError`, as an unknown keyword is."""
    unknown = [name for name in items if name not in MODALITIES]
    if unknown:
        raise TypeError(f"search() got an unexpected keyword argument {unknown[0]!r} (an item "
                        f"is given by its modality's name: {', '.join(MODALITIES.names())})")
    given = [Term(m, v) for m, v in items.items() if v is not None]
    return given + ([Term(VECTOR, vector)] if vector is not None else [])


class Searching:
    """Queries on a collection: a mixin of :class:`~jointspace.index.Collection`, whose
    ``catalog``, ``store()``, ``dim``, ``modalities``, ``model_modalities()``, ``_prefix()``,
    query batcher, lock and calibration cache it uses."""

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
        """The unit vector of each term (``vector`` terms are checked and normalised; a text,
        the value of a text-like modality, is encoded from its first :data:`MAX_QUERY_TEXT`
        characters)."""
        vectors = []
        for i, term in enumerate(terms):
            if term.modality == VECTOR:
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
                plugin = MODALITIES.get(term.modality) if term.modality in MODALITIES else None
                if plugin is not None and plugin.text_like and isinstance(value, str):
                    value = value[:MAX_QUERY_TEXT]
                vectors.append(self._batcher.encode(term.modality, value))
        return vectors

    def targets(self, target: str | Sequence[str] | None = None) -> list[str]:
        """The indexed modalities a search with ``target`` looks in: None, the first (as
        earlier versions did); ``"*"`` or an empty list, every one; a modality's name, a
        list of names or a comma-separated string of them (``"image,audio"``). A name
        the collection does not index raises :class:`~jointspace.errors.JointspaceError`."""
        if target is None or isinstance(target, str) and not target.strip(" ,"):
            return self.modalities[:1]  # a blank form field is no target given
        if isinstance(target, str):
            target = [] if target.strip() == ALL_TARGETS else \
                [t.strip() for t in target.split(",") if t.strip()]
        if not target:
            self.reload_info()  # an ingest may have added a modality since this was opened
            return self.modalities
        names = list(dict.fromkeys(target))
        unknown = [t for t in names if t not in self.modalities]
        if unknown:
            self.reload_info()
            unknown = [t for t in names if t not in self.modalities]
        if unknown:
            raise JointspaceError(f"{self.path} indexes {', '.join(self.modalities)}; "
                                  f"not {', '.join(map(repr, unknown))}")
        return names

    def search(self, *, text: str | None = None, image: Any = None, audio: Any = None,
               vector: Any = None, terms: Sequence[Term] = (), k: int = 10, offset: int = 0,
               where: Mapping[str, Any] | None = None, target: str | Sequence[str] | None = None,
               calibrate: bool = True, nprobe: int | None = None, **items: Any) -> list[Hit]:
        """Search by any mix of items and vectors (each weight 1) — ``text=``, ``image=``,
        ``audio=``, or any registered modality by its name (``search(tabular="1;2;3")``) —
        plus weighted ``terms``; ``where`` filters on item fields or metadata keys (one no
        item has raises :class:`~jointspace.index.filters.UnknownFilterError`); results
        ``offset`` … ``offset + k`` of the ranking; ``target`` the indexed modalities
        searched (:meth:`targets`; default: the first). See :mod:`jointspace.index.query`
        for scoring, and this module for how several targets' scores are merged."""
        given = {**dict(zip(USER_FACING_DEFAULTS, (text, image, audio))), **items}
        terms = check_terms([*query_terms(given, vector), *terms], self.model_modalities())
        if not isinstance(k, int) or not isinstance(offset, int) or k < 1 or offset < 0:
            raise JointspaceError(f"k must be ≥ 1 and offset ≥ 0 (got k={k!r}, offset={offset!r})")
        targets = self.targets(target)
        stores = [self.store(t) for t in targets]
        vectors = self.encode_terms(terms)
        weights = [t.weight for t in terms]
        calibrated = calibrate and (len(terms) > 1 or len(targets) > 1)
        allowed = None if where is None else self.catalog.filter_ids(where)  # unknown field: error
        if offset >= sum(store.count() for store in stores):
            return []  # past every item: a huge offset must not rank (or allocate) anything
        ranked = []
        for modality, store in zip(targets, stores):
            want = min(offset + k, store.count())  # never deeper than the store
            if want == 0:
                continue
            # a target of one item has no spread to standardise by: its raw cosine is merged
            cal = self.calibration(modality) \
                if calibrated and (len(targets) == 1 or store.count() > 1) else None
            query, shift = compose(vectors, weights, cal)
            scores, ids = self._rank(modality, store, query, want, allowed, nprobe)
            ranked.append((scores.astype(np.float64) - shift, ids))
        if not ranked:
            return []
        found, found_ids = ranked[0] if len(ranked) == 1 else merge(ranked, offset + k)
        found, found_ids = found[offset:], found_ids[offset:]
        rows = self.catalog.items(found_ids)
        return [Hit(offset + i + 1, float(s), rows[int(j)])
                for i, (s, j) in enumerate(zip(found, found_ids)) if int(j) in rows]

    def _rank(self, modality: str, store: VectorStore, query: np.ndarray, want: int,
              allowed: np.ndarray | None, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` of the ``want`` best items of one target's store, best first."""
        if allowed is not None and (len(allowed) <= EXACT_FILTER_MAX or getattr(store, "kind", "") == "flat"):
            ids, vecs = self.catalog.vectors(modality, allowed, self.dim)
            scores = vecs @ query
            order = top_k(scores, want, ids)
            return scores[order], ids[order]
        if self.info.get("prefix_dim"):
            _, cand = self._search_store(store, self._prefix(query), want * RERANK_FACTOR, allowed, nprobe)
            ids, vecs = self.catalog.vectors(modality, cand[cand >= 0], self.dim)
            scores = vecs @ query
            order = top_k(scores, want, ids)
            return scores[order], ids[order]
        found, found_ids = self._search_store(store, query, want, allowed, nprobe)
        keep = found_ids >= 0
        return found[keep], found_ids[keep]

    def count_matches(self, where: Mapping[str, Any] | None = None,
                      target: str | Sequence[str] | None = None) -> int:
        """How many items a search over ``target`` (:meth:`targets`) with ``where`` ranks:
        those with a vector of a target modality that pass the filter, counted once each
        (in SQL on the catalog; nothing is searched). A filter on a field no item has
        raises :class:`~jointspace.index.filters.UnknownFilterError`, as :meth:`search` does."""
        targets = self.targets(target)
        if where is None and len(targets) == 1:
            return self.store(targets[0]).count()  # what the search itself ranks
        return self.catalog.count_items(targets, where)

    def item_vector(self, item_id: int, modality: str | None = None) -> np.ndarray:
        """The stored vector of item ``item_id`` (full dimension, unit length): the one of
        its own modality, or of ``modality`` (an image's caption: ``"text"``) — what a
        "more like this" query is, without encoding anything again. :class:`KeyError` for
        an id no item has; :class:`~jointspace.errors.JointspaceError` if the item has no
        vector of that modality."""
        item = self.get(item_id)
        modality = modality or item["modality"]
        _, vecs = self.catalog.vectors(modality, [int(item_id)], self.dim)
        if not len(vecs):
            held = [m for m in self.catalog.modalities()
                    if len(self.catalog.vectors(m, [int(item_id)], self.dim)[0])]
            raise JointspaceError(f"item {item_id} has no {modality} vector (it has "
                                  f"{', '.join(held) or 'none'})")
        return vecs[0].copy()

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
            order = top_k(s, k, have)
            scores[row, :len(order)], ids[row, :len(order)] = s[order], have[order]
        return scores, ids

    def _search_store(self, store: VectorStore, query: np.ndarray, k: int,
                      allowed: np.ndarray | None, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        kwargs = {"nprobe": nprobe} if nprobe is not None else {}
        with self._lock:
            scores, ids = store.search(query[None, :], k, allowed=allowed, **kwargs)
        return scores[0], ids[0]

    def search_text(self, text: str, k: int = 10, **kwargs: Any) -> list[Hit]:
        return self.search(text=text, k=k, **kwargs)

    def search_image(self, image: Any, k: int = 10, **kwargs: Any) -> list[Hit]:
        return self.search(image=image, k=k, **kwargs)

    def search_audio(self, audio: Any, k: int = 10, **kwargs: Any) -> list[Hit]:
        return self.search(audio=audio, k=k, **kwargs)


def merge(ranked: Sequence[tuple[np.ndarray, np.ndarray]], want: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``want`` best of several targets' rankings ``(scores, ids)``, best first (ties in
    id order); an id in several counts once, at its best score. Each ranking holding its
    own best ``want`` is enough: an item among the best ``want`` overall is among the best
    ``want`` of the target where it scores best."""
    scores = np.concatenate([s for s, _ in ranked])
    ids = np.concatenate([i for _, i in ranked]).astype(np.int64)
    order = np.lexsort((-scores, ids))  # by id, its best score first
    scores, ids = scores[order], ids[order]
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    scores, ids = scores[first], ids[first]
    best = top_k(scores, want, ids)
    return scores[best], ids[best]


__all__ = ["ALL_TARGETS", "EXACT_FILTER_MAX", "Hit", "MAX_QUERY_TEXT", "RERANK_FACTOR", "Searching",
           "merge", "query_terms"]
