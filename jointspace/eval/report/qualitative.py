"""Qualitative retrieval: a few seeded queries per direction with their top-k answers,
and the worst failures (the queries whose best positive ranks lowest), each as previews
with the correct answers marked.

Queries, galleries and positives follow the evaluation's protocol
(:func:`..retrieval.directions`: ``b→a`` queries every row against the distinct ``a``
items, ``a→b`` every distinct ``a`` item against the rows), and ranks are
:func:`..ranks.ranks_of`'s (ties with a negative count against the query).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ...vectors import top_k
from ..ranks import group_ids, ranks_of
from ..retrieval import Direction, directions
from .html import direction_words, esc


@dataclass(frozen=True)
class Example:
    """One query: its row, the 0-based rank of its best positive, its top-k answers as
    ``(row, correct, score)``, and its best positive's row and score."""

    row: int
    rank: int
    answers: list[tuple[int, bool, float]]
    positive: int
    positive_score: float


@dataclass(frozen=True)
class DirectionExamples:
    direction: str          # "<query side>_to_<gallery side>"
    query_side: str
    gallery_side: str
    gallery_size: int
    sampled: list[Example]
    worst: list[Example]


@dataclass(frozen=True)
class Ranked:
    """One direction's queries ranked: the protocol's :class:`..retrieval.Direction`, the
    manifest row showing each query and each gallery item, and each query's 0-based rank."""

    direction: Direction
    query_side: str
    gallery_side: str
    query_row: np.ndarray
    gallery_row: np.ndarray
    ranks: np.ndarray

    def answers(self, q: int, k: int) -> Example:
        """Query ``q``'s top ``k`` answers and its best positive."""
        d = self.direction
        scores = d.gallery @ d.queries[q]
        correct = d.positives.mask(np.array([q]))[0]
        best = int(np.argmax(np.where(correct, scores, -np.inf)))
        answers = [(int(self.gallery_row[g]), bool(correct[g]), float(scores[g]))
                   for g in top_k(scores, min(k, len(scores)))]
        return Example(int(self.query_row[q]), int(self.ranks[q]), answers,
                       int(self.gallery_row[best]), float(scores[best]))


def ranked_directions(a_emb: np.ndarray, b_emb: np.ndarray, keys: Sequence[Any] | None,
                      a_ids: Sequence[Any] | None, names: tuple[str, str]) -> list[Ranked]:
    """``b→a`` then ``a→b``, every query ranked (an ``a`` item is shown by its first row)."""
    a_emb, b_emb = np.asarray(a_emb), np.asarray(b_emb)
    rows = len(a_emb)
    item = np.arange(rows) if a_ids is None else group_ids(list(a_ids))[0]
    first = np.empty(int(item.max(initial=-1)) + 1, dtype=np.int64)
    first[item[::-1]] = np.arange(rows)[::-1]  # each distinct a item's first row
    b_to_a, a_to_b = directions(a_emb, b_emb, keys, a_ids, names)
    a, b = names
    return [Ranked(d, query_side, gallery_side, query_row, gallery_row,
                   ranks_of(d.queries, d.gallery, d.positives))
            for d, query_side, gallery_side, query_row, gallery_row in (
                (b_to_a, b, a, np.arange(rows), first), (a_to_b, a, b, first, np.arange(rows)))]


def retrieval_examples(a_emb: np.ndarray, b_emb: np.ndarray, keys: Sequence[Any] | None,
                       a_ids: Sequence[Any] | None, names: tuple[str, str], n: int = 8, k: int = 5,
                       seed: int = 0) -> list[DirectionExamples]:
    """For ``b→a`` and ``a→b``: ``n`` queries drawn with ``seed`` and the ``n`` worst (lowest
    ranked positive; equal ranks in query order), each with its top ``k`` answers. Rows
    index the manifest's kept rows."""
    out = []
    for r in ranked_directions(a_emb, b_emb, keys, a_ids, names):
        rng = np.random.default_rng(seed)
        sampled = np.sort(rng.choice(len(r.ranks), size=min(n, len(r.ranks)), replace=False))
        worst = _worst(r, n)
        out.append(DirectionExamples(r.direction.name, r.query_side, r.gallery_side,
                                     len(r.direction.gallery), [r.answers(q, k) for q in sampled],
                                     [r.answers(q, k) for q in worst]))
    return out


def _worst(r: Ranked, n: int) -> list[int]:
    """The ``n`` queries whose best correct answer ranks lowest, failures only (rank > 0),
    each distinct query once (repeated captions give equal query vectors)."""
    seen: set[bytes] = set()
    out = []
    for q in np.argsort(-r.ranks, kind="stable"):
        if r.ranks[q] == 0 or len(out) == n:
            break
        vector = np.asarray(r.direction.queries[q]).tobytes()
        if vector not in seen:
            seen.add(vector)
            out.append(int(q))
    return out


def render(found: list[DirectionExamples], items: dict[str, list[str]],
           preview: Callable[[str, str, str], str], seed: int = 0) -> str:
    """The section's body: per direction, the sampled queries then the worst failures."""
    parts = []
    for d in found:
        words = direction_words(d.direction)
        parts.append(f"<h3>{esc(words)}: {len(d.sampled)} queries drawn at random (seed {seed})</h3>")
        parts += [_row(e, d, items, preview, failure=False) for e in d.sampled]
        if not d.worst:
            parts.append(f"<h3>{esc(words)}: no failures</h3><p class='note'>Every query's best "
                         "correct answer ranks first.</p>")
            continue
        parts.append(f"<h3>{esc(words)}: the {len(d.worst)} worst failures</h3>"
                     f"<p class='note'>The queries whose best correct {esc(d.gallery_side)} ranks "
                     f"lowest among the {d.gallery_size:,} {esc(d.gallery_side)} items.</p>")
        parts += [_row(e, d, items, preview, failure=True) for e in d.worst]
    return "".join(parts)


def _row(e: Example, d: DirectionExamples, items: dict[str, list[str]],
         preview: Callable[[str, str, str], str], failure: bool) -> str:
    query = preview(d.query_side, items[d.query_side][e.row], f"query {d.query_side}")
    cards = [f"<div class='query'>{query}<span class='tag'>query; its best correct answer ranks "
             f"{e.rank + 1:,}</span></div>"]
    for i, (row, correct, score) in enumerate(e.answers, 1):
        mark = ("<span class='mark'>✓ correct</span>" if correct
                else "<span class='mark no'>✗ wrong</span>")
        shown = preview(d.gallery_side, items[d.gallery_side][row], f"answer {i}")
        cards.append(f"<div class='hit{' ok' if correct else ''}' data-correct='{int(correct)}' "
                     f"data-item='{row}'>"
                     f"{shown}<span class='tag'>{i}.</span> {mark} "
                     f"<span class='tag'>{score:.2f}</span></div>")
    if failure and e.rank >= len(e.answers):
        shown = preview(d.gallery_side, items[d.gallery_side][e.positive], "the correct answer")
        cards.append(f"<div class='hit ok' data-correct='1' data-item='{e.positive}'>{shown}"
                     f"<span class='mark'>✓ correct, "
                     f"rank {e.rank + 1:,}</span> <span class='tag'>{e.positive_score:.2f}</span></div>")
    kind = "failure" if failure else "sample"
    return (f"<div class='row {kind}' data-direction='{esc(d.direction)}' data-rank='{e.rank}' "
            f"data-row='{e.row}'>{''.join(cards)}</div>")
