"""Frames of a planned clip (Pillow, NumPy) and the clip written as a real video file (PyAV).

Each frame is drawn at twice the size and downsampled, as the still shapes images
are, so the two look alike. Base frames are rendered once and the
shown frames are picked by the plan's order, so the two members of a minimal
pair are made of byte-identical RGB frames.

The default encoding, :data:`DEFAULT_ENCODING`, is H.264 (libx264) in MP4, pixel
format yuv420p (what browsers play), every frame a key frame and a constant
quantiser (``qp``): each frame is then coded on its own, with no rate control
carried from frame to frame, so identical RGB frames decode to identical frames
whatever their position, and a pair's decoded clips still have one frame multiset
(checked in ``tests/data/test_shapes_video.py``). With inter-frame coding, or a
rate-controlled codec, compression noise would differ between the two orders
(and a first, sharper key frame could hint at which member is which). Other codecs
and containers (``mpeg4``/MP4, ``libvpx-vp9``/WebM) can be asked for with
:class:`Encoding`; they get the same key-frame-only setting but no such guarantee.
yuv420p halves the chroma resolution, so width and height must be even.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image, ImageDraw

from ..errors import DataError
from ..extras import require
from .scenes import BACKGROUNDS, polygon
from .video_scenes import Actor, ClipPlan

#: the extra that installs PyAV, the default container and its file suffix (the built-in
#: dataset's files are user-facing, like a dataset a user brings)
USER_FACING_DEFAULTS = ("video", "mp4", ".mp4")
EXTRA, CONTAINER, SUFFIX = USER_FACING_DEFAULTS
#: pixel formats that subsample chroma 2× in both directions (need an even frame size)
SUBSAMPLED = ("yuv420p", "yuvj420p", "nv12")


def load_av() -> ModuleType:
    """PyAV, imported; a clear error naming ``pip install 'jointspace[video]'`` if it is not
    installed."""
    return require("av", EXTRA, "writing the shapes clips")


@dataclass(frozen=True)
class Encoding:
    """How a clip is written: codec, container format, pixel format, frame rate, and
    the constant quantiser for libx264 (0–51, lower is better; ignored by others)."""

    codec: str = "libx264"
    container: str = CONTAINER
    pix_fmt: str = "yuv420p"
    fps: int = 8
    qp: int = 20
    options: dict[str, str] = field(default_factory=dict)  # passed to the encoder as is

    def check(self, width: int, height: int) -> None:
        """Refuse what the encoder would fail on later, with the reason."""
        if self.pix_fmt in SUBSAMPLED and (width % 2 or height % 2):
            raise DataError(f"frame size {width}×{height} has an odd side, but {self.pix_fmt} "
                            f"stores colour at half resolution and needs an even width and "
                            f"height (e.g. {width + width % 2}×{height + height % 2})")
        if not 1 <= self.fps <= 240:
            raise DataError(f"fps must be 1–240, not {self.fps}")
        if not 0 <= self.qp <= 51:
            raise DataError(f"qp must be 0–51 (libx264's quantiser), not {self.qp}")

    def encoder_options(self) -> dict[str, str]:
        base = {"qp": str(self.qp), "preset": "veryfast"} if self.codec == "libx264" else {}
        return {**base, **self.options}


DEFAULT_ENCODING = Encoding()


def _draw(draw: ImageDraw.ImageDraw, actor: Actor, t: int, side: int) -> None:
    if not actor.visible[t]:
        return
    x, y, r, rgb = actor.state(t)
    cx, cy, rad = x * side, y * side, r * side
    if actor.kind == "circle":
        draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=rgb)
    else:
        draw.polygon(polygon(actor.kind, cx, cy, rad), fill=rgb)


def base_frames(plan: ClipPlan, size: int) -> np.ndarray:
    """The plan's base frames, ``(frames, size, size, 3)`` uint8 RGB, in base order.

    Drawn at twice the size and averaged 2×2 (a box filter: ten times cheaper than the
    stills' Lanczos, edges a shade softer); frames whose shapes are all in the same
    state (a held colour, a sequence's segments) are drawn once and copied."""
    big = size * 2
    out = np.empty((plan.frames, size, size, 3), dtype=np.uint8)
    drawn: dict[tuple, np.ndarray] = {}
    for t in range(plan.frames):
        key = tuple(actor.state(t) if actor.visible[t] else None for actor in plan.actors)
        if key not in drawn:
            image = Image.new("RGB", (big, big), BACKGROUNDS[plan.background])
            draw = ImageDraw.Draw(image)
            for actor in plan.actors:
                _draw(draw, actor, t, big)
            drawn[key] = np.asarray(image.reduce(2))
        out[t] = drawn[key]
    return out


def render_frames(plan: ClipPlan, size: int) -> np.ndarray:
    """The frames as shown, ``(frames, size, size, 3)`` uint8 RGB."""
    return base_frames(plan, size)[list(plan.order)]


def encode_clip(frames: np.ndarray, path: str | Path, encoding: Encoding = DEFAULT_ENCODING) -> Path:
    """Write RGB frames ``(n, h, w, 3)`` as a video file at ``path`` (via a temporary
    sibling renamed into place, so a killed run leaves no half-written clip)."""
    av = load_av()
    path = Path(path)
    n, h, w, _ = frames.shape
    encoding.check(w, h)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        mux_options = {"movflags": "+faststart"} if encoding.container == CONTAINER else {}
        with av.open(str(tmp), "w", format=encoding.container, options=mux_options) as container:
            stream = container.add_stream(encoding.codec, rate=Fraction(encoding.fps))
            stream.width, stream.height, stream.pix_fmt = w, h, encoding.pix_fmt
            stream.codec_context.gop_size = 1  # every frame a key frame (see the module doc)
            stream.codec_context.thread_count = 1  # the same bytes on every machine and run
            stream.options = encoding.encoder_options()
            for i, pixels in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        os.replace(tmp, path)
    except (av.FFmpegError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{path}: could not encode the clip with {encoding.codec} in "
                        f"{encoding.container} ({encoding.pix_fmt}): {e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
