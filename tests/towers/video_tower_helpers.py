"""Shared by the ``video_frames`` tower's tests: a tiny tower (4 frames of 16 px, a
one-width convnet, embed 8), clips made of arrays, and MPEG-4 files of them."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch

import jointspace.modalities.video  # noqa: F401 (registers the video plug-in)
from jointspace.config import TowerSpec
from jointspace.towers import build_tower
from jointspace.towers.video import VideoFramesTower

FRAME = {"name": "convnet", "options": {"image_size": 16, "widths": [8]}}
EMBED = 8
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}


def options(temporal: str = "transformer", frames: int = 4, **kw) -> dict:
    return {"frame_tower": dict(FRAME), "frames": frames, "temporal": temporal, "width": 16,
            "heads": 2, "layers": 1, **kw}


def make_tower(temporal: str = "transformer", seed: int = 0, trainable: str = "all",
               **kw) -> VideoFramesTower:
    torch.manual_seed(seed)
    return build_tower(TowerSpec("video_frames", options(temporal, **kw), trainable), EMBED, "video")


def random_clips(n: int, t: int = 4, size: int = 16, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8) for _ in range(n)]


def square_clip(colour, sizes, size: int = 16, at=(0, 0)) -> np.ndarray:
    """A square of ``colour`` whose side is ``sizes[t]`` in frame ``t``, on grey."""
    out = np.full((len(sizes), size, size, 3), 90, dtype=np.uint8)
    for t, s in enumerate(sizes):
        y, x = at
        out[t, y:y + s, x:x + s] = colour
    return out


def embed(tower, clips) -> torch.Tensor:
    with torch.no_grad():
        return tower(tower.collate([tower.preprocess_one(c) for c in clips]))


def write_clip(path: Path, frames: np.ndarray, fps: int = 8) -> Path:
    """An MPEG-4 clip of ``frames`` written with PyAV (lossy: tests match decoded frames to
    the nearest of a plain decode, never to the pixels written)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def decode_all(path: Path) -> np.ndarray:
    """Every frame of ``path``, a plain PyAV loop (the independent reference)."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
