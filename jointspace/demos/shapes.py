"""``run_demo``: data → train → eval → index → search on the built-in dataset."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig, load_run_config
from ..data.shapes import HELD_OUT_COMBOS, ShapesSpec, class_names, write_shapes
from ..data.shifted import TEST_SHIFTED
from ..eval.run import evaluate
from ..extras import require
from ..index import Hit, build_collection
from ..progress import logger
from ..train.trainer import train

DEMO_TEXT_QUERIES = ("a red circle", "a big blue square on the left", "a small yellow star")
#: the demo's recipe, applied before any user override: LiT — the pretrained MiniLM
#: text tower locked whole (its random projection too, so the text space keeps
#: MiniLM's geometry) and the image tower trained into it; the locked features are
#: computed once per caption, which frees the time for more data and more steps
DEMO_SCENES = 20000
DEMO_OVERRIDES = ("model.towers.text={name: minilm, trainable: none}", "train.max_steps=1500")
SCRATCH_TEXT_OVERRIDES = ("model.towers.text={name: transformer}", "train.max_steps=600")
#: ``--image-tower efficientnet_lite0``: the ImageNet-pretrained EfficientNet-Lite0 fine-tuned
#: whole at the data's 64 px, at a lower lr and a smaller batch (its steps cost ~25× the
#: convnet's on a CPU, so the steps are what fits in the default demo's wall time)
PRETRAINED_IMAGE_OVERRIDES = (
    "model.towers.image={name: efficientnet_lite, trainable: all, options: {variant: lite0, image_size: 64}}",
    "train.batch_size=64", "train.lr=5e-4", "train.warmup_steps=20", "train.max_steps=150",
    "train.eval_every=50")
IMAGE_TOWERS = ("convnet", "efficientnet_lite0")


@dataclass
class DemoResult:
    out: Path
    model_dir: Path
    collection_dir: Path
    results: dict[str, Any]
    queries: dict[str, list[Hit]]
    seconds: dict[str, float]


def held_out_fractions(n: int, rows: int = 700) -> tuple[float, float, float]:
    """Split fractions that keep validation and test at ``rows`` each (10 % each below
    ``10 · rows`` scenes): more scenes go to training, and the test split measured in
    the README stays the same 700 rows whatever ``n`` is."""
    held = min(rows / n, 0.1)
    return (1 - 2 * held, held, held)


def demo_config(overrides: list[str] = (), config_file: str | Path | None = None,
                text_tower: str = "minilm", image_tower: str = "convnet") -> RunConfig:
    """The demo's run config: :data:`DEMO_OVERRIDES` (``text_tower="transformer"``: the
    from-scratch text tower instead; ``image_tower="efficientnet_lite0"``: then
    :data:`PRETRAINED_IMAGE_OVERRIDES`), then a config file and ``key=value`` overrides."""
    recipe = DEMO_OVERRIDES if text_tower == "minilm" else SCRATCH_TEXT_OVERRIDES
    if image_tower not in IMAGE_TOWERS:
        raise ValueError(f"image_tower must be one of {', '.join(IMAGE_TOWERS)}, got {image_tower!r}")
    if image_tower == "efficientnet_lite0":
        recipe = (*recipe, *PRETRAINED_IMAGE_OVERRIDES)
    return load_run_config(config_file, [*recipe, *overrides])


def run_demo(out: str | Path = "demo_out", *, n: int = DEMO_SCENES, seed: int = 0,
             run: RunConfig | None = None, k: int = 5) -> DemoResult:
    """Generate shapes, train a small image–text model, evaluate it on the
    held-out test split and its shifted twin (``test_shifted``: the same scenes on
    photographs, blurred, noisy, rescaled, as JPEG), index the test images and run a
    few queries.

    ``run`` defaults to :func:`demo_config`: the image tower trained against the
    pretrained MiniLM text tower, locked (LiT).

    >>> result = run_demo("demo_out")  # doctest: +SKIP
    >>> result.results["zero_shot"]["top1"]  # doctest: +SKIP
    """
    out = Path(out)
    # before minutes of training: step 4 indexes the test images in the default (faiss) store
    require("faiss", "index", "the demo's collection (step 4/4)")
    run = run or demo_config()
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    logger.info("1/4 generating %d shapes scenes in %s", n, out / "data")
    manifests = write_shapes(out / "data", ShapesSpec(n=n, seed=seed, fractions=held_out_fractions(n),
                                                      shifted=True))
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
                       subsets={"unseen_combos": held_out}, train_manifest=manifests["val"])
    if "test_words" in manifests:  # the same test rows in words training never used
        words = evaluate(model_dir, manifests["test_words"], out_dir=out / "eval_words",
                         classes=class_names())
        results["test_words_retrieval"] = words["retrieval"]
        results["test_words_retrieval_by_label"] = words.get("retrieval_by_label")
    if TEST_SHIFTED in manifests:  # the test scenes, rendered with the distribution shift
        shifted = evaluate(model_dir, manifests[TEST_SHIFTED], out_dir=out / "eval_shifted",
                           classes=class_names(), subsets={"unseen_combos": held_out})
        results[TEST_SHIFTED] = {key: shifted[key] for key in ("retrieval", "retrieval_by_label")
                                 if key in shifted}
        results[TEST_SHIFTED].update({k: v for k, v in shifted.items() if k.startswith("zero_shot")})
    seconds["eval"] = time.perf_counter() - t

    t = time.perf_counter()
    logger.info("4/4 indexing the test images and searching")
    collection = build_collection(model_dir, manifests["test"], out / "collection")
    queries = {f"text: {q}": collection.search_text(q, k) for q in DEMO_TEXT_QUERIES}
    example = next(iter(queries.values()))[0].item["path"]  # an image query: a first hit
    queries[f"image: {example}"] = collection.search_image(example, k)
    seconds["index+search"] = time.perf_counter() - t
    return DemoResult(out, model_dir, out / "collection", results, queries, seconds)
