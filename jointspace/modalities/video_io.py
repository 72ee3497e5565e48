"""Reading video files: a few RGB frames sampled over a clip, and what the manifest reader
checks. PyAV (FFmpeg in its wheel) decodes; ``pip install 'jointspace[video]'`` adds it.

Policy (the same for training, evaluation, indexing and queries):

* **Containers**: MP4/MOV/M4V, WebM/MKV (Matroska), AVI, animated GIF, and MPEG-TS/PS, FLV,
  Ogg, ASF, NUT, whatever codec FFmpeg decodes in them (the tests read H.264, MPEG-4,
  VP9, FFV1 and GIF). Anything FFmpeg reads as something else — a still PNG/JPEG
  (renamed ``.mp4`` or not), a text, an image sequence — is refused. Only the first video
  stream is read; **the audio track is ignored**.
* **Sampling** (:func:`read_clip`): the clip's extent is its first frame's start to its
  last frame's end, read from the packets (not the header, which can be wrong). A target
  time picks the frame *on screen* then: the last one starting at or before it (pts ×
  time_base, so a variable frame rate is honoured). ``uniform`` (evaluation, queries):
  ``frames`` targets at the midpoints of ``frames`` equal segments; ``random``
  (training): one uniformly random time inside each segment, reproducible with ``rng``;
  ``fps``: targets every ``1/fps`` s (segment midpoints again), at most ``max_frames``
  (64) — a longer clip keeps its first ``max_frames`` and a note says so.
* **Short clips**: the output always has the asked number of frames (uniform, random).
  A clip with fewer frames than targets repeats frames (each target still takes the
  frame on screen), and a note says how many targets repeat a frame. A one-frame clip
  is accepted (repeated), except a GIF: one frame is a still image, refused.
* **Cost**: independent of the clip's duration. Each target is reached by a keyframe
  seek followed by decoding forward to it; a target whose keyframe is behind the
  decoder's position is reached by decoding forward without re-seeking. Packets before
  the wanted frame are decoded with FFmpeg's ``skip_frame = NONREF`` (frames nothing
  refers to are skipped, the rest decode bit-exactly), and only the sampled frames are
  converted to RGB. So at most the sampled frames times a group of pictures is decoded;
  and never more than :data:`MAX_DECODED` packets nor :data:`MAX_DECODED_PIXELS` pixels
  (10⁹·10) per clip (:class:`TooLarge` beyond: a file with keyframes that far apart, or
  one that cannot seek and is that long). MPEG-PS (``.mpg``, ``.vob``) is decoded forward
  from its start, never sought mid-file (its timestamps after a seek are frames off), so
  one over :data:`MAX_DECODED` frames is refused.
* **Rotation**: the display matrix (MP4 ``tkhd``, a phone's portrait video) is applied
  in quarter turns, so frames come out upright and ``size`` is after rotation; a
  mirrored matrix's flip is ignored; other angles are rounded to a quarter turn (note).
* **Odd sizes** are kept (63×37 stays 63×37). A stream that changes size mid-way has its
  sampled frames scaled to the first one's size (note).
* **Bounds** (:class:`~jointspace.modalities.TooLarge`): frames above 8K (more than
  7680×4320 pixels, or a side over 7680) or over ``max_pixels``, checked on the stream's
  declared size before decoding and on every decoded frame (sampled or not: a stream
  that grows mid-way is refused); files over ``max_bytes``; the decoding cost above.
* **Errors** (:class:`~jointspace.errors.DataError`, naming the file and the reason in
  words): missing, unreadable or undecodable data, truncated (the header promises
  frames the data does not hold), no video stream (audio only), no frame, a still
  image, a decoding error. Whatever else opening or decoding raises (damaged data can
  make FFmpeg or PyAV fail in other ways) is a :class:`DataError` too; metadata that is
  not UTF-8 (a Latin-1 title) is read with replacement characters.

:func:`check_video` is the check of every video file a manifest or a folder names: the
decoding :func:`read_clip` does with its defaults, so a clip that passes loads later.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import DataError
from ..extras import require
from .base import ItemCheck, TooLarge
from .video_seek import (MAX_DECODED, MAX_DECODED_PIXELS, MAX_PIXELS, MAX_SIDE,  # noqa: F401 (named here)
                         READ_FROM_START, Cursor, check_size, packet_key)

DEFAULT_FRAMES = 8
MAX_FRAMES = 64                      # targets of one clip (fps sampling is capped here)
MAX_BYTES = 4 << 30                  # a file read from disk; servers pass their upload bound
#: FFmpeg demuxers read as video (anything else FFmpeg opens — image pipes, tty text … — is not)
CONTAINERS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "gif", "mpegts", "mpeg", "flv",
              "ogg", "asf", "nut")


@dataclass(frozen=True)
class Clip:
    """Frames sampled from a video: ``frames`` uint8 [T, H, W, 3] RGB, upright; ``times``
    their start in seconds from the clip's first frame [T]; ``duration`` of the clip in
    seconds; ``size`` (width, height) after rotation; ``notes`` on what was done; ``data``
    the file's bytes when it was decoded from bytes (a shard member, an upload), so that a
    reader wanting other frames (another number, random ones while training) samples the
    file as it would a path, within the bounds it was decoded with (``max_pixels``,
    ``max_bytes``)."""

    frames: np.ndarray
    times: np.ndarray
    duration: float
    size: tuple[int, int]
    notes: tuple[str, ...] = ()
    data: bytes | None = field(default=None, repr=False, compare=False)
    max_pixels: int | None = field(default=None, repr=False, compare=False)
    max_bytes: int = field(default=MAX_BYTES, repr=False, compare=False)


def read_clip(source: str | Path | bytes, *, frames: int = DEFAULT_FRAMES, sampling: str = "uniform",
              fps: float | None = None, rng: np.random.Generator | None = None,
              max_pixels: int | None = None, max_bytes: int = MAX_BYTES, where: str = "",
              max_frames: int = MAX_FRAMES) -> Clip:
    """A video file (a path, or its bytes: a shard member, an upload) → ``frames`` frames
    sampled as the module's policy says (``sampling`` "uniform" or "random"; ``fps`` for a
    fixed rate instead). Raises :class:`DataError` naming ``where`` (or the path)."""
    if sampling not in ("uniform", "random"):
        raise ValueError(f"sampling is 'uniform' or 'random', not {sampling!r}")
    if fps is None and not 1 <= frames <= max_frames:
        raise ValueError(f"frames must be 1 … {max_frames}, not {frames}")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    av = require("av", "video")
    name = where or (str(source) if not isinstance(source, bytes) else "video")
    try:
        return _read(av, source, name, frames, sampling, fps, rng, max_pixels, max_bytes, max_frames)
    except DataError:
        raise
    except av.error.FFmpegError as e:
        raise DataError(f"{name} cannot be decoded as a video ({_words(e)})") from None
    except Exception as e:  # noqa: BLE001 (damaged data: whatever FFmpeg or PyAV raised)
        raise DataError(f"{name} cannot be read as a video: its data is damaged "
                        f"({type(e).__name__} in the decoder: {e})") from None


def _read(av: Any, source: str | Path | bytes, name: str, frames: int, sampling: str,
          fps: float | None, rng: np.random.Generator | None, max_pixels: int | None,
          max_bytes: int, max_frames: int) -> Clip:
    container = _open(av, source, name, max_bytes)
    try:
        stream = _video_stream(container, name)
        check_size(stream.codec_context.width, stream.codec_context.height, max_pixels, name)
        seekable = container.format.name not in READ_FROM_START
        first, start, end, still = _extent(av, container, stream, name, seekable)
        tb = stream.time_base
        targets, notes = _targets(start, end, tb, frames, sampling, fps, rng, max_frames)
        cursor = Cursor(av, container, stream, start, name, targets, first=first,
                        seekable=seekable, max_pixels=max_pixels)
        picked = [cursor.frame_at(t) for t in targets]
        if still:
            raise DataError(f"{name} is a still GIF image (one frame), not a video")
        return _assemble(picked, start, end, tb, max_pixels, name, notes + cursor.notes)
    finally:
        container.close()


def _open(av: Any, source: str | Path | bytes, name: str, max_bytes: int) -> Any:
    if isinstance(source, bytes):
        size, data = len(source), io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"video file not found: {name}")
        size, data = path.stat().st_size, str(path)
    if size > max_bytes:
        raise TooLarge(f"{name} is {size} bytes; at most {max_bytes} are read")
    if size == 0:
        raise DataError(f"{name} is empty (0 bytes)")
    try:
        container = av.open(data, "r", metadata_errors="replace")
    except av.error.FFmpegError as e:
        raise DataError(f"{name} cannot be opened as a video: truncated, or not a video file "
                        f"({_words(e)})") from None
    form = container.format.name
    if form not in CONTAINERS:
        container.close()
        if form.endswith("_pipe") or form.startswith("image2"):
            kind = form.removesuffix("_pipe").upper()
            raise DataError(f"{name} is a still image ({kind}), not a video")
        raise DataError(f"{name} is not a video file (FFmpeg reads it as {form!r})")
    return container


def _words(e: Exception) -> str:
    """FFmpeg's message without its errno and the file name it repeats."""
    return getattr(e, "strerror", None) or str(e)


