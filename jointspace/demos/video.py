"""``run_video_demo``: does the model use time? Mean pooling against a temporal transformer.

1. generate shape clips (:mod:`jointspace.data.video_shapes`): shapes that move, grow,
   shrink, change colour or appear one after another, two captions per clip; the test
   split holds minimal pairs (the same frames in another order, captions that differ
   only in direction or order words);
2. train two video–text models in the same budget, identical but for the temporal
   module of the video tower: ``mean`` (CLIP4Clip's meanP: the mean of the frame
   embeddings, blind to order) and ``transformer`` (seqTransf: learned positions);
3. evaluate both on the test split: video↔text retrieval (several captions per clip:
   the multi-caption protocol), zero-shot action recognition over the 8 labels, and the
   minimal pairs (:mod:`jointspace.eval.minimal_pairs`).

The recipe (what fits the 5-minute budget on two CPU cores and still learns order): clips
of 8 frames at 32 px, every frame read; each frame through a **locked, randomly
initialised** full-image projection (a convnet whose stem patch is the whole frame, so
the frame's 512 features keep where things are), whose features are computed once per
clip and cached (:mod:`jointspace.train.feature_cache`); only the frame projection, the
temporal module and the text tower (a small transformer trained from scratch) train.
A locked MiniLM text tower was tried and left out: it embeds the two captions of a pair
almost alike (cosine 0.987–0.997 for left/right, colour and sequence order), so no video
tower can pick the right one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..config import RunConfig, load_run_config
from ..data.video_shapes import VideoSpec, write_video_shapes
from ..eval.run import evaluate
from ..progress import logger
from ..train.trainer import train

#: the pair the demo evaluates and the built-in clips' columns its two towers read
USER_FACING_DEFAULTS = ("video:text", "video", "text")
PAIR, VIDEO, TEXT = USER_FACING_DEFAULTS

VIDEO_DEMO_CLIPS = 3000
DEMO_FRAMES, DEMO_FRAME_SIZE = 8, 32
TEMPORALS = ("mean", "transformer")
#: the video tower of both models, but for ``temporal``: every frame of the clip
#: (``frames`` equals the clips' length, so the two members of a minimal pair show mean
#: pooling the same frames), through a locked random full-frame projection (cached)
FRAME_TOWER = ("{{name: convnet, trainable: head, options: {{image_size: {size}, stem_patch: {size}, "
               "widths: [512]}}}}")
VIDEO_OPTIONS = "width: 64, layers: 2, heads: 2"
TEXT_TOWER = "{name: transformer, options: {width: 64, layers: 2, heads: 2, context_length: 24}}"
TRAIN_OVERRIDES = ("model.embed_dim=128", "train.batch_size=128", "train.max_steps=1800",
                   "train.lr=2e-3", "train.warmup_steps=20", "train.log_every=50",
                   "train.eval_every=100000", "train.checkpoint_every=100000")


@dataclass
class VideoDemoResult:
    out: Path
    models: dict[str, Path]
    results: dict[str, dict[str, Any]]     # temporal → evaluate()'s results on the test split
    seconds: dict[str, float]
    steps_per_s: dict[str, float]          # temporal → steps per second of the training loop


def video_demo_config(temporal: str, overrides: Sequence[str] = (), *, frames: int = DEMO_FRAMES,
                      frame_size: int = DEMO_FRAME_SIZE) -> RunConfig:
    """The run of one demo model: :data:`TRAIN_OVERRIDES`, the video tower with
    ``temporal`` reading ``frames`` frames of ``frame_size`` px, the text tower, then
    ``overrides`` (``key=value``)."""
    if temporal not in TEMPORALS:
        raise ValueError(f"temporal must be one of {', '.join(TEMPORALS)}, got {temporal!r}")
    frame = FRAME_TOWER.format(size=frame_size)
    video = (f"{{name: video_frames, options: {{frame_tower: {frame}, temporal: {temporal}, "
             f"frames: {frames}, {VIDEO_OPTIONS}}}}}")
    towers = f"model.towers={{{VIDEO}: {video}, {TEXT}: {TEXT_TOWER}}}"
    return load_run_config(None, [towers, *TRAIN_OVERRIDES, *overrides])


def run_video_demo(out: str | Path = "demo_video", *, n: int = VIDEO_DEMO_CLIPS, seed: int = 0,
                   overrides: Sequence[str] = (), spec: VideoSpec | None = None) -> VideoDemoResult:
    """Run the three steps of the module docstring in ``out``; ``overrides`` apply to both
    runs (the same budget), ``spec`` replaces the clips' settings (default: ``n`` clips of
    :data:`DEMO_FRAMES` frames at :data:`DEMO_FRAME_SIZE` px, 70/10/20 %).

    >>> result = run_video_demo("demo_video")  # doctest: +SKIP
    >>> result.results["transformer"]["minimal_pairs"]["two_way"]  # doctest: +SKIP
    """
    out = Path(out)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    spec = spec or VideoSpec(n=n, seed=seed, frames=DEMO_FRAMES, frame_size=DEMO_FRAME_SIZE)
    logger.info("1/3 generating %d shape clips in %s", spec.n, out / "data")
    data = write_video_shapes(out / "data", spec)
    seconds["data"] = time.perf_counter() - t

    models = {temporal: out / temporal for temporal in TEMPORALS}
    steps_per_s: dict[str, float] = {}
    for temporal in TEMPORALS:
        t = time.perf_counter()
        run = video_demo_config(temporal, overrides, frames=spec.frames, frame_size=spec.frame_size)
        logger.info("2/3 training temporal=%s: %d steps of %d clips", temporal, run.train.max_steps,
                    run.train.batch_size)
        result = train(run, data["train"], models[temporal])
        seconds[f"train {temporal}"] = time.perf_counter() - t
        # the optimisation loop alone (the rest: reading and checking the manifest, caching
        # the locked frame features, saving)
        steps_per_s[temporal] = result.steps / result.seconds if result.seconds else float("nan")

    t = time.perf_counter()
    logger.info("3/3 evaluating video↔text and the minimal pairs on the test split")
    results = {temporal: evaluate(models[temporal], data["test"], pair=PAIR,
                                  out_dir=out / "eval" / temporal)
               for temporal in TEMPORALS}
    seconds["eval"] = time.perf_counter() - t
    return VideoDemoResult(out, models, results, seconds, steps_per_s)


def summary(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: the minimal-pairs figures, whole-split retrieval both ways
    (R@1, R@5, median and mean rank) and zero-shot top-1, with chance levels."""
    rows = []
    for temporal, r in results.items():
        a, b = r["pair"]
        m, ret = r.get("minimal_pairs") or {}, r["retrieval"]
        row: dict[str, Any] = {"model": temporal}
        for d in (f"{a}_to_{b}", f"{b}_to_{a}"):
            row[f"2-way {d}"] = m.get("two_way", {}).get(d)
            row[f"pairs R@1 {d}"] = m.get("retrieval", {}).get(d, {}).get("R@1")
            for k in ("R@1", "R@5", "median_rank", "mean_rank"):
                row[f"{k} {d}"] = ret[d][k]
            row[f"chance R@1 {d}"] = ret["chance"][d]["R@1"]
        z = r.get("zero_shot") or {}
        row["zero-shot top-1"], row["chance top-1"] = z.get("top1"), z.get("chance_top1")
        rows.append(row)
    return rows


__all__ = ["TEMPORALS", "VIDEO_DEMO_CLIPS", "VideoDemoResult", "run_video_demo", "summary",
           "video_demo_config"]
