"""The files a query carries: base64 or raw bytes → a PIL image or an audio file, within limits.

Every failure is an ``HTTPException`` naming the field: 400 for data that is not
what it claims to be, 413 for data over the limits (bytes, or an image's pixels:
a small PNG can hold a picture that takes gigabytes to decode).
"""
from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

from fastapi import HTTPException
from PIL import Image, ImageOps


#: the first bytes of the formats an upload may be without naming its modality
MAGIC: tuple[tuple[int, bytes, str], ...] = (  # (offset, bytes, modality)
    (0, b"\x89PNG\r\n\x1a\n", "image"), (0, b"\xff\xd8\xff", "image"), (0, b"GIF87a", "image"),
    (0, b"GIF89a", "image"), (8, b"WEBP", "image"), (0, b"BM", "image"), (0, b"II*\x00", "image"),
    (0, b"MM\x00*", "image"),
    (8, b"WAVE", "audio"), (0, b"fLaC", "audio"), (0, b"OggS", "audio"), (0, b"ID3", "audio"),
    (8, b"AIFF", "audio"), (8, b"AIFC", "audio"))


def sniff(data: bytes) -> str | None:
    r"""``"image"`` or ``"audio"`` from a file's first bytes (PNG, JPEG, GIF, WebP, BMP,
    TIFF; WAV, FLAC, OGG, MP3, AIFF), or None.

    >>> sniff(b"RIFF\x24\x00\x00\x00WAVEfmt "), sniff(b"\x89PNG\r\n\x1a\n..."), sniff(b"%PDF")
    ('audio', 'image', None)
    """
    if data[:4] == b"RIFF" and data[8:12] not in (b"WAVE", b"WEBP"):
        return None  # another RIFF (AVI …)
    for offset, magic, modality in MAGIC:
        if data[offset:offset + len(magic)] == magic:
            return modality
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:  # an MPEG audio frame (MP3
        return "audio"                                                 # without an ID3 tag)
    return None


class Uploads:
    """Decodes uploads of at most ``max_bytes`` and images of at most ``max_pixels``."""

    def __init__(self, max_bytes: int, max_pixels: int) -> None:
        self.max_bytes, self.max_pixels = max_bytes, max_pixels

    def check_size(self, field: str, size: int) -> None:
        if size > self.max_bytes:
            raise HTTPException(413, f"{field} is larger than {self.max_bytes} bytes")

    def decode(self, field: str, value: str) -> bytes:
        """The bytes of a base64 string or a ``data:`` URL (as a browser's FileReader makes)."""
        if value.startswith("data:") and "," in value:
            value = value.split(",", 1)[1]
        self.check_size(field, len(value) * 3 // 4 - 2)  # before decoding anything
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(400, f"{field} is not valid base64") from None
        self.check_size(field, len(data))
        if not data:
            raise HTTPException(400, f"{field} is empty")
        return data

    def image(self, field: str, data: bytes) -> Image.Image:
        """An RGB image (EXIF rotation applied) from the bytes of an image file."""
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size  # read from the header: nothing decoded yet
                if w * h > self.max_pixels:
                    raise HTTPException(413, f"{field} is {w}×{h} pixels; at most {self.max_pixels} "
                                             "pixels are accepted (send a smaller image)")
                im.load()
                return ImageOps.exif_transpose(im).convert("RGB")
        except HTTPException:
            raise
        except Exception as e:  # PIL raises many types for bad data
            raise HTTPException(400, f"{field} is not a decodable image ({type(e).__name__})") from None

    def audio(self, field: str, data: bytes, folder: Path) -> Path:
        """An audio file in ``folder`` (a temporary one) holding ``data``, checked as every
        audio query is (:func:`~jointspace.index.query.file_problem`: a silent clip too)."""
        from ..index.query import file_problem

        path = folder / f"{field.replace(' ', '-')}.audio"  # soundfile reads the format from the bytes
        path.write_bytes(data)
        problem = file_problem("audio", path)
        if problem:
            raise HTTPException(400, f"{field} is not usable audio: "
                                     f"{problem.replace(str(path), 'the upload')}")
        return path


__all__ = ["MAGIC", "Uploads", "sniff"]
