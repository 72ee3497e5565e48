"""Reading audio files: 16 kHz mono float32, and what the manifest reader checks.

Policy (the same for training, evaluation and queries):

* **Formats**: whatever libsndfile reads (WAV, FLAC, OGG/Vorbis, AIFF …) through
  ``soundfile``; samples arrive as float32 in [-1, 1].
* **Length**: at most ``max_seconds`` (:data:`MAX_SECONDS`, 10 s) is read
  from the start of a file; a longer file is truncated to its first
  10 s and a note says so. Only those frames are decoded, so an hour-long
  file costs what 10 s does. A tower then uses the first ``clip_seconds`` of
  what was read and pads shorter clips with silence.
* **Channels**: any number of channels is averaged to mono (note).
* **Sample rate**: anything but 16 kHz is resampled with a polyphase
  anti-aliasing filter (``scipy.signal.resample_poly``) (note).
* **Clipping**: values beyond ±1 (float files) are clipped to ±1; a file with
  at least 0.1 % of its samples at full scale is kept, with a note.
* **Errors** (:class:`~jointspace.errors.DataError`, naming the file): a
  missing file, one libsndfile cannot decode, an empty one (0 samples), or
  NaN/infinite samples.
* **Silence** (peak below −80 dBFS) decodes fine (a query may be silent), but
  the manifest reader quarantines it: a silent clip carries nothing to align.

:func:`check_audio` is the reader's check; notes go to the reader's log, summarised
by kind, not once per row.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import DataError
from .manifest import ItemCheck

SAMPLE_RATE = 16000
MAX_SECONDS = 10.0
SILENCE_PEAK = 1e-4   # −80 dBFS
CLIP_LEVEL = 0.999
CLIP_FRACTION = 0.001


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray          # float32 [n], mono, SAMPLE_RATE, in [-1, 1]
    notes: tuple[str, ...] = ()  # what was done to make the file usable


def decode_audio(path: str | Path | BinaryIO, max_seconds: float = MAX_SECONDS,
                 name: str | None = None) -> DecodedAudio:
    """Decode the first ``max_seconds`` of an audio file (a path, or a file object such
    as a shard member's bytes, called ``name`` in messages) → 16 kHz mono float32
    (policy above)."""
    import soundfile  # lazy: the reader imports this module for every manifest
    from scipy.signal import resample_poly

    if isinstance(path, (str, Path)):
        path = Path(path)
        if not path.is_file():
            raise DataError(f"audio file not found: {path}")
        source: Any = str(path)
    else:
        source, path = path, name or "audio"
    notes = []
    try:
        with soundfile.SoundFile(source) as f:
            rate, channels, total = f.samplerate, f.channels, f.frames
            keep = int(round(max_seconds * rate))
            data = f.read(frames=min(total, keep) if total > 0 else keep, dtype="float32",
                          always_2d=True)
    except Exception as e:  # libsndfile raises LibsndfileError, RuntimeError, EOFError …
        reason = re.sub(r"<_io\.\w+ object at 0x[0-9a-f]+>", "the data", str(e))  # no repr of bytes
        raise DataError(f"audio file cannot be decoded ({type(e).__name__}: {reason}): {path}") from None
    if data.size == 0:
        raise DataError(f"audio file is empty (0 samples): {path}")
    if total > keep:
        notes.append(f"truncated: {total / rate:.1f} s long, only the first {max_seconds:g} s are used")
    if not np.isfinite(data).all():
        raise DataError(f"audio file has NaN or infinite samples: {path}")
    if channels > 1:
        notes.append(f"downmixed {channels} channels to mono")
    wave = data.mean(axis=1) if channels > 1 else data[:, 0]
    if rate != SAMPLE_RATE:
        g = gcd(rate, SAMPLE_RATE)
        wave = resample_poly(wave, SAMPLE_RATE // g, rate // g).astype(np.float32)
        notes.append(f"resampled from {rate} Hz to {SAMPLE_RATE} Hz")
    full_scale = float(np.mean(np.abs(wave) >= CLIP_LEVEL))
    if full_scale >= CLIP_FRACTION:
        notes.append(f"clipped: {100 * full_scale:.1f}% of samples at full scale")
    wave = np.clip(wave, -1.0, 1.0).astype(np.float32, copy=False)
    return DecodedAudio(np.ascontiguousarray(wave), tuple(notes))


def check_audio(path: Any) -> ItemCheck:
    """The manifest reader's check: the decoding training uses, plus the silence rule."""
    try:
        decoded = decode_audio(path)
    except DataError as e:
        return ItemCheck(str(e))
    if float(np.abs(decoded.samples).max()) < SILENCE_PEAK:
        return ItemCheck(f"audio is silent (peak below -80 dBFS): {path}")
    return ItemCheck(None, tuple(f"{note}: {path}" for note in decoded.notes))
