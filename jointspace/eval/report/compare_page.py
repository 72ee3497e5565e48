"""``report.html`` of ``jointspace compare``: both models side by side on the same rows
(each one's own figures), how alike their spaces are and what that means, the same
pairs' similarities in both, and the items they disagree on most, as previews."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...fileio import atomic_write_text
from ...vectors import top_k
from ..geometry import unit_rows
from ..pairs import direction_keys
from . import plots
from .evaluation import REPORT_FILE
from .html import (bullet_list, direction_words, esc, figure, figure_words, figures, html_table, note, num,
                   page, section)
from .model_info import ModelInfo
from .previews import Previews
from .sections import facts_block, model_facts

#: neighbours shown beside an item the two spaces place differently
NEIGHBOURS_SHOWN = 3

MEANINGS = ("Mutual k-NN: the share of each item's k nearest neighbours the two spaces agree on — "
            "1 when they order neighbours alike, about k / (N − 1) for unrelated spaces. "
            "Linear CKA: 1 for spaces equal up to rotation and isotropic scale, near 0 for unrelated "
            "ones; it weighs the large directions of variance most. Procrustes: an orthogonal map "
            "from model A's space to model B's, fitted on half the items; each mapped item of the "
            "other half then retrieves its own counterpart among them (chance: 1 / items).")


def write_compare_report(out_dir: Path, results: dict[str, Any], emb: Sequence[dict[str, np.ndarray]],
                         items: dict[str, list[str]], models: Sequence[ModelInfo],
                         scatters: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Path:
    """Write ``out_dir/report.html`` for :func:`..compare.compare`'s ``results``; ``emb``
    are each model's embeddings per modality, ``items`` the rows' items per modality,
    ``scatters`` the same pairs' cosines in A and B (and which are paired) by title."""
    names = [m.name if m.name != models[1 - i].name else f"{m.name} ({'AB'[i]})"
             for i, m in enumerate(models)]
    preview = Previews()
    parts = [_first_screen(results, models, names),
             section("Each model by itself", _own(results, names), anchor="own"),
             section("How alike the spaces are", _alike(results), anchor="alike"),
             section("The same pairs in both spaces", _scatters(results, scatters, names),
                     anchor="similarities"),
             section("Where the two disagree most", _disagreements(results, emb, items, names, preview),
                     anchor="disagreements")]
    title = f"{names[0]} vs {names[1]}: comparison"
    return atomic_write_text(Path(out_dir) / REPORT_FILE, page(title, "".join(parts)))


def _first_screen(results: dict[str, Any], models: Sequence[ModelInfo], names: list[str]) -> str:
    written = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    facts = [model_facts(f"Model A: {names[0]}", models[0]), model_facts(f"Model B: {names[1]}", models[1]),
             facts_block("Data", [("manifest", results["manifest"]), ("rows", num(results["n"])),
                                  ("quarantined rows", num(results.get("quarantined", 0))),
                                  ("compared", ", ".join(results["modalities"]))])]
    return (f"<header><h1>{esc(names[0])} vs {esc(names[1])}: how alike the two spaces are</h1>"
            f"<p class='note'>Both models embedded the same {num(results['n'])} rows. Report written "
            f"{esc(written)}.</p></header><div class='facts'>{''.join(facts)}</div>"
            "<h2 id='headline'>Headline figures</h2>"
            + bullet_list((esc(s) for s in headline_sentences(results, names)), "headline"))


def headline_sentences(results: dict[str, Any], names: Sequence[str]) -> list[str]:
    out = []
    for m in results["modalities"]:
        r = results[m]
        knn = next(key for key in r if key.startswith("mutual_knn"))
        k = int(knn.split("@")[1])
        p = r["procrustes"]
        w = figure_words
        out.append(f"{m}: mutual k-NN {w(r[knn])} (unrelated ≈ {w(k / max(results['n'] - 1, 1))}, "
                   f"alike 1), linear CKA {w(r['linear_cka'])}, Procrustes R@1 {w(p['R@1'])} "
                   f"(chance {w(1 / p['n_test'])})")
    own = results.get("own")
    if own:
        a, b = results["pair"]
        for d in direction_keys((a, b)):
            ra, rb = own["a"]["retrieval"], own["b"]["retrieval"]
            out.append(f"{direction_words(d)} R@1: {names[0]} {figure_words(ra[d]['R@1'])}, {names[1]} "
                       f"{figure_words(rb[d]['R@1'])} (chance {figure_words(ra['chance'][d]['R@1'])})")
        za, zb = own["a"].get("zero_shot"), own["b"].get("zero_shot")
        if za or zb:
            z = za or zb
            top1 = [figure_words(x["top1"]) if x else "–" for x in (za, zb)]
            out.append(f"zero-shot top-1: {names[0]} {top1[0]}, {names[1]} {top1[1]} "
                       f"(chance {figure_words(z['chance_top1'])})")
    return out


