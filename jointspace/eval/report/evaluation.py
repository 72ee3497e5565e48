"""``report.html`` of an evaluation: what was evaluated and the headline figures in words
on the first screen, then a section per question, every item shown as its preview."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...fileio import atomic_write_text
from ...model_io import CONFIG_FILE
from ..pairs import DEFAULT_PAIR
from . import pair_test, qualitative, sections
from .html import page, section
from .model_info import ModelInfo, describe_folder
from .previews import Previews

REPORT_FILE = "report.html"


def write_report(out_dir: str | Path, results: dict[str, Any], a_emb: np.ndarray, b_emb: np.ndarray,
                 groups: Sequence[Any], items: dict[str, list[str]] | None = None,
                 log_path: str | Path | None = None, a_ids: Sequence[Any] | None = None, *,
                 model: ModelInfo | None = None, b_ids: Sequence[Any] | None = None,
                 examples: int = 8, top: int = 5, seed: int = 0) -> Path:
    """Write ``out_dir/report.html`` for one pair's results (:func:`..run.evaluate`'s).

    ``groups`` are the rows' retrieval keys, ``a_ids``/``b_ids`` their items' identities
    (equal ids: one item), ``items`` each side's items (paths or values) for the
    previews. ``model`` describes the model (:mod:`.model_info`; without it, the folder
    holding ``log_path`` when it is a model folder). ``examples`` queries per direction
    (drawn with ``seed``) and as many worst failures are shown with their ``top`` answers.
    """
    results = {**results, "pair": list(results.get("pair", DEFAULT_PAIR))}
    names = tuple(results["pair"])
    a, b = names
    if model is None and log_path is not None and (Path(log_path).parent / CONFIG_FILE).is_file():
        model = describe_folder(Path(log_path).parent)
    distinct = {side: len(set(ids if ids is not None else (items or {}).get(side, []))) or len(emb)
                for side, ids, emb in ((a, a_ids, a_emb), (b, b_ids, b_emb))}
    data = {"manifest": str(results.get("manifest", "")), "items": distinct}
    written = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    preview = Previews()
    parts = [sections.first_screen(results, model, data, written),
             section("Retrieval", sections.retrieval_section(results, a_emb, b_emb, groups, a_ids),
                     anchor="retrieval")]
    if results.get("retrieval") and items and a in items and b in items:
        found = qualitative.retrieval_examples(a_emb, b_emb, groups, a_ids, names, n=examples, k=top,
                                               seed=seed)
        parts.append(section("Retrieval examples", qualitative.render(found, items, preview, seed),
                             anchor="examples"))
    pairs = pair_test.section(results)
    if pairs:
        parts.append(section("Minimal pairs: does order matter?", pairs, anchor="minimal-pairs"))
    parts += [section("Zero-shot classification", sections.zero_shot_section(results), anchor="zero-shot"),
              section("Probes", sections.probe_section(results), anchor="probes"),
              section("Geometry", sections.geometry_section(results, a_emb, b_emb, items, preview),
                      anchor="geometry")]
    matryoshka = sections.matryoshka_section(results)
    if matryoshka:
        parts.append(section("Matryoshka: smaller embeddings", matryoshka, anchor="matryoshka"))
    parts += [section("Training", sections.training_section(model), anchor="training"),
              section("All figures", sections.full_table(results), anchor="all")]
    title = f"{model.name if model else 'jointspace'}: {a} ↔ {b} evaluation"
    return atomic_write_text(Path(out_dir) / REPORT_FILE, page(title, "".join(parts)))
