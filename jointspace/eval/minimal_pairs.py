"""The minimal-pairs test: can the model tell two items apart that differ only in order?

A manifest column ``pair`` (:data:`PAIR_COLUMN`) names the minimal pair an item belongs
to: exactly two items (e.g. two clips made of the same frames in another order) carry the
same pair id on all their rows, each with its own captions (which differ from the twin's
only in direction or order words). Rows with an empty cell belong to no pair. For the
pair ``a:b`` evaluated, the *items* are the side that is not text-like (the clips; several
caption rows naming one file are one item, as in retrieval) and the *captions* the other.

* **2-way accuracy, item → caption** (``<item>_to_<text>``): for each item of a pair,
  every one of its own captions is compared with every caption of its twin; a comparison
  is won when the item scores its own caption higher. An item's score is the share of
  its comparisons won, averaged over items.
* **2-way accuracy, caption → item** (``<text>_to_<item>``): for each caption of a paired
  item, is it scored higher with its own item than with the twin? Averaged over captions.

Chance is 0.5 for both. Scores within :data:`TIE_TOLERANCE` of each other are a tie and
count half (an order-blind model, such as mean pooling over a clip's frames, gives the two
members the same embedding up to rounding: exactly 0.5, not a coin flip on rounding noise).

* **pairs-only retrieval**: the retrieval protocol of :mod:`.retrieval` (R@1/5/10,
  median and mean rank, chance) on the rows of paired items alone, both ways; each
  query's twin and the twin's captions are among the distractors.

A pair id on one item only (its twin's rows were quarantined) is skipped and counted;
one on more than two items, or an item whose rows name two pairs, is a
:class:`~jointspace.errors.DataError` naming the manifest.

Layout of ``results["minimal_pairs"]`` for the pair ``video:text``::

    {"column": "pair", "n_pairs": 240, "n_items": 480, "n_captions": 960, "skipped_pairs": 0,
     "two_way": {"video_to_text": 0.93, "text_to_video": 0.91}, "chance": 0.5,
     "by_label": {"shape growing": {"video_to_text": …, "text_to_video": …, "n_items": 51}, …},
     "retrieval": {"n", "gallery", "video_to_text": {"R@1", …, "median_rank", "mean_rank"},
                   "text_to_video": {…}, "chance": {…}}}
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.manifest import manifest_columns, read_rows
from ..errors import DataError
from .pairs import query_side
from .retrieval import retrieval_metrics

#: the manifest column holding each row's minimal-pair id (empty: no pair)
PAIR_COLUMN = "pair"
#: score differences at most this large are ties (counted half)
TIE_TOLERANCE = 1e-5
CHANCE = 0.5


def read_pair_ids(manifest: str | Path, lines: Sequence[int]) -> list[str] | None:
    """Each kept row's :data:`PAIR_COLUMN` value (``""`` for none), given the rows' line
    numbers in ``manifest``; None when the manifest has no such column or it is empty.
    A CSV/TSV without the column is read only up to its header (every evaluation asks)."""
    if PAIR_COLUMN not in manifest_columns(manifest):
        return None
    _, rows = read_rows(Path(manifest))
    by_line = {line: row for line, row, _ in rows if row is not None}
    ids = [_cell(by_line.get(line, {}).get(PAIR_COLUMN)) for line in lines]
    return ids if any(ids) else None


def _cell(value: Any) -> str:
    return "" if value is None else str(value).strip()


class _Pairs:
    """The paired items of some rows: each item's rows, its twin and its first row."""

    def __init__(self, item_ids: Sequence[str], pair_ids: Sequence[str], where: str) -> None:
        index: dict[str, int] = {}
        self.rows: list[list[int]] = []
        pair_of: list[str] = []
        for row, (item, pair) in enumerate(zip(item_ids, pair_ids)):
            if not pair:
                continue
            if item not in index:
                index[item] = len(self.rows)
                self.rows.append([])
                pair_of.append(pair)
            i = index[item]
            if pair_of[i] != pair:
                raise DataError(f"{where}: {item} stands on rows of two minimal pairs, "
                                f"{pair_of[i]!r} and {pair!r}")
            self.rows[i].append(row)
        members: dict[str, list[int]] = defaultdict(list)
        for i, pair in enumerate(pair_of):
            members[pair].append(i)
        crowded = next((p for p, m in members.items() if len(m) > 2), None)
        if crowded is not None:
            raise DataError(f"{where}: minimal pair {crowded!r} names {len(members[crowded])} "
                            "items; a minimal pair is two")
        self.skipped = sum(len(m) == 1 for m in members.values())
        self.pairs = [tuple(m) for m in members.values() if len(m) == 2]
        self.twin = {a: b for x, y in self.pairs for a, b in ((x, y), (y, x))}

    def kept_rows(self) -> list[int]:
        return sorted(r for i in self.twin for r in self.rows[i])


