"""Test clips written with PyAV whose frames say which frame they are, and the reference
the reader is checked against: a plain PyAV loop that decodes every frame.

Frame ``i`` carries ``i`` in :data:`BITS` black/white vertical bars across its top half
(the most significant bit on the left) over a background whose colour also follows
``i``: the bars survive lossy coding at any size used here, so :func:`frame_number`
reads back which frame a decoded picture is.
"""
from __future__ import annotations

import io
import struct
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import av
import numpy as np

BITS = 8


def numbered_frame(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """An RGB picture showing the number ``i`` (0 … 255) as bars, with a marker in its top-left
    corner (red) so that a rotation can be seen."""
    a = np.empty((height, width, 3), np.uint8)
    a[...] = ((i * 37) % 200 + 30, (i * 91) % 200 + 30, 128)
    bar = width // BITS
    for b in range(BITS):
        on = (i >> (BITS - 1 - b)) & 1
        a[: height // 2, b * bar:(b + 1) * bar] = 235 if on else 20
    a[height // 2:height // 2 + max(2, height // 8), : max(2, width // 8)] = (250, 0, 0)
    return a


def frame_number(rgb: np.ndarray) -> int:
    """The number :func:`numbered_frame` drew into an (upright, decoded) picture."""
    height, width = rgb.shape[:2]
    bar = width // BITS
    value = 0
    for b in range(BITS):
        patch = rgb[height // 8: height // 2 - height // 8, b * bar + bar // 4:(b + 1) * bar - bar // 4]
        value = value * 2 + int(patch.mean() > 128)
    return value


def write_clip(path: Path | io.BytesIO, *, codec: str = "libx264", n: int = 30, rate: int = 10,
               width: int = 64, height: int = 48, pix_fmt: str = "yuv420p", fmt: str | None = None,
               pts_ms: Sequence[int] | None = None, rotation: int | None = None,
               options: dict | None = None, audio: bool = False) -> Path | io.BytesIO:
    """Frames 0 … n-1 of :func:`numbered_frame` at ``rate`` fps, or at the presentation times
    ``pts_ms`` (milliseconds: a variable frame rate). ``rotation``: the display matrix PyAV
    writes (counter-clockwise degrees). ``audio``: a silent AAC track too."""
    out = av.open(path, "w", format=fmt)
    stream = out.add_stream(codec, rate=rate, options=options or {})
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    if pts_ms is not None:
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.time_base = Fraction(1, 1000)
    if rotation is not None:
        stream.set_display_rotation(rotation)
    sound = out.add_stream("aac", rate=16000) if audio else None
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(numbered_frame(i, width, height), format="rgb24")
        if pts_ms is not None:
            frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    if sound is not None:
        _silence(out, sound, seconds=n / rate)
    out.close()
    return path


def _silence(out: av.container.OutputContainer, sound: av.stream.Stream, seconds: float) -> None:
    samples = np.zeros((1, 1024), np.float32)
    for k in range(int(seconds * 16000 / 1024) + 1):
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, k * 1024
        for packet in sound.encode(frame):
            out.mux(packet)
    for packet in sound.encode():
        out.mux(packet)


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An MP4 file holding only an AAC track."""
    out = av.open(str(path), "w")
    sound = out.add_stream("aac", rate=16000)
    _silence(out, sound, seconds)
    out.close()
    return path


def write_no_frames(path: Path) -> Path:
    """A file (AVI: an MP4 muxer drops an empty track) with a video stream and no frame."""
    out = av.open(str(path), "w")
    stream = out.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    out.start_encoding()  # the header, with no packet after it
    out.close()
    return path


def full_decode(source: Path | bytes) -> list[tuple[float, np.ndarray, int]]:
    """The reference: every frame of the first video stream, decoded in order by a plain
    PyAV loop, as ``(pts × time_base in seconds, RGB array, display rotation)`` (metadata
    that is not UTF-8 read with replacement characters)."""
    data = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    with av.open(data, metadata_errors="replace") as container:
        stream = container.streams.video[0]
        return [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24"), f.rotation)
                for f in container.decode(stream)]


def reference_at(frames: Iterable[tuple[float, np.ndarray, int]], t: float) -> tuple[float, np.ndarray]:
    """The frame of a full decode with presentation time ``t`` (exactly: the reader returns
    decoded frames' own timestamps)."""
    found = [(s, rgb) for s, rgb, _ in frames if abs(s - t) < 1e-9]
    assert len(found) == 1, f"no frame at {t} s in the full decode"
    return found[0]


def on_screen(frames: Sequence[tuple[float, np.ndarray, int]], t: float) -> float:
    """The presentation time of the frame on screen at ``t``: the last one starting at or
    before it (the first frame before the first start)."""
    starts = [s for s, _, _ in frames]
    before = [s for s in starts if s <= t + 1e-9]
    return max(before) if before else min(starts)


def set_mp4_rotation(path: Path, a: int, b: int, c: int, d: int) -> None:
    """Write the 2×2 part ``(a b; c d)`` of the video track header's (``tkhd``) matrix in
    place, as a camera does (QuickTime's matrix maps a row vector: x' = a·x + c·y,
    y' = b·x + d·y; a phone held upright writes 0 1 -1 0, a quarter turn clockwise)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    assert at > 0, "no track header"
    version = data[at + 4]
    matrix = at + 4 + 4 + (32 if version == 1 else 20) + 16
    values = struct.unpack(">9i", data[matrix:matrix + 36])
    fixed = [a << 16, b << 16, values[2], c << 16, d << 16, *values[5:]]
    data[matrix:matrix + 36] = struct.pack(">9i", *fixed)
    path.write_bytes(bytes(data))


def write_blank(path: Path, width: int, height: int, frames: int = 1) -> Path:
    """Black MPEG-4 frames of any size, fast to write (an 8K one takes ~0.7 s)."""
    out = av.open(str(path), "w")
    stream = out.add_stream("mpeg4", rate=1)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for _ in range(frames):
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def write_latin1_title(path: Path, title: str = "café au lait", n: int = 5) -> Path:
    """A clip whose container and stream titles are Latin-1 bytes (``é`` is 0xE9, not
    UTF-8), as an old tagger writes them."""
    out = av.open(str(path), "w", metadata_encoding="latin-1")
    out.metadata["title"] = title
    stream = out.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    stream.metadata["title"] = title
    for i in range(n):
        for packet in stream.encode(av.VideoFrame.from_ndarray(numbered_frame(i), format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    assert title.encode("latin-1") in path.read_bytes()
    return path


def write_sizes(path: Path, sizes: Sequence[tuple[int, int]], rate: int = 10) -> Path:
    """One MPEG-4 stream whose frame ``i`` is ``sizes[i]`` (width, height): each run of one
    size comes from its own encoder (starting with a keyframe), muxed into the stream the
    header declares at the first size — a stream that changes size mid-way."""
    out = av.open(str(path), "w")
    stream = out.add_stream("mpeg4", rate=rate)
    stream.width, stream.height, stream.pix_fmt = *sizes[0], "yuv420p"
    i = 0
    while i < len(sizes):
        j = i
        while j < len(sizes) and sizes[j] == sizes[i]:
            j += 1
        encoder = av.CodecContext.create("mpeg4", "w")
        encoder.width, encoder.height, encoder.pix_fmt = *sizes[i], "yuv420p"
        encoder.time_base = Fraction(1, rate)
        for k in range(i, j):
            frame = av.VideoFrame.from_ndarray(numbered_frame(k, *sizes[i]), format="rgb24")
            frame.pts = k
            for packet in [*encoder.encode(frame), *(encoder.encode(None) if k == j - 1 else [])]:
                packet.stream = stream
                out.mux(packet)
        i = j
    out.close()
    return path


def count_cursors(monkeypatch) -> list:
    """Every decoding cursor the video reader opens from now on, in order (their ``decoded``
    packets and ``pixels`` say what a read cost)."""
    from jointspace.modalities import video_io

    opened = []

    class Counting(video_io.Cursor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(video_io, "Cursor", Counting)
    return opened