def _video_stream(container: Any, name: str) -> Any:
    streams = container.streams.video
    if not streams:
        kinds = sorted({s.type for s in container.streams})
        held = f" ({', '.join(kinds)} only)" if kinds else ""
        raise DataError(f"{name} has no video stream{held}")
    if streams[0].codec_context is None:  # a header cut short, or a codec FFmpeg lacks
        raise DataError(f"{name} cannot be decoded as a video: its video stream names no codec "
                        "FFmpeg has (truncated, or an unknown codec)")
    return streams[0]


def _extent(av: Any, container: Any, stream: Any, name: str,
            seekable: bool) -> tuple[tuple, int, int, bool]:
    """``(the first packet's key, first frame's pts, last frame's end, whether the stream
    is one frame of a GIF)`` from the packets (demuxed, not decoded): the first one, and
    those from the last keyframe (:func:`_tail`); the header's duration may be wrong
    (FFmpeg's MP4 of a variable frame rate). A header promising clearly more than the
    packets hold: a truncated file."""
    first = next((p for p in container.demux(stream) if p.size), None)
    if first is None:
        raise DataError(f"{name} has no video frames")
    start = first.pts if first.pts is not None else (stream.start_time or 0)
    key = packet_key(first)
    step, promised = _frame_step(stream), _header_end(container, stream, start)
    tail = _tail(av, container, stream, promised, start, step) if seekable else None
    if tail is None:  # no seek (or past the end, or not sought mid-file): from the start
        low = min(t for t in (first.pts, first.dts, start) if t is not None)
        container.seek(low, stream=stream)
        tail = _scan(container.demux(stream), step, None if seekable else MAX_DECODED, name)
    end = max(tail.end if tail.end is not None else start + 1, start + 1)
    if promised is not None and promised - end > max(2 * step, (promised - start) // 10):
        tb = stream.time_base
        raise DataError(f"{name} is truncated: its header promises {float((promised - start) * tb):.2f} s "
                        f"of video, its frames end at {float((end - start) * tb):.2f} s")
    still = container.format.name == "gif" and tail.count == 1 and tail.first_ts == start
    return key, start, int(end), still


def _tail(av: Any, container: Any, stream: Any, promised: int | None, start: int,
          step: int) -> Scan | None:
    """:func:`_scan` of the packets from a seek near the end that lands on a keyframe: no
    packet before it shows after the packets following it. A demuxer seeking by decoding
    time (MPEG-TS) may land on another packet; the seek is then retried 1 s, 2 s, 4 s …
    before where it landed. None when the seek fails or finds nothing."""
    at, back = (promised if promised is not None else 1 << 62), max(1, round(1 / stream.time_base))
    while True:
        try:
            container.seek(at, stream=stream)
            scan = _scan(container.demux(stream), step)
        except av.error.FFmpegError:
            return None
        if not scan.count:
            return None
        if scan.first_key or at <= start:
            return scan
        landed = scan.first_ts if scan.first_ts is not None else at
        at, back = min(at, landed) - back, back * 2


class Scan(NamedTuple):
    """What :func:`_scan` keeps of a run of packets."""

    end: int | None      # the largest frame end (pts + duration)
    count: int           # packets
    first_ts: int | None  # the first packet's pts (its dts without one)
    first_key: bool      # whether the first packet is a keyframe


def _scan(packets: Any, step: int, limit: int | None = None, name: str = "") -> Scan:
    """:class:`Scan` of ``packets`` (a packet without pts counts by its dts), keeping
    nothing else; :class:`TooLarge` past ``limit`` packets."""
    end, count, first_ts, first_key = None, 0, None, False
    for p in packets:
        if not p.size:
            continue
        ts = p.pts if p.pts is not None else p.dts
        if not count:
            first_ts, first_key = ts, bool(p.is_keyframe)
        count += 1
        if ts is not None:
            stop = ts + (p.duration or step)
            end = stop if end is None else max(end, stop)
        if limit is not None and count > limit:
            raise TooLarge(f"{name} is MPEG-PS, decoded from its start (its timestamps after a "
                           f"seek are not exact): more than {limit} frames are not read")
    return Scan(end, count, first_ts, first_key)


def _header_end(container: Any, stream: Any, start: int) -> int | None:
    """The end of the video the header promises, in the stream's time_base: the stream's
    duration, else the file's when the video is its only stream (else None)."""
    if stream.duration:
        return start + stream.duration
    if container.duration and len(container.streams) == 1:
        return start + int(Fraction(container.duration, 1_000_000) / stream.time_base)
    return None


def _frame_step(stream: Any) -> int:
    """A frame's duration in time_base units, from the stream's guessed rate (1 if unknown)."""
    rate = stream.guessed_rate or stream.average_rate
    return max(1, round(1 / (rate * stream.time_base))) if rate else 1


def _targets(start: int, end: int, tb: Fraction, frames: int, sampling: str, fps: float | None,
             rng: np.random.Generator | None, max_frames: int) -> tuple[list[int], list[str]]:
    """The target times (pts, ascending) and the notes on them."""
    span, notes = (end - start) * tb, []
    if fps is not None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, not {fps}")
        count = max(1, int(span * Fraction(fps).limit_denominator(10**6)))
        if count > max_frames:
            notes.append(f"{float(span):.1f} s at {fps:g} fps is {count} frames: only the first "
                         f"{max_frames} ({max_frames / fps:.1f} s) are read")
            count = max_frames
        offsets = [(k + 0.5) / fps for k in range(count)]
    else:
        width = float(span) / frames
        if sampling == "random":
            rng = rng if rng is not None else np.random.default_rng()
            offsets = [(k + u) * width for k, u in enumerate(rng.random(frames))]
        else:
            offsets = [(k + 0.5) * width for k in range(frames)]
    return [start + int(Fraction(o).limit_denominator(10**9) / tb) for o in offsets], notes


def _assemble(picked: list[Any], start: int, end: int, tb: Fraction, max_pixels: int | None,
              name: str, notes: list[str]) -> Clip:
    """The picked frames (repeats share one conversion) → a :class:`Clip`."""
    converted: dict[int, np.ndarray] = {}
    size = None
    for frame in picked:
        if frame.pts in converted:
            continue
        check_size(frame.width, frame.height, max_pixels, name)
        size = size or (frame.width, frame.height)
        if (frame.width, frame.height) != size and "size changes" not in " ".join(notes):
            notes.append(f"frame size changes from {size[0]}×{size[1]}; frames are scaled to it")
        converted[frame.pts] = _upright(frame, size, notes)
    repeats = len(picked) - len(converted)
    if repeats:
        notes.append(f"{repeats} of {len(picked)} sampled frames repeat the frame before them "
                     f"(fewer frames than samples there; {len(converted)} distinct frames)")
    stack = np.stack([converted[f.pts] for f in picked])
    times = np.array([float((f.pts - start) * tb) for f in picked], np.float64)
    height, width = stack.shape[1:3]
    return Clip(stack, times, float((end - start) * tb), (width, height), tuple(notes))


def _upright(frame: Any, size: tuple[int, int], notes: list[str]) -> np.ndarray:
    """One decoded frame → RGB uint8 at ``size`` (before rotation), turned upright; pixels
    with transparency (GIF) composited onto white."""
    width, height = size
    # a size only when it differs: naming one makes the conversion ~100× slower (a scaler
    # set up per frame), with the same pixels
    scale = {} if (frame.width, frame.height) == (width, height) else {"width": width, "height": height}
    if frame.format.name in ("bgra", "rgba", "argb", "abgr", "pal8"):
        rgba = frame.to_ndarray(format="rgba", **scale).astype(np.uint16)
        alpha = rgba[..., 3:]
        rgb = ((rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    else:
        rgb = frame.to_ndarray(format="rgb24", **scale)
    rotation = frame.rotation or 0
    turns = round(rotation / 90)
    if rotation != turns * 90 and not any(n.startswith("rotation") for n in notes):
        notes.append(f"rotation of {rotation}° rounded to {turns * 90}°")
    return np.ascontiguousarray(np.rot90(rgb, turns % 4)) if turns % 4 else rgb


def check_video(path: Any) -> ItemCheck:
    """The check of every video file (training, indexing, queries): the decoding
    :func:`read_clip` does with its defaults; its notes, naming the file."""
    try:
        clip = read_clip(path, where=str(path))
    except DataError as e:
        return ItemCheck(str(e))
    return ItemCheck(None, tuple(f"{note}: {path}" for note in clip.notes))
