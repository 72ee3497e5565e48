"""Cross-modal retrieval with the standard multi-caption protocol (CLIP_benchmark's,
with identical captions as one answer).

Rows pair an ``a`` item with a ``b`` item (an image and a caption); one ``a`` item
may stand on several rows (COCO: five captions per image), and is then one item
(``image_keys``: its resolved path, or the hash of its bytes). Per direction:

* **b→a** (text→image): each *row*'s ``b`` item is a query; the gallery is the
  *distinct* ``a`` items; the positives are the ``a`` items of every row that has
  the query's key. Averaged over rows.
* **a→b** (image→text): each *distinct* ``a`` item is a query; the gallery is the
  rows' ``b`` items; the positives are the ``b`` items of every row that shares a
  key with one of the item's rows. Averaged over distinct items.

A row's key is its ``group`` when given (an explicit ``group`` column wins), else
its exact caption. The **strict** figures key each row by itself (only an item's
own pairs count); their **ceiling** is the best any model can reach when
identical captions tie. Ranks and the tie rule: :mod:`.ranks`. Chance: the
expected recall of a random order, per direction.

``retrieval_metrics`` layout (directions ``<b>_to_<a>`` and ``<a>_to_<b>``)::

    {"n": 2100, "n_groups": 2050, "gallery": {"image": 700, "text": 2100},
     "text_to_image": {"R@1", "R@5", "R@10", "median_rank", "mean_rank"}, "image_to_text": {…},
     "chance": {"text_to_image": {"R@1", …}, "image_to_text": {…}},
     "strict": {"text_to_image": {…}, "image_to_text": {…},       # with include_strict
                "ceiling": {"text_to_image": {…}, "image_to_text": {…}},
                "chance": {"text_to_image": {…}, "image_to_text": {…}}}}
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .pairs import DEFAULT_PAIR, is_text_like
from .ranks import (DEFAULT_KS, Keys, Positives, chance_of, chance_recall, group_ids,  # noqa: F401
                    unique_rows, incidence, positive_ranks, rank_summary, ranks_of,
                    score_blocks)


def group_field(fields: Sequence[str]) -> str:
    """The field whose exact items group rows for retrieval: a text-like modality's own
    field when there is one (identical captions are the same answer), else the last."""
    return next((f for f in fields if "@" not in f and is_text_like(f)), fields[-1])


def group_keys(records: Sequence[Any], field: str | None = None) -> tuple[list[tuple[str, str]], str]:
    """One retrieval key per record, and which field the keys came from.

    A record's ``group`` (when the manifest has that column and the row a value)
    is its key, else its exact ``field`` item (the caption, or a file's identity,
    :func:`item_identity`); the two kinds never collide. The second value is
    ``field``, ``"group"`` or ``"group, else <field>"``. ``field`` defaults to the
    grouping field of :data:`~.pairs.DEFAULT_PAIR` (the caption).
    """
    field = field or group_field(DEFAULT_PAIR)
    keys = []
    for r in records:
        group = getattr(r, "group", None)
        keys.append(("group", str(group)) if group not in (None, "")
                    else (field, item_identity(r.fields[field] if hasattr(r, "fields")
                                               else getattr(r, field))))
    kinds = {kind for kind, _ in keys}
    return keys, "group" if kinds == {"group"} else field if kinds == {field} else f"group, else {field}"


def item_identity(item: Any) -> str:
    """What makes two rows' items the same item: a file is its resolved path however
    the rows spell it, bytes (a shard's) are their SHA-256, a text is itself."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "sha256:" + hashlib.sha256(item).hexdigest()
    if isinstance(item, Path):
        return os.path.realpath(item)
    return str(item)


def recall_at_k(queries: np.ndarray, gallery: np.ndarray, ks: Sequence[int] = DEFAULT_KS,
                query_groups: Keys | None = None, gallery_groups: Keys | None = None
                ) -> dict[str, float]:
    """``{"R@1": …, "R@5": …}``: the fraction of queries with a positive in the top k,
    strict (pair ``i`` ↔ ``i``) without groups, group-aware with them."""
    ranks = positive_ranks(queries, gallery, query_groups, gallery_groups)
    return {f"R@{k}": float((ranks < k).mean()) for k in ks}


@dataclass(frozen=True)
class Direction:
    """One retrieval direction: its name, queries, gallery and which items answer which."""

    name: str
    queries: np.ndarray
    gallery: np.ndarray
    positives: Positives


def directions(a_emb: np.ndarray, b_emb: np.ndarray, keys: Keys | None = None,
               a_ids: Keys | None = None, names: tuple[str, str] = DEFAULT_PAIR
               ) -> tuple[Direction, Direction]:
    """``(b→a, a→b)`` under the protocol of the module docstring.

    ``keys``: one key per row (``None``: each row its own key, the strict view);
    ``a_ids``: one identity per row's ``a`` item (``None``: every row a distinct
    item). An item's embedding is that of its first row; its other rows must
    agree to 1e-4 (batches may round the same input differently).
    """
    a_emb, b_emb = np.asarray(a_emb), np.asarray(b_emb)
    n = len(a_emb)
    a_to_b, b_to_a = _names(names)
    if b_emb.shape != a_emb.shape:
        raise ValueError(f"paired retrieval needs equal shapes, got {a_emb.shape} and {b_emb.shape}")
    item = np.arange(n) if a_ids is None else group_ids(_checked(a_ids, n, "item ids"))[0]
    n_items = int(item.max(initial=-1)) + 1
    first = np.empty(n_items, dtype=np.int64)
    first[item[::-1]] = np.arange(n)[::-1]  # each item's first row
    items = a_emb[first]
    if np.isfinite(a_emb).all() and not np.allclose(items[item], a_emb, rtol=0, atol=1e-4):
        raise ValueError(f"rows naming the same {names[0]} carry different {names[0]} embeddings")
    key = np.arange(n) if keys is None else group_ids(_checked(keys, n, "group keys"))[0]
    n_keys = int(key.max(initial=-1)) + 1
    rows_keys = incidence(np.arange(n), key, n, n_keys)
    items_keys = incidence(item, key, n_items, n_keys)
    return (Direction(b_to_a, b_emb, items, Positives(rows_keys, items_keys)),
            Direction(a_to_b, items, b_emb, Positives(items_keys, rows_keys)))


def _row_identity(x: np.ndarray) -> np.ndarray:
    """One id per row; bitwise-identical rows share it."""
    _, inverse = unique_rows(np.asarray(x))
    return np.arange(len(x)) if inverse is None else inverse


def _checked(keys: Keys, n: int, what: str) -> Keys:
    if len(keys) != n:
        raise ValueError(f"{len(keys)} {what} for {n} pairs")
    return keys


def _names(names: tuple[str, str]) -> tuple[str, str]:
    """``("audio", "text")`` → ``("audio_to_text", "text_to_audio")``."""
    a, b = names
    if a == b:
        raise ValueError(f"retrieval needs two different modalities, got {names}")
    return f"{a}_to_{b}", f"{b}_to_{a}"


def strict_ceiling(text_keys: Keys, ks: Sequence[int] = DEFAULT_KS,
                   image_keys: Keys | None = None,
                   names: tuple[str, str] = DEFAULT_PAIR) -> dict[str, dict[str, float]]:
    """The best strict R@K any model can reach when rows with equal ``text_keys`` have
    identical texts (which tie) and rows with equal ``image_keys`` name one image.

    text→image: the rows of one caption share one ranking of the distinct images;
    the best puts first the ``k`` images that most of those rows pair with.
    image→text: an image's best rank is that of its own caption whose identical
    copies on other images' rows are fewest (those copies tie with it and count
    against it), so it is a hit iff that number is below ``k``. Without
    ``image_keys`` this is ``min(k, m) / m`` and ``[m ≤ k]`` for a caption on ``m`` rows.
    """
    i_to_t, t_to_i = _names(names)
    (t,) = group_ids(text_keys)
    (i,) = group_ids(image_keys) if image_keys is not None else (np.arange(len(t)),)
    if len(i) != len(t):
        raise ValueError(f"{len(i)} image keys for {len(t)} text keys")
    n_images = int(i.max(initial=-1)) + 1
    pairs, count = np.unique(t * n_images + i, return_counts=True)  # distinct (text, image) rows
    text_of, image_of = pairs // n_images, pairs % n_images
    # text→image: rank each text's images by how many of its rows they answer
    order = np.lexsort((-count, text_of))
    starts = np.r_[0, np.flatnonzero(np.diff(text_of[order])) + 1]
    position = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    # image→text: the copies of a caption that stand on other images' rows
    others = np.bincount(t)[text_of] - count
    fewest = np.full(n_images, np.iinfo(np.int64).max)
    np.minimum.at(fewest, image_of, others)
    return {t_to_i: {f"R@{k}": float(count[order][position < k].sum() / len(t)) for k in ks},
            i_to_t: {f"R@{k}": float((fewest < k).mean()) for k in ks}}


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray, groups: Keys | None = None,
                      ks: Sequence[int] = DEFAULT_KS, *, text_keys: Keys | None = None,
                      image_keys: Keys | None = None, include_strict: bool = True,
                      block: int = 1024, names: tuple[str, str] = DEFAULT_PAIR) -> dict[str, Any]:
    """Retrieval of paired rows both ways; protocol and layout in the module docstring.

    ``groups`` (one key per row, e.g. the caption) makes the headline figures
    group-aware; without it they are the strict ones. ``image_keys`` marks rows
    naming the same image (one gallery item, one query); ``text_keys`` marks
    rows with identical texts, for the strict ceiling (default: rows with
    bitwise-identical text embeddings, which are the rows that tie). Distinct
    images with identical embeddings (the same bytes under two paths) tie with
    each other, which the ceiling does not model: ``identical_items`` counts
    them when there are any. ``names`` are the two sides' modalities
    (``("audio", "text")`` gives ``text_to_audio`` and ``audio_to_text``).
    ``include_strict=False`` leaves out the strict block.

    >>> x = np.eye(3, dtype=np.float32)
    >>> r = retrieval_metrics(x[[0, 0, 1]], x[[0, 0, 1]], ["a", "b", "c"], ks=(1,),
    ...                       image_keys=["cat.png", "cat.png", "dog.png"])
    >>> r["gallery"], r["text_to_image"]["R@1"], r["image_to_text"]["R@1"]
    ({'image': 2, 'text': 3}, 1.0, 1.0)
    """
    image_emb, text_emb = np.asarray(image_emb), np.asarray(text_emb)
    n = len(image_emb)
    if n == 0:
        raise ValueError("no pairs to evaluate")
    headline = directions(image_emb, text_emb, groups, image_keys, names)
    n_groups = n if groups is None else len(set(group_ids(groups)[0].tolist()))
    out: dict[str, Any] = {"n": n, "n_groups": n_groups,
                           "gallery": {names[0]: len(headline[0].gallery), names[1]: n}}
    copies = len(headline[0].gallery) - len(set(_row_identity(headline[0].gallery)))
    if copies:  # distinct files with the same content tie with each other in every ranking
        out["identical_items"] = {names[0]: copies}
    ranks = {d.name: ranks_of(d.queries, d.gallery, d.positives, block=block) for d in headline}
    out.update({name: rank_summary(r, ks) for name, r in ranks.items()})
    out["chance"] = {d.name: chance_of(d.positives.counts(), len(d.gallery), ks) for d in headline}
    if include_strict:  # the strict directions only when asked (the label view and validation skip them)
        strict = directions(image_emb, text_emb, None, image_keys, names) if groups is not None else headline
        strict_ranks = ranks if strict is headline else {
            d.name: ranks_of(d.queries, d.gallery, d.positives, block=block) for d in strict}
        if text_keys is None:  # identical texts are the rows that tie: identical embeddings
            text_keys = _row_identity(text_emb)
        text_keys = _checked(text_keys, n, "text keys")
        out["strict"] = {**{name: rank_summary(r, ks) for name, r in strict_ranks.items()},
                         "ceiling": strict_ceiling(text_keys, ks, image_keys, names),
                         "chance": {d.name: chance_of(d.positives.counts(), len(d.gallery), ks)
                                    for d in strict}}
    return out
