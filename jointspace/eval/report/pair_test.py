"""The report's minimal-pairs section (:mod:`jointspace.eval.minimal_pairs`): can the model
tell apart two items that differ only in order, stated with chance."""
from __future__ import annotations

from typing import Any

from .html import direction_words, figure_words, html_table, note, num


def headline(results: dict[str, Any]) -> str | None:
    """The first screen's sentence on the minimal pairs, or None without them."""
    m = results.get("minimal_pairs")
    if not m or not m.get("n_pairs"):
        return None
    ways = ", ".join(f"{direction_words(d)} {figure_words(v)}" for d, v in m["two_way"].items())
    return (f"minimal pairs: 2-way accuracy {ways} (chance {figure_words(m['chance'])}) on "
            f"{m['n_pairs']:,} pairs that differ only in order")


def section(results: dict[str, Any]) -> str:
    """The figures of the minimal-pairs test as a table with chance, per label below;
    empty when the manifest named no pair."""
    m = results.get("minimal_pairs")
    if not m:
        return ""
    if not m.get("n_pairs"):
        return note(f"The manifest's {m.get('column', 'pair')!r} column names no pair with both its "
                    f"items ({m.get('skipped_pairs', 0)} incomplete): nothing to test.")
    ways = list(m["two_way"])
    item = ways[0].split("_to_")[0]
    r = m["retrieval"]
    rows = [[f"2-way accuracy, {direction_words(d)}", m["two_way"][d], m["chance"]] for d in ways]
    rows += [[f"R@1 in the pairs-only gallery, {direction_words(d)}", r[d]["R@1"], r["chance"][d]["R@1"]]
             for d in ways]
    explain = (f"{m['n_pairs']:,} minimal pairs ({m['n_items']:,} {item} items, {m['n_captions']:,} "
               f"captions) named by the manifest's {m['column']!r} column: the two {item} items of a "
               "pair differ only in order (in the built-in shape clips: the same frames reversed, or "
               "their two segments swapped), their captions only in direction or order words. "
               f"2-way accuracy, {direction_words(ways[0])}: does an item score each of its own captions "
               f"above each of its twin's? {direction_words(ways[1])}: is each caption scored higher "
               "with its own item than with the twin? Chance is 0.5 for both; a model blind to order "
               "(mean pooling over frames) scores exactly that, its scores for the twins being equal. "
               "The pairs-only gallery holds the paired items and their captions alone, so every "
               "query's twin is among the distractors.")
    parts = [note(explain), html_table(rows, ["figure", "value", "chance"], "minimal pairs")]
    if m.get("skipped_pairs"):
        parts.append(note(f"{m['skipped_pairs']} pair ids name one item only (the twin's rows were "
                          "quarantined or missing) and were left out."))
    by_label = m.get("by_label") or {}
    if by_label:
        parts.append(html_table(
            [[label, v[ways[0]], v[ways[1]], v["n_items"]] for label, v in by_label.items()],
            ["label", f"2-way {direction_words(ways[0])}", f"2-way {direction_words(ways[1])}",
             f"{item} items"], f"2-way accuracy per label of the item; {num(len(by_label))} labels"))
        parts.append(note("Per label, chance is 0.5 too, but an order-blind model need not score it: "
                          "the twin of a clip labelled one way (moving left, growing) is labelled the "
                          "other way (moving right, shrinking), and such a model's figures for the two "
                          "labels add up to 1 (it may prefer one wording), averaging 0.5 over the pairs."))
    return "".join(parts)
