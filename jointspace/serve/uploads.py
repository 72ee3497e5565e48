"""The files a query carries: base64 or raw bytes → a PIL image or an audio file, within limits.

Every failure is an ``HTTPException`` naming the field: 400 for data that is not
what it claims to be, 413 for data over the limits (bytes, or an image's pixels:
a small PNG can hold a picture that takes gigabytes to decode).
"""
from __future__ import annotations

import binascii
import io
import re
from pathlib import Path

from fastapi import HTTPException
from PIL import Image, ImageOps


BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")  # what base64.b64decode(validate=True) accepts

#: the first bytes of the formats an upload may be without naming its modality
MAGIC: tuple[tuple[int, bytes, str], ...] = (  # (offset, bytes, modality)
    (0, b"\x89PNG\r\n\x1a\n", "image"), (0, b"\xff\xd8\xff", "image"), (0, b"GIF87a", "image"),
    (0, b"GIF89a", "image"), (8, b"WEBP", "image"), (0, b"BM", "image"), (0, b"II*\x00", "image"),
    (0, b"MM\x00*", "image"),
    (8, b"WAVE", "audio"), (0, b"fLaC", "audio"), (0, b"OggS", "audio"),
    (8, b"AIFF", "audio"), (8, b"AIFC", "audio"))  # MP3: mp3_start

#: MPEG audio bitrates (kbit/s) by [MPEG-1?][layer 1, 2, 3][index 1..14]
_BITRATES = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version


def mpeg_frame(data: bytes, at: int = 0) -> tuple[tuple[int, int, int], int] | None:
    """``((version, layer, sample rate), frame length in bytes)`` of the MPEG audio frame
    header at ``data[at:]``, or None if those 4 bytes are not one: the 11 sync bits, then
    no reserved version (01) or layer (00: AAC's ADTS header has it), no free (0000) or
    bad (1111) bitrate, no reserved sample rate (11) or emphasis (10)."""
    if len(data) < at + 4:
        return None
    b1, b2, b3 = data[at + 1], data[at + 2], data[at + 3]
    if data[at] != 0xFF or b1 & 0xE0 != 0xE0:
        return None
    version, layer_bits = (b1 >> 3) & 3, (b1 >> 1) & 3
    bitrate_index, rate_index, padding = b2 >> 4, (b2 >> 2) & 3, (b2 >> 1) & 1
    if version == 1 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3 or b3 & 3 == 2:
        return None
    layer = 4 - layer_bits
    bitrate = _BITRATES[(version == 3, layer)][bitrate_index - 1] * 1000
    rate = _RATES[version][rate_index]
    if layer == 1:
        length = (12 * bitrate // rate + padding) * 4
    else:
        length = (144 if version == 3 or layer == 2 else 72) * bitrate // rate + padding
    return (version, layer, rate), length


def mp3_start(data: bytes) -> bool:
    """Whether ``data`` starts as an MPEG audio file (MP3, or layer I / II): an ID3v2 tag
    (``ID3``, a major version 2–4, a syncsafe size), or a frame header followed by a second
    one of the same version, layer and rate where the first frame ends. One header alone
    is not enough: a UTF-16LE text's byte order mark (FF FE) reads as one."""
    if data[:3] == b"ID3":
        return len(data) >= 10 and data[3] in (2, 3, 4) and data[4] != 0xFF and \
            all(b < 0x80 for b in data[6:10])
    first = mpeg_frame(data)
    if first is None:
        return False
    second = mpeg_frame(data, first[1])
    return second is not None and second[0] == first[0]


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
    if mp3_start(data):
        return "audio"
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
        try:  # from the str itself: b64decode would first copy it into bytes (10 MB more)
            if not BASE64.fullmatch(value):
                raise ValueError("not base64")
            data = binascii.a2b_base64(value)
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

    def save(self, field: str, data: bytes, folder: Path) -> Path:
        """An audio file in ``folder`` (a temporary one) holding ``data``: the caller drops
        its bytes before :meth:`audio` decodes the file."""
        path = folder / f"{field.replace(' ', '-')}.audio"  # soundfile reads the format from the bytes
        path.write_bytes(data)
        return path

    def audio(self, field: str, path: Path) -> Path:
        """``path`` (from :meth:`save`), checked as every audio query is
        (:func:`~jointspace.index.query.file_problem`: a silent clip too)."""
        from ..index.query import file_problem

        problem = file_problem("audio", path)
        if problem:
            raise HTTPException(400, f"{field} is not usable audio: "
                                     f"{problem.replace(str(path), 'the upload')}")
        return path


__all__ = ["MAGIC", "Uploads", "mp3_start", "mpeg_frame", "sniff"]
