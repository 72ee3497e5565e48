"""The evaluation report's sections, each answering one question: what was evaluated
(the first screen, with the headline figures in words), how well each direction
retrieves, how well zero-shot and the probes classify, what the space looks like,
and how training went."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from . import pair_test, plots
from ..pairs import direction_keys, query_side
from .html import (bullet_list, details, direction_words, esc, figure, figure_words, figures, html_table,
                   note, num)
from .model_info import ModelInfo

#: at this many classes or more a confusion matrix is illegible: the most confused pairs instead
MATRIX_MAX_CLASSES = 40

Preview = Callable[[str, str, str], str]


def _directions(names: Sequence[str]) -> list[str]:
    return list(direction_keys(names))


def headline_sentences(results: dict[str, Any]) -> list[str]:
    """The handful of figures the first screen states in words, each with its chance
    level and, for the strict figures, the ceiling any model could reach."""
    w = figure_words
    out = []
    r = results.get("retrieval")
    for d in _directions(results["pair"]) if r else ():
        out.append(f"{direction_words(d)} R@1 {w(r[d]['R@1'])} (chance {w(r['chance'][d]['R@1'])}) "
                   f"— a hit is any item paired with the query's {r['grouped_by']}")
    strict = (r or {}).get("strict")
    for d in _directions(results["pair"]) if strict else ():
        out.append(f"{direction_words(d)} strict R@1 {w(strict[d]['R@1'])} (chance "
                   f"{w(strict['chance'][d]['R@1'])}, ceiling {w(strict['ceiling'][d]['R@1'])})"
                   " — only the query's own pair counts")
    pairs = pair_test.headline(results)
    if pairs:
        out.append(pairs)
    z = results.get("zero_shot")
    if z:
        out.append(f"zero-shot top-1 {w(z['top1'])} over {z['n_classes']} classes "
                   f"(chance {w(z['chance_top1'])})")
    if "linear_probe" in results:
        p = results["linear_probe"]
        out.append(f"linear probe top-1 {w(p['acc1'])} on {p['field']} embeddings"
                   + (f" (chance {w(z['chance_top1'])})" if z else ""))
    return out


def first_screen(results: dict[str, Any], model: ModelInfo | None, data: dict[str, Any],
                 written: str) -> str:
    a, b = results["pair"]
    title = model.name if model else "jointspace model"
    parts = [f"<header><h1>{esc(title)}: {esc(a)} ↔ {esc(b)} evaluation</h1>"
             f"<p class='note'>Report written {esc(written)}.</p></header>"]
    facts = [model_facts("Model", model)] if model else []
    items = ", ".join(f"{num(v)} {k}" for k, v in data["items"].items())
    facts.append(facts_block("Data", [("manifest", data["manifest"]), ("rows", num(results["n"])),
                                      ("distinct items", items),
                                      ("quarantined rows", num(results.get("quarantined", 0)))]))
    parts.append(f"<div class='facts'>{''.join(facts)}</div>")
    sentences = headline_sentences(results)
    if sentences:
        parts += ["<h2 id='headline'>Headline figures</h2>",
                  bullet_list((esc(s) for s in sentences), "headline")]
    return "".join(parts)


def model_facts(title: str, model: ModelInfo) -> str:
    """A model's name, source, towers with their parameters, training steps and date."""
    towers = "; ".join(f"{t.modality}: {t.kind}, {num(t.parameters)} parameters"
                       + ("" if t.trainable == "all" else " (locked)" if t.trainable == "none"
                          else f" ({t.trainable} trained)") for t in model.towers)
    steps = (f"{model.steps:,}" if model.steps is not None
             else "none here (imported)" if model.imported else "unknown (no training log)")
    return facts_block(title, [("name", model.name), ("source", model.source), ("towers", towers),
                               ("parameters", num(model.parameters)),
                               ("embedding size", str(model.embed_dim)), ("training steps", steps),
                               ("weights written", model.date or "unknown")])


def facts_block(title: str, rows: list[tuple[str, str]]) -> str:
    """A titled list of ``(name, value)`` facts (values are escaped)."""
    body = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
    return f"<div><h2>{esc(title)}</h2><dl>{body}</dl></div>"


