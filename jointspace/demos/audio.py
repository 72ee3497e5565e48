"""``run_audio_demo``: bind audio to an image–text model through images alone (ImageBind).

1. generate the shapes data with a sound per scene (:mod:`jointspace.data.sounds`);
2. train an image–text model (the main demo's recipe: MiniLM locked, LiT);
3. **bound**: add an audio tower and train it against the *locked image tower
   only* (:func:`~jointspace.train.init.bind_config`); it never sees a caption;
4. **direct**: the same audio tower, same steps, trained on audio–text pairs
   against the locked text tower instead: what a model that had such pairs gets;
5. evaluate audio↔text (and audio↔image) retrieval of both on the test split,
   and run an audio query against the test captions and images.

The bound model's audio↔text figures are *emergent*: every audio–text
similarity it computes comes from audio aligned to images that were aligned
to text.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig, load_run_config
from ..data.manifest import read_manifest
from ..data.shapes import ShapesSpec, class_names, write_shapes
from ..eval.run import evaluate
from ..model import load
from ..progress import logger
from ..train.init import bind_config
from ..train.trainer import train
from ..vectors import top_k
from .shapes import DEMO_OVERRIDES, held_out_fractions

#: the demo runs on the built-in dataset, whose manifests have these columns (what
#: ``jointspace data shapes --audio`` documents), and its table says a hit is the same caption
USER_FACING_DEFAULTS = ("audio", "image", "text", "caption")

AUDIO_DEMO_SCENES = 8000
BASE_OVERRIDES = (*DEMO_OVERRIDES, "train.max_steps=800")
BIND_OVERRIDES = ("train.max_steps=800",)
#: (model, pair) evaluated; the bound model never trained on audio–text pairs
EVALUATIONS = (("image_text", "image:text"), ("bound", "audio:text"), ("bound", "audio:image"),
               ("direct", "audio:text"), ("direct", "audio:image"))


@dataclass
class AudioDemoResult:
    out: Path
    models: dict[str, Path]
    results: dict[str, dict[str, Any]]   # "<model> <pair>" → evaluate()'s results
    queries: dict[str, list[tuple[float, str]]]
    seconds: dict[str, float]


def run_audio_demo(out: str | Path = "demo_audio", *, n: int = AUDIO_DEMO_SCENES, seed: int = 0,
                   base: RunConfig | None = None, bind: RunConfig | None = None,
                   k: int = 5) -> AudioDemoResult:
    """Run the five steps of the module docstring in ``out``.

    ``base`` is the image–text run (default: :data:`BASE_OVERRIDES`); ``bind``
    gives the training settings (and, optionally, the audio tower under
    ``model.towers.audio``) shared by the bound and the direct run (default:
    :data:`BIND_OVERRIDES`), so both get the same budget.

    >>> result = run_audio_demo("demo_audio")  # doctest: +SKIP
    >>> result.results["bound audio:text"]["retrieval"]["audio_to_text"]["R@1"]  # doctest: +SKIP
    """
    out = Path(out)
    base = base or load_run_config(None, list(BASE_OVERRIDES))
    bind = bind or load_run_config(None, list(BIND_OVERRIDES))
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    logger.info("1/5 generating %d shapes scenes with sounds in %s", n, out / "data")
    data = write_shapes(out / "data", ShapesSpec(n=n, seed=seed, fractions=held_out_fractions(n),
                                                 audio=True))
    seconds["data"] = time.perf_counter() - t

    models = {name: out / name for name in ("image_text", "bound", "direct")}
    base_dir = models["image_text"]
    # the bound and direct configs read the base model's folder, so they are built once it exists
    plan = (("image_text", lambda: base, None),
            ("bound", lambda: bind_config(bind, base_dir, "audio", "image"), base_dir),
            ("direct", lambda: bind_config(bind, base_dir, "audio", "text"), base_dir))
    for step, (name, make_run, init_from) in enumerate(plan, start=2):
        t = time.perf_counter()
        run = make_run()
        logger.info("%d/5 training %s: pairs %s, %d steps", step, name,
                    ", ".join(p.key for p in run.model.resolved_pairs()), run.train.max_steps)
        train(run, data["train"], models[name], val_data=data["val"], init_from=init_from)
        seconds[f"train {name}"] = time.perf_counter() - t

    t = time.perf_counter()
    logger.info("5/5 evaluating on the test split and querying with a sound")
    results = {f"{name} {pair}": evaluate(models[name], data["test"], pair=pair, classes=class_names(),
                                          out_dir=out / "eval" / f"{name}-{pair.replace(':', '-')}")
               for name, pair in EVALUATIONS}
    queries = audio_queries(models["bound"], data["test"], k)
    seconds["eval+search"] = time.perf_counter() - t
    return AudioDemoResult(out, models, results, queries, seconds)


def audio_queries(model_dir: Path, manifest: Path, k: int = 5,
                  n_queries: int = 1) -> dict[str, list[tuple[float, str]]]:
    """The first ``n_queries`` clips of ``manifest`` as queries: their top ``k``
    distinct captions and images among the manifest's rows, with scores."""
    model = load(model_dir)
    records = read_manifest(manifest, required=("audio", "image", "text")).records
    captions = sorted({r.text for r in records})
    text_emb = model.encode_text(captions)
    image_emb = model.encode_image([r.image for r in records])
    queries: dict[str, list[tuple[float, str]]] = {}
    for r in records[:n_queries]:
        q = model.encode_audio(r.audio)[0]
        for kind, emb, names in (("text", text_emb, captions),
                                 ("image", image_emb, [str(x.image) for x in records])):
            scores = emb @ q
            top = top_k(scores, k)
            queries[f"audio {r.audio.name} ({r.label}) → {kind}"] = [
                (float(scores[i]), names[i]) for i in top]
    return queries


def summary(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, pair, direction, grouping): R@1/5/10 and chance, for tables."""
    rows = []
    for key, r in results.items():
        model_name, pair = key.split(" ")
        a, b = pair.split(":")
        for view, grouped in (("retrieval", "caption" if "text" in pair else "item"),
                              ("retrieval_by_label", "label")):
            block = r.get(view)
            if not block:
                continue
            for direction in (f"{a}_to_{b}", f"{b}_to_{a}"):
                rows.append({"model": model_name, "direction": direction, "hit": grouped,
                             **{m: block[direction][m] for m in ("R@1", "R@5", "R@10")},
                             "chance R@1": block["chance"][direction]["R@1"]})
    return rows


__all__ = ["AUDIO_DEMO_SCENES", "AudioDemoResult", "audio_queries", "run_audio_demo", "summary"]