def _own(results: dict[str, Any], names: list[str]) -> str:
    own = results.get("own")
    if not own:
        return note("Only one modality was compared: there is no pair to score each model on by itself "
                    "(compare two modalities, e.g. --modalities image,text).")
    a, b = results["pair"]
    ra, rb = own["a"]["retrieval"], own["b"]["retrieval"]
    rows = []
    for d in direction_keys((a, b)):
        for k in ("R@1", "R@5", "R@10"):
            rows.append([f"{direction_words(d)} {k}", ra[d][k], rb[d][k], ra["chance"][d][k], None])
        if "strict" in ra:
            rows.append([f"{direction_words(d)} strict R@1", ra["strict"][d]["R@1"], rb["strict"][d]["R@1"],
                         ra["strict"]["chance"][d]["R@1"], ra["strict"]["ceiling"][d]["R@1"]])
    za, zb = own["a"].get("zero_shot"), own["b"].get("zero_shot")
    if za or zb:
        z = za or zb
        for key, label in (("top1", "zero-shot top-1"), ("top5", "zero-shot top-5"),
                           ("mean_per_class_recall", "zero-shot mean per-class recall")):
            rows.append([label, za[key] if za else None, zb[key] if zb else None,
                         z["chance_top1"] if key == "top1" else None, None])
    text = (f"Each model retrieves {a} and {b} on these rows by itself, as jointspace eval scores it "
            f"(a hit is any item paired with the query's {ra['grouped_by']}; strict: only its own pair, "
            "below a ceiling when captions repeat)."
            + ("" if za or zb else " Zero-shot needs a label on every row and a text-like tower."))
    return note(text) + html_table(rows, ["figure", names[0], names[1], "chance", "ceiling"],
                                   "each model's own figures")


def _alike(results: dict[str, Any]) -> str:
    rows = []
    for m in results["modalities"]:
        r = results[m]
        knn = next(key for key in r if key.startswith("mutual_knn"))
        p = r["procrustes"]
        rows.append([m, r[knn], r["linear_cka"], p["R@1"], p["R@5"], p["R@10"], 1 / p["n_test"],
                     p["fit_residual"]])
    knn = next(key for key in results[results["modalities"][0]] if key.startswith("mutual_knn"))
    return note(MEANINGS) + html_table(
        rows, ["modality", f"mutual k-NN (k = {knn.split('@')[1]})", "linear CKA", "Procrustes R@1",
               "R@5", "R@10", "chance R@1", "fit residual"], "how alike the two spaces are")


def _scatters(results: dict[str, Any], scatters: dict[str, tuple], names: list[str]) -> str:
    shown = []
    for title, (x, y, paired) in scatters.items():
        r = np.corrcoef(x, y)[0, 1] if len(x) > 2 and np.std(x) > 0 and np.std(y) > 0 else float("nan")
        shown.append(figure(plots.similarity_scatter(x, y, paired, names, title),
                            f"similarities of {title} in both spaces",
                            f"cosine similarity of the same {title} in {names[0]} (across) and "
                            f"{names[1]} (up); Pearson r {figure_words(float(r))}"))
    return (note("Each point is one pair of items, placed by its cosine similarity in each model's "
                 "space: points on a line mean the two models agree on what is similar, whatever their "
                 "scales; a cloud means they do not. Paired points (the manifest's own pairs) should "
                 "sit above the others in both.") + figures(*shown))


def _disagreements(results: dict[str, Any], emb: Sequence[dict[str, np.ndarray]],
                   items: dict[str, list[str]], names: list[str], preview: Previews) -> str:
    parts = []
    for d, found in (results.get("disagreements") or {}).items():
        query_side, gallery_side = d.split("_to_")
        rows = []
        for e in found:
            cards = [f"<div class='query'>{preview(query_side, items[query_side][e['row']], 'query')}"
                     f"<span class='tag'>query</span></div>"]
            for name, rank, answer in ((names[0], e["rank_a"], e["answer_a"]),
                                       (names[1], e["rank_b"], e["answer_b"])):
                ok = rank == 1
                cards.append(f"<div class='hit{' ok' if ok else ''}'>"
                             f"{preview(gallery_side, items[gallery_side][answer], f'{name} first answer')}"
                             f"<span class='tag'>{esc(name)}: first answer</span> <span class='mark"
                             f"{'' if ok else ' no'}'>{'✓ correct' if ok else '✗ wrong'}</span>"
                             f"<span class='tag'>; {'its' if ok else 'the'} correct one ranks "
                             f"{rank:,}</span></div>")
            rows.append(f"<div class='row disagreement' data-row='{e['row']}'>{''.join(cards)}</div>")
        if rows:
            parts.append(f"<h3>{esc(direction_words(d))}: the queries ranked most differently</h3>"
                         + "".join(rows))
    for m in results["modalities"]:
        least = results[m].get("least_shared_neighbours") or []
        knn = next(key for key in results[m] if key.startswith("mutual_knn"))
        k = int(knn.split("@")[1])
        rows = []
        for e in least:
            i = e["row"]
            cards = [f"<div class='query'>{preview(m, items[m][i], f'{m} item')}<span class='tag'>shares "
                     f"{e['shared']} of its {k} nearest neighbours across the spaces</span></div>"]
            for name, x in zip(names, (emb[0][m], emb[1][m])):
                for rank, j in enumerate(_nearest(x, i), 1):
                    cards.append(f"<div class='hit'>{preview(m, items[m][j], f'{name} neighbour {rank}')}"
                                 f"<span class='tag'>{esc(name)}: neighbour {rank}</span></div>")
            rows.append(f"<div class='row neighbours' data-row='{i}'>{''.join(cards)}</div>")
        if rows:
            parts.append(f"<h3>{esc(m)} items whose neighbours differ most</h3>" + "".join(rows))
    return "".join(parts) or note("The two models agree on every query and every neighbourhood.")


def _nearest(x: np.ndarray, i: int, k: int = NEIGHBOURS_SHOWN) -> list[int]:
    """Row ``i``'s ``k`` most cosine-similar other rows, best first."""
    scores = unit_rows(x) @ unit_rows(x[i:i + 1])[0]
    scores[i] = -np.inf
    return [int(j) for j in top_k(scores, min(k, len(x) - 1))]
