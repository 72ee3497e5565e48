"""The video modality: clips PyAV decodes (MP4/MOV, WebM/MKV, AVI, animated GIF), read as a
few RGB frames sampled over the clip (policy: :mod:`jointspace.modalities.video_io`);
the audio track is ignored.

GIF: the image plug-in claims ``.gif`` files and GIF uploads (it reads their first
frame), and keeps them: ``.gif`` is not among this plug-in's suffixes and its
:meth:`~VideoModality.sniff` does not claim GIF bytes, so a folder being indexed and an
upload that names no modality are read exactly as before, by one plug-in each. An
animated GIF is read as a video where it is named as one: a manifest's video column, a
``KEY.gif`` shard member (the image plug-in does not read that member), an upload sent
as this modality. A one-frame GIF read as a video is refused: it is a still image.
"""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

from ..extras import require
from .base import MODALITIES, ItemCheck, Modality, Preview
from .video_io import DEFAULT_FRAMES, MAX_BYTES, Clip, check_video, read_clip

#: ISO base media (``ftyp``) brands of files that hold no video: audio (M4A …) and
#: still-image formats (HEIF/HEIC, AVIF) built on the same box structure
NOT_VIDEO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B ", b"heic", b"heix", b"heim",
                    b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
#: top-level boxes a QuickTime file written without ``ftyp`` starts with
QUICKTIME_BOXES = (b"moov", b"wide", b"mdat")
MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
        ".avi": "video/x-msvideo", ".mkv": "video/x-matroska", ".gif": "image/gif"}


def is_video_head(head: bytes) -> bool:
    """Whether a file's first bytes start an MP4/MOV (an ``ftyp`` box of a video brand, or
    a QuickTime box), a Matroska/WebM (EBML magic) or an AVI (``RIFF…AVI ``) file."""
    if head[4:8] == b"ftyp":
        return len(head) >= 12 and head[8:12] not in NOT_VIDEO_BRANDS
    if head[4:8] in QUICKTIME_BOXES:  # a box size: 0 (to the end), 1 (64-bit) or at least 8
        return not 2 <= int.from_bytes(head[:4], "big") < 8
    return head[:4] == b"\x1a\x45\xdf\xa3" or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


class VideoModality(Modality):
    """Video clips → :class:`~jointspace.modalities.video_io.Clip` (frames sampled uniformly
    over the clip; towers take its ``frames``)."""

    name = "video"
    is_file = True
    suffixes = (".mp4", ".m4v", ".mov", ".webm", ".avi", ".mkv")
    shard_keys = ("mp4", "webm", "avi", "mkv", "gif", "mov")
    default_tower = "video_frames"
    preview_kind = "image"  # the poster frame: a grid card's or a report's picture
    player_kind = "video"  # the detail view plays the file
    mime_types = MIME
    uploadable = True

    def check(self, path: Any) -> ItemCheck:
        return check_video(path)

    def decode(self, source: str | Path | bytes, *, where: str = "", max_pixels: int | None = None,
               frames: int = DEFAULT_FRAMES, max_bytes: int = MAX_BYTES) -> Clip:
        """A path or a video file's bytes → ``frames`` frames sampled uniformly (segment
        midpoints), upright RGB; :class:`TooLarge` above 8K, ``max_pixels`` or ``max_bytes``.
        A clip decoded from bytes keeps them and these bounds (``Clip.data``): a tower
        sampling other frames (another number, random ones while training) reads them again
        within the same bounds, and so embeds an upload or a shard member exactly as the
        same file on disk."""
        clip = read_clip(source, frames=frames, where=where, max_pixels=max_pixels, max_bytes=max_bytes)
        if not isinstance(source, bytes):
            return clip
        return dataclasses.replace(clip, data=source, max_pixels=max_pixels, max_bytes=max_bytes)

    def sniff(self, head: bytes) -> bool:
        return is_video_head(head)

    def preview(self, path: str | Path, *, max_px: int = 256) -> Preview:
        """The poster frame: the middle of the clip, a JPEG at most ``max_px`` a side (a
        page shows it as an image; :meth:`player` gives the file for a player)."""
        from PIL import Image

        clip = read_clip(path, frames=1, where=str(path))
        image = Image.fromarray(clip.frames[0])
        image.thumbnail((max_px, max_px))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return Preview("image", "image/jpeg", out.getvalue())


    def sample(self, folder: Path) -> Path:
        """A 0.4 s, 32×32 H.264 (else MPEG-4) MP4 of 10 frames, so that PyAV, FFmpeg's demuxer and decoder
        are loaded by it, not by the first real clip."""
        import numpy as np

        av = require("av", "video")
        path = Path(folder) / "warm-up.mp4"
        with av.open(str(path), "w") as out:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream = out.add_stream(codec, rate=25)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            for i in range(10):
                rgb = np.full((32, 32, 3), 20 * i, np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        return path


VIDEO = MODALITIES.register("video")(VideoModality())
