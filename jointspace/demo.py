"""``run_demo``: data → train → eval → index → search on the built-in dataset."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig, TowerSpec, load_run_config
from .data.shapes import HELD_OUT_COMBOS, ShapesSpec, class_names, write_shapes
from .eval.run import evaluate
from .index.collection import Hit, build_collection
from .progress import logger
from .train.trainer import train

DEMO_TEXT_QUERIES = ("a red circle", "a big blue square on the left", "a small yellow star")


@dataclass
class DemoResult:
    out: Path
    model_dir: Path
    collection_dir: Path
    results: dict[str, Any]
    queries: dict[str, list[Hit]]
    seconds: dict[str, float]


def run_demo(out: str | Path = "demo_out", *, n: int = 7000, seed: int = 0,
             run: RunConfig | None = None, k: int = 5, text_tower: str | None = None) -> DemoResult:
    """Generate shapes, train a small image–text model, evaluate it on the
    held-out test split, index the test images and run a few queries.

    ``text_tower="minilm"`` locks the pretrained MiniLM text encoder and trains
    the image tower (and the text projection) against it (LiT); its features
    are computed once per caption and cached.

    >>> result = run_demo("demo_out")  # doctest: +SKIP
    >>> result.results["zero_shot"]["top1"]  # doctest: +SKIP
    """
    out = Path(out)
    run = run or load_run_config()
    if text_tower is not None:
        run.model.towers["text"] = TowerSpec(text_tower, {}, "head" if text_tower != "transformer" else "all")
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    logger.info("1/4 generating %d shapes scenes in %s", n, out / "data")
    manifests = write_shapes(out / "data", ShapesSpec(n=n, seed=seed))
    seconds["data"] = time.perf_counter() - t

    t = time.perf_counter()
    model_dir = out / "model"
    logger.info("2/4 training %d steps of %d pairs → %s", run.train.max_steps, run.train.batch_size,
                model_dir)
    train(run, manifests["train"], model_dir, val_data=manifests["val"])
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    logger.info("3/4 evaluating on the held-out test split")
    held_out = [f"{c} {k}" for c, k in sorted(HELD_OUT_COMBOS)]
    results = evaluate(model_dir, manifests["test"], out_dir=out / "eval", classes=class_names(),
                       subsets={"unseen_combos": held_out})
    seconds["eval"] = time.perf_counter() - t

    t = time.perf_counter()
    logger.info("4/4 indexing the test images and searching")
    collection = build_collection(model_dir, manifests["test"], out / "collection")
    queries = {f"text: {q}": collection.search_text(q, k) for q in DEMO_TEXT_QUERIES}
    example = collection.items[0]["path"]
    queries[f"image: {example}"] = collection.search_image(example, k)
    seconds["index+search"] = time.perf_counter() - t
    return DemoResult(out, model_dir, out / "collection", results, queries, seconds)