def _won(own: np.ndarray, other: np.ndarray) -> np.ndarray:
    """1 where ``own`` beats ``other`` by more than the tolerance, ½ on a tie, else 0."""
    diff = own - other
    return np.where(np.abs(diff) <= TIE_TOLERANCE, 0.5, (diff > 0).astype(np.float64))


def minimal_pair_metrics(item_emb: np.ndarray, text_emb: np.ndarray, item_ids: Sequence[str],
                         pair_ids: Sequence[str], names: tuple[str, str], *,
                         labels: Sequence[str] | None = None, keys: Sequence[Any] | None = None,
                         where: str = "manifest") -> dict[str, Any]:
    """The figures of the module docstring for rows pairing ``item_emb[i]`` (an item,
    ``item_ids[i]`` its identity) with ``text_emb[i]`` (one of its captions); ``names``
    are ``(item modality, text modality)``, ``keys`` the rows' retrieval keys (identical
    captions answer alike), ``labels`` the rows' labels (for ``by_label``). None when no
    pair has both items."""
    item_emb, text_emb = np.asarray(item_emb, np.float64), np.asarray(text_emb, np.float64)
    found = _Pairs(item_ids, pair_ids, where)
    if not found.pairs:
        return {"column": PAIR_COLUMN, "n_pairs": 0, "skipped_pairs": found.skipped}
    item_name, text_name = names
    to_text, to_item = f"{item_name}_to_{text_name}", f"{text_name}_to_{item_name}"
    items = np.stack([item_emb[rows[0]] for rows in found.rows])
    per_item: dict[int, float] = {}
    per_caption: dict[int, list[float]] = {}
    for i, j in found.twin.items():
        own, twin = text_emb[found.rows[i]], text_emb[found.rows[j]]
        per_item[i] = float(_won((own @ items[i])[:, None], (twin @ items[i])[None, :]).mean())
        per_caption[i] = _won(own @ items[i], own @ items[j]).tolist()
    out: dict[str, Any] = {
        "column": PAIR_COLUMN, "n_pairs": len(found.pairs), "n_items": len(found.twin),
        "n_captions": sum(len(c) for c in per_caption.values()), "skipped_pairs": found.skipped,
        "two_way": {to_text: float(np.mean(list(per_item.values()))),
                    to_item: float(np.mean([w for ws in per_caption.values() for w in ws]))},
        "chance": CHANCE}
    if labels is not None:
        out["by_label"] = _by_label(found, labels, per_item, per_caption, to_text, to_item)
    rows = found.kept_rows()
    pick = lambda xs: None if xs is None else [xs[r] for r in rows]  # noqa: E731
    out["retrieval"] = retrieval_metrics(item_emb[rows], text_emb[rows], pick(keys),
                                         image_keys=pick(item_ids), include_strict=False,
                                         names=(item_name, text_name))
    return out


def pair_test(names: Sequence[str], a_emb: np.ndarray, b_emb: np.ndarray,
              ids: tuple[Sequence[str], Sequence[str]], pair_ids: Sequence[str], *,
              labels: Sequence[str] | None = None, keys: Sequence[Any] | None = None,
              where: str = "manifest") -> dict[str, Any]:
    """:func:`minimal_pair_metrics` for an evaluated pair ``a:b`` (its rows' embeddings and
    item identities per side): the items are the side that is not text-like."""
    item = query_side(names)
    text = 1 - item
    emb = (a_emb, b_emb)
    return minimal_pair_metrics(emb[item], emb[text], ids[item], pair_ids, (names[item], names[text]),
                                labels=labels, keys=keys, where=where)


def _by_label(found: _Pairs, labels: Sequence[str], per_item: dict[int, float],
              per_caption: dict[int, list[float]], to_text: str, to_item: str) -> dict[str, Any]:
    """The two 2-way accuracies per label of the item (its first row's label)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i in per_item:
        groups[str(labels[found.rows[i][0]])].append(i)
    return {label: {to_text: float(np.mean([per_item[i] for i in members])),
                    to_item: float(np.mean([w for i in members for w in per_caption[i]])),
                    "n_items": len(members)}
            for label, members in sorted(groups.items())}


__all__ = ["CHANCE", "PAIR_COLUMN", "TIE_TOLERANCE", "minimal_pair_metrics", "pair_test",
           "read_pair_ids"]
