"""The shapes video data (``jointspace data shapes --video``): clips, captions, minimal pairs.

Each clip is planned by :mod:`.video_scenes` (what moves, grows, shrinks, changes
colour or appears, and the captions that say so), rendered and written by
:mod:`.video_clips`. Everything follows from the seed: clip ``i`` of a split
depends only on ``(seed, split, i)``, and a test pair only on ``(seed, pair)``.

The test split starts with the **minimal pairs**: ``round(n_test ×
pair_fraction) // 2`` pairs of clips made of the same frames in another order
(:func:`.video_scenes.partner`), whose captions differ only in direction or
order words. Which member comes first is a coin flip. The ``pair`` column names
a row's pair (``pair-00017``), empty for clips in no pair; train and val clips
are never paired. :func:`count_pairs` gives the number from the spec alone.

Layout under ``out_dir``: ``videos/<split>/<clip>.mp4``, a poster frame (the
middle shown frame) as ``images/<split>/<clip>.png``, and ``train.csv``,
``val.csv``, ``test.csv`` with columns ``id, video, image, text, label, pair``
(``captions`` rows per clip, all naming the clip's file: one item with several
captions for the multi-caption retrieval protocol), and ``spec.json``.
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from ..errors import ConfigError
from ..fileio import atomic_write_text
from ..progress import progress
from .video_clips import CONTAINER, Encoding, encode_clip, render_frames
from .video_scenes import (MAX_FRAMES, MIN_FRAMES, SEQUENCE_TEMPLATES, TWO_TEMPLATES, ClipPlan,
                           Wording, caption, draw_wordings, partner, sample_plan)

#: the manifest columns a user's tools see (a dataset like any other) and the poster's format
USER_FACING_DEFAULTS = ("video", "image", "text", ".png")
VIDEO, IMAGE, TEXT, PNG = USER_FACING_DEFAULTS
HEADER = ("id", VIDEO, IMAGE, TEXT, "label", "pair")
SPLITS = ("train", "val", "test")
MAX_CAPTIONS = min(len(SEQUENCE_TEMPLATES), len(TWO_TEMPLATES))  # distinct templates per clip
INLINE_BELOW = 48  # clips: fewer are written in this process, without a pool


@dataclass(frozen=True)
class VideoSpec:
    """What to generate: ``n`` clips in all, split by ``fractions`` (train, val, test),
    each ``frames`` frames of ``frame_size`` px at ``fps``, with ``captions`` caption
    rows. ``workers``: processes that render and encode (0: one per core, at most 8;
    1: this process); the output does not depend on it."""

    n: int = 3000
    seed: int = 0
    frame_size: int = 64
    frames: int = 12
    fps: int = 8
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    captions: int = 2
    pair_fraction: float = 0.8  # of the test clips, those in minimal pairs
    codec: str = "libx264"
    container: str = CONTAINER
    pix_fmt: str = "yuv420p"
    qp: int = 20
    workers: int = 0

    def encoding(self) -> Encoding:
        return Encoding(self.codec, self.container, self.pix_fmt, self.fps, self.qp)

    def check(self) -> None:
        """Refuse impossible values before anything is written."""
        problems = []
        if self.n < 1:
            problems.append(f"n must be at least 1, not {self.n}")
        if not MIN_FRAMES <= self.frames <= MAX_FRAMES:
            problems.append(f"frames must be {MIN_FRAMES}–{MAX_FRAMES}, not {self.frames}")
        if not 16 <= self.frame_size <= 1024:
            problems.append(f"frame size must be 16–1024 px, not {self.frame_size}")
        if len(self.fractions) != 3 or min(self.fractions) < 0 or abs(sum(self.fractions) - 1) > 1e-6:
            problems.append(f"fractions must be three shares (train, val, test) summing to 1, "
                            f"not {self.fractions}")
        if not 1 <= self.captions <= MAX_CAPTIONS:
            problems.append(f"captions per clip must be 1–{MAX_CAPTIONS}, not {self.captions}")
        if not 0 <= self.pair_fraction <= 1:
            problems.append(f"pair_fraction must be 0–1, not {self.pair_fraction}")
        if problems:
            raise ConfigError("video shapes: " + "; ".join(problems))
        self.encoding().check(self.frame_size, self.frame_size)


@dataclass(frozen=True)
class ClipRecord:
    """One clip of a split: its id, plan, captions and minimal pair (``""``: none)."""

    clip_id: str
    plan: ClipPlan
    captions: tuple[str, ...]
    pair: str = ""


def split_sizes(spec: VideoSpec) -> dict[str, int]:
    n_val = round(spec.n * spec.fractions[1])
    n_test = round(spec.n * spec.fractions[2])
    return {"train": spec.n - n_val - n_test, "val": n_val, "test": n_test}


def count_pairs(spec: VideoSpec) -> int:
    """Minimal pairs in the test split (from the spec; nothing rendered)."""
    return round(split_sizes(spec)["test"] * spec.pair_fraction) // 2


def _clip(split: str, i: int, plan: ClipPlan, wordings: tuple[Wording, ...],
          pair: str = "") -> ClipRecord:
    return ClipRecord(f"{split}-{i:06d}", plan, tuple(caption(plan, w) for w in wordings), pair)


def plan_split(spec: VideoSpec, split: str) -> list[ClipRecord]:
    """The clips of one split, planned and captioned but not rendered (fast)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; the splits are {', '.join(SPLITS)}")
    records = []
    n_paired = 2 * count_pairs(spec) if split == "test" else 0
    for p in range(n_paired // 2):
        rng = random.Random(f"{spec.seed}/test/pair/{p}")
        base = sample_plan(rng, spec.frames)
        wordings = draw_wordings(rng, base, spec.captions)
        members = (base, partner(base)) if rng.random() < 0.5 else (partner(base), base)
        pair = f"pair-{p:05d}"
        records += [_clip(split, 2 * p + m, plan, wordings, pair)
                    for m, plan in enumerate(members)]
    for i in range(n_paired, split_sizes(spec)[split]):
        rng = random.Random(f"{spec.seed}/{split}/{i}")
        plan = sample_plan(rng, spec.frames)
        records.append(_clip(split, i, plan, draw_wordings(rng, plan, spec.captions)))
    return records


def clip_paths(spec: VideoSpec, split: str, record: ClipRecord) -> tuple[str, str]:
    """The clip's video file and poster image, relative to the manifests' folder."""
    return (f"videos/{split}/{record.clip_id}.{spec.container}",
            f"images/{split}/{record.clip_id}{PNG}")


def _write_one(task: tuple[ClipPlan, int, Encoding, Path, Path]) -> None:
    """Render one clip, write it and its poster (the middle shown frame)."""
    plan, size, encoding, video, poster = task
    frames = render_frames(plan, size)
    encode_clip(frames, video, encoding)
    Image.fromarray(frames[len(frames) // 2]).save(poster)


def _pool_size(spec: VideoSpec, clips: int) -> int:
    if spec.workers:
        return spec.workers
    return 1 if clips < INLINE_BELOW else min(os.cpu_count() or 1, 8)


def _render_all(tasks: list, spec: VideoSpec) -> None:
    """Write every clip, in a pool of processes when there are several workers."""
    bar = progress(desc="render shape clips", total=len(tasks), unit="clip")
    workers = _pool_size(spec, len(tasks))
    if workers == 1:
        for task in tasks:
            _write_one(task)
            bar.update(1)
    else:  # fork where there is fork: workers start at once and need not import anything
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with context.Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_one, tasks, chunksize=8):
                bar.update(1)
    bar.close()


def write_video_shapes(out_dir: str | Path, spec: VideoSpec = VideoSpec()) -> dict[str, Path]:
    """Generate the clips and write one CSV manifest per split (see the module
    docstring for the layout); returns each split's manifest path.

    >>> paths = write_video_shapes("/tmp/shape_clips", VideoSpec(n=40))  # doctest: +SKIP
    """
    spec.check()
    out = Path(out_dir)
    tasks, pending, manifests = [], {}, {}
    encoding = spec.encoding()
    for split in SPLITS:
        for folder in ("videos", "images"):
            (out / folder / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for record in plan_split(spec, split):
            video, poster = clip_paths(spec, split, record)
            tasks.append((record.plan, spec.frame_size, encoding, out / video, out / poster))
            rows += [[f"{record.clip_id}-{k}", video, poster, text, record.plan.label, record.pair]
                     for k, text in enumerate(record.captions)]
        pending[split] = rows
    _render_all(tasks, spec)
    for split, rows in pending.items():
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(HEADER)
        writer.writerows(rows)
        manifests[split] = atomic_write_text(out / f"{split}.csv", text.getvalue())
    settings = {k: v for k, v in asdict(spec).items() if k != "workers"}  # output never depends on it
    atomic_write_text(out / "spec.json", json.dumps(settings, indent=2))
    return manifests