def retrieval_section(results: dict[str, Any], a_emb: np.ndarray, b_emb: np.ndarray,
                      groups: Sequence[Any], a_ids: Sequence[Any] | None) -> str:
    r = results.get("retrieval")
    if not r:
        return note("Retrieval was not run.")
    names = results["pair"]
    header = ["view", "direction", "R@1", "R@5", "R@10", "median rank", "mean rank", "mAP@10",
              "chance R@1", "ceiling R@1"]
    rows = []

    def add(view: str, block: dict[str, Any], scoring: str = "", chance: dict | None = None,
            ceiling: dict | None = None) -> None:
        for d in _directions(names):
            if d not in block:
                continue
            x = block[d]
            plain = ([x.get("median_rank"), x.get("mean_rank"), x.get("mAP@10")] if not scoring
                     else [None, None, None])
            rows.append([view, direction_words(d)] + [x.get(scoring + k) for k in ("R@1", "R@5", "R@10")]
                        + plain + [(chance or {}).get(d, {}).get("R@1"),
                                   (ceiling or {}).get(d, {}).get("R@1")])

    add(f"plain (same {r['grouped_by']})", r, chance=r["chance"])
    add("CSLS-scored", r, scoring="csls_", chance=r["chance"])
    if r.get("strict"):
        s = r["strict"]
        add("strict (own pair only)", s, chance=s["chance"], ceiling=s["ceiling"])
    by_label = results.get("retrieval_by_label")
    if by_label:
        add("by label (same label)", by_label, chance=by_label["chance"])
    for key, block in results.items():
        if key.startswith("retrieval_") and key != "retrieval_by_label" and isinstance(block, dict) \
                and _directions(names)[0] in block:
            add(key[len("retrieval_"):].replace("by_label_", "by label, ") + " subset", block,
                chance=block.get("chance"))
    gallery = r.get("gallery", {})
    sizes = ", ".join(f"{num(v)} {k}" for k, v in gallery.items())
    explain = (f"A query ranks the whole gallery ({sizes}). "
               f"Plain: a hit is any item paired with the query's {r['grouped_by']} (identical captions "
               "are interchangeable answers). CSLS rescales each score by how crowded its neighbourhood "
               "is (hubs count less). Strict: only the query's own pair counts; identical captions "
               "then tie, so even a perfect model stays below 1 — the ceiling says how far. By label: "
               "a hit is any item with the query's label. Chance is the expected recall of a random order.")
    return "".join([note(explain),
                    html_table(rows, header, "retrieval per view and direction"),
                    figures(figure(plots.recall_bars(r, names), "recall at K per direction",
                                   "Recall@K per direction, plain and CSLS-scored; ticks: chance"),
                            figure(plots.similarity_histogram(a_emb, b_emb, groups, a_ids=a_ids),
                                   "similarity histogram",
                                   "cosine similarity of positive and negative pairs: the further "
                                   "apart, the easier retrieval"))])


def zero_shot_section(results: dict[str, Any]) -> str:
    z = results.get("zero_shot")
    if not z:
        return note("Zero-shot classification was not run: it needs a label on every row and a "
                    "text-like tower to embed the class names.")
    parts = [f"<p>Each {esc(results['pair'][query_side(results['pair'])])} is assigned the class whose "
             f"prompts (e.g. <q>{esc(_prompt(z))}</q>) it is most similar to. "
             f"Top-1 {num(z['top1'])}, top-5 {num(z['top5'])}, mean per-class recall "
             f"{num(z['mean_per_class_recall'])} over {z['n_classes']} classes and {num(z['n'])} items "
             f"(chance top-1 {num(z['chance_top1'])}).</p>"]
    per_class = z.get("per_class_top1") or {}
    plot = (figure(plots.per_class_bars(per_class, z["chance_top1"]), "per-class recall",
                   "top-1 recall of each class, worst first; dashed: chance"
                   + (f" (the {plots.MAX_BARS // 2} worst and best of {len(per_class):,})"
                      if len(per_class) > plots.MAX_BARS else "")) if per_class else "")
    classes = z.get("classes", [])
    if classes and len(classes) < MATRIX_MAX_CLASSES:
        parts.append(figures(plot, figure(plots.confusion_plot(z["confusion"], classes), "confusion matrix",
                                          "confusion matrix (rows: true class, normalised)")))
    else:
        parts.append(figures(plot))
        parts.append(_confused_pairs(z))
    subsets = [(k[len("zero_shot_"):], v) for k, v in results.items() if k.startswith("zero_shot_")]
    if subsets:
        parts.append(html_table([[name, v["top1"], v["top5"], v["mean_per_class_recall"], v["n"]]
                                 for name, v in subsets],
                                ["subset", "top-1", "top-5", "mean per-class recall", "items"],
                                "zero-shot on subsets of the classes' rows"))
    return "".join(parts)


def _prompt(z: dict[str, Any]) -> str:
    template = (z.get("templates") or ["{label}"])[0]
    return template.replace("{label}", z["classes"][0]) if z.get("classes") else template


def _confused_pairs(z: dict[str, Any], top: int = 15) -> str:
    m = np.asarray(z["confusion"], dtype=float)
    np.fill_diagonal(m, 0)
    totals = np.maximum(np.asarray(z["confusion"]).sum(1), 1)
    order = np.argsort(-m, axis=None, kind="stable")[:top]
    rows = [[z["classes"][i], z["classes"][j], int(m[i, j]), m[i, j] / totals[i]]
            for i, j in zip(*np.unravel_index(order, m.shape)) if m[i, j] > 0]
    if not rows:
        return note("No item was assigned to a wrong class.")
    return html_table(rows, ["true class", "taken for", "items", "share of the true class"],
                      f"the most confused pairs of classes (a matrix of {len(z['classes'])} classes "
                      "would be illegible)")


