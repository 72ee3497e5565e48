"""The audio modality: files libsndfile reads, decoded to 16 kHz mono (policy:
:mod:`jointspace.modalities.audio_io`); MP3 recognised by its frame headers."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .audio_io import AUDIO_SUFFIXES, check_audio, decode_audio, samples_problem, SILENCE_PEAK
from .base import MODALITIES, ItemCheck, Modality, Preview, TooLarge
from ..errors import DataError

#: the first bytes of the audio formats an upload may be (offset, bytes); MP3: :func:`mp3_start`
MAGIC = ((8, b"WAVE"), (0, b"fLaC"), (0, b"OggS"), (8, b"AIFF"), (8, b"AIFC"))
_MIME = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg",
         ".opus": "audio/ogg", ".mp3": "audio/mpeg", ".aif": "audio/aiff", ".aiff": "audio/aiff",
         ".aifc": "audio/aiff"}
#: the largest audio file a preview hands out whole (a page plays it)
PREVIEW_BYTES = 20 * 1024 * 1024

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


class AudioModality(Modality):
    """Audio clips: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF; 16 kHz mono float32 samples,
    at most 10 s read; silent clips refused everywhere (one policy)."""

    name = "audio"
    is_file = True
    suffixes = AUDIO_SUFFIXES
    shard_keys = ("wav", "flac", "ogg")
    default_tower = "audio_conv"
    preview_kind = "audio"
    player_kind = "audio"
    mime_types = _MIME
    uploadable = True

    def check(self, path: Any) -> ItemCheck:
        return check_audio(path)

    def decode(self, source: str | Path | bytes, *, where: str = "",
               max_pixels: int | None = None) -> Any:
        """A path or an audio file's bytes → float32 samples (16 kHz mono); silent
        clips are refused. The cost follows the ≤ 10 s read, never the header's claims."""
        data = io.BytesIO(source) if isinstance(source, bytes) else source
        decoded = decode_audio(data, name=where or None)
        if float(abs(decoded.samples).max()) < SILENCE_PEAK:
            raise DataError(f"audio is silent (peak below -80 dBFS) ({where or source})")
        return decoded.samples

    def check_value(self, value: Any) -> str | None:
        if hasattr(value, "shape") or hasattr(value, "detach"):
            return samples_problem(value)
        return None

    def sniff(self, head: bytes) -> bool:
        if head[:4] == b"RIFF" and head[8:12] != b"WAVE":
            return False
        return any(head[o:o + len(m)] == m for o, m in MAGIC) or mp3_start(head)

    def preview(self, path: str | Path, *, max_px: int = 256) -> Preview:
        """The file itself, for a page's ``<audio>`` player (refused above 20 MB)."""
        path = Path(path)
        size = path.stat().st_size
        if size > PREVIEW_BYTES:
            raise TooLarge(f"{path.name} is {size} bytes; audio previews are at most {PREVIEW_BYTES}")
        return Preview("audio", _MIME.get(path.suffix.lower(), "application/octet-stream"),
                       path.read_bytes())


    def sample(self, folder: Path) -> Path:
        """A WAV file of 0.25 s of 440 Hz at 44.1 kHz, so that the decoder (soundfile) and
        the resampler (``scipy.signal``) are loaded by it, not by the first real clip."""
        import numpy as np
        import soundfile

        path, rate = Path(folder) / "warm-up.wav", 44_100
        t = np.arange(rate // 4, dtype=np.float32) / rate
        soundfile.write(path, 0.1 * np.sin(2 * np.pi * 440 * t), rate, subtype="PCM_16")
        return path


AUDIO = MODALITIES.register("audio")(AudioModality())