def probe_section(results: dict[str, Any]) -> str:
    if "linear_probe" not in results:
        return note("No probe was fitted: the linear probe and k-NN need a labelled training "
                    "manifest (jointspace eval --train-data, evaluate(train_manifest=…)).")
    p, k = results["linear_probe"], results["knn"]
    z = results.get("zero_shot")
    chance = z["chance_top1"] if z else None
    rows = [["linear probe (logistic regression)", p["acc1"], f"C = {p['C']:g}", p["n_train"], p["n_test"]],
            [f"k-NN (k = {k['k']})", k["acc1"], "cosine, majority vote", p["n_train"], p["n_test"]]]
    text = (f"How much label information the {p['field']} embeddings hold: classifiers fitted on a "
            f"training manifest's embeddings, scored on these rows"
            + (f" (chance top-1 {num(chance)}; zero-shot top-1 {num(z['top1'])} for comparison)."
               if z else "."))
    unseen = p.get("test_rows_with_unseen_labels")
    return "".join([note(text), html_table(rows, ["classifier", "top-1", "setting", "training rows",
                                                  "test rows"], "probe accuracy"),
                    note(f"{unseen} test rows have a label the training rows lack.") if unseen else ""])


#: what each geometry measure says and what a good value looks like, by key prefix
GEOMETRY_LINES = (
    ("alignment", "mean squared distance of paired unit vectors: lower is better (0: pairs "
                  "coincide; 4: opposite)"),
    ("uniformity_", "log mean Gaussian potential of the items: lower (more negative) spreads them "
                    "over the sphere"),
    ("rankme_", "effective rank of the embeddings: higher uses more dimensions (at most the "
                "embedding size)"),
    ("isoscore_", "how evenly the variance spreads over the dimensions, 0 to 1: higher is more isotropic"),
    ("modality_gap_centroid_distance", "distance between the two modalities' centroids: smaller is a "
                                       "smaller gap"),
    ("modality_gap_separability", "accuracy of a linear classifier telling the modalities apart: 0.5 "
                                  "means no gap"),
    ("hubness_k", "the k of the hubness measures"),
    ("hubness_", "skewness of how often items appear in other items' top-k: near 0 is healthy, large "
                 "means hubs"),
)


def _geometry_line(key: str) -> str:
    if key.endswith("_max_occurrence"):
        return "the most queries one item is among the top-k of (a hub's count); compare with k"
    return next((line for prefix, line in GEOMETRY_LINES if key.startswith(prefix)), "")


def geometry_section(results: dict[str, Any], a_emb: np.ndarray, b_emb: np.ndarray,
                     items: dict[str, list[str]] | None, preview: Preview) -> str:
    g = results.get("geometry")
    names = results["pair"]
    gap = figure(plots.gap_projection(a_emb, b_emb, names), "modality gap projection",
                 f"{names[0]} and {names[1]} embeddings on their first two principal axes")
    if not g:
        return note("The geometry measures were not run.") + figures(gap)
    rows = [[key.replace("_", " "), value, _geometry_line(key)] for key, value in g.items()
            if isinstance(value, (int, float))]
    parts = [html_table(rows, ["measure", "value", "what good looks like"], "geometry of the space"),
             figures(gap)]
    for side in names:
        hubs = g.get(f"hubs_{side}") or []
        if not hubs or not items or side not in items:
            continue
        other = names[1] if side == names[0] else names[0]
        k = g.get("hubness_k", 10)
        cards = [f"<div class='hit' data-hub='{index}'>{preview(side, items[side][index], f'hub {index}')}"
                 f"<span class='tag'>in the top-{k} of {count:,} {esc(other)} "
                 f"queries</span></div>" for index, count in hubs[:10]]
        parts.append(f"<h3>Hubs among the {esc(side)} items</h3>"
                     f"<p class='note'>The {esc(side)} items most often among the top-{k} answers of "
                     f"{esc(other)} queries (each would be there for about {k} queries in a space "
                     "without hubs).</p>"
                     f"<div class='row hubs'>{''.join(cards)}</div>")
    return "".join(parts)


def matryoshka_section(results: dict[str, Any]) -> str:
    if not results.get("matryoshka"):
        return ""
    return figures(figure(plots.matryoshka_curves(results["matryoshka"], results["pair"]),
                          "matryoshka curve", "R@1 and zero-shot top-1 at each nested embedding size"))


def training_section(model: ModelInfo | None) -> str:
    if model is None:
        return note("Training curves: absent (the model was given as an object, with no run folder).")
    curve = plots.training_curves(model.log) if model.log else None
    if curve is None:
        why = ("the model was imported, not trained here" if model.imported
               else "its folder has no training log (log.jsonl)")
        return note(f"Training curves: absent — {why}.")
    return figure(curve, "training curves",
                  "training and validation loss, validation R@1 per direction, and the logit scale "
                  "(1 / temperature), against the training step")


def full_table(results: dict[str, Any]) -> str:
    rows = [[k, v] for k, v in results.get("metrics", {}).items()]
    if not rows:
        return ""
    a, b = results["pair"]
    return details("Every figure under its CLIP_benchmark name (as in results.json)",
                   note(f"{a}_retrieval_… retrieves {a} items for {b} queries ({a}_retrieval_recall@1 "
                        f"is {b} → {a}); {b}_retrieval_… the reverse.")
                   + html_table(rows, ["key", "value"], "every flat metric"))

