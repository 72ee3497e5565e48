"""Reading audio files: 16 kHz mono float32, and what the manifest reader checks.

Policy (the same for training, evaluation and queries):

* **Formats**: whatever libsndfile reads (WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF …)
  through ``soundfile``; samples arrive as float32 in [-1, 1]. A folder being indexed
  takes the endings in :data:`AUDIO_SUFFIXES` as audio (the tests decode a file of each).
* **Length**: at most ``max_seconds`` (:data:`MAX_SECONDS`, 10 s) is read
  from the start of a file; a longer file is truncated to its first
  10 s and a note says so. Only those frames are decoded, so an hour-long
  file costs what 10 s does. A tower then uses the first ``clip_seconds`` of
  what was read and pads shorter clips with silence.
* **Channels**: any number of channels is averaged to mono (note).
* **Sample rate**: from :data:`MIN_RATE` to :data:`MAX_RATE` (1,000 … 384,000 Hz);
  a header claiming another rate is an error. Anything but 16 kHz is resampled
  with a polyphase anti-aliasing filter (``scipy.signal.resample_poly``) (note),
  whose cost is bounded by the samples, never by the rate's digits: the filter
  has ``20 × max(up, down)`` taps for the ratio ``up/down`` = 16,000/rate, so a
  ratio whose terms exceed :data:`MAX_RATIO_TERM` (44,101 Hz is 16,000/44,101;
  no common rate needs it) is replaced by the nearest fraction with terms up to
  it — a pitch change below 0.013 % (below 6e-7 for half such rates) — and the
  output keeps the exact length. Common rates (8, 11.025, 22.05, 32, 44.1, 48,
  96, 192 kHz …) are resampled exactly, as before. The file is read in blocks and
  downmixed block by block, so memory follows the samples the file holds, not
  its header's frame count or channel count.
* **Clipping**: values beyond ±1 (float files) are clipped to ±1; a file with
  at least 0.1 % of its samples at full scale is kept, with a note.
* **Errors** (:class:`~jointspace.errors.DataError`, naming the file): a
  missing file, one libsndfile cannot decode, an empty one (0 samples), or
  NaN/infinite samples.
* **Silence** (peak below −80 dBFS) decodes fine, but :func:`check_audio` refuses
  it: a silent clip carries nothing to align or to search by. The manifest reader
  quarantines it, and a query file is refused (CLI, Python and HTTP alike).

:func:`check_audio` is the check of every audio file, read from a manifest, a folder
or a query; notes go to the reader's log, summarised by kind, not once per row.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from math import ceil, gcd
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import DataError
from .base import ItemCheck

SAMPLE_RATE = 16000
MAX_SECONDS = 10.0
SILENCE_PEAK = 1e-4   # −80 dBFS
CLIP_LEVEL = 0.999
CLIP_FRACTION = 0.001
MIN_RATE, MAX_RATE = 1_000, 384_000  # sample rates read (Hz); others are an error
MAX_RATIO_TERM = 4096  # largest up or down of the resampling ratio (filter: 20× taps)
BLOCK_VALUES = 1 << 20  # samples (frames × channels) read at a time


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
            if not MIN_RATE <= rate <= MAX_RATE:
                raise DataError(f"audio file has a sample rate of {rate} Hz; rates from "
                                f"{MIN_RATE} to {MAX_RATE} Hz are read: {path}")
            keep = int(round(max_seconds * rate))
            wave = _read_mono(f, min(total, keep) if total > 0 else keep, path)
    except DataError:
        raise
    except Exception as e:  # libsndfile raises LibsndfileError, RuntimeError, EOFError …
        reason = re.sub(r"<_io\.\w+ object at 0x[0-9a-f]+>", "the data", str(e))  # no repr of bytes
        raise DataError(f"audio file cannot be decoded ({type(e).__name__}: {reason}): {path}") from None
    if wave.size == 0:
        raise DataError(f"audio file is empty (0 samples): {path}")
    if total > keep:
        notes.append(f"truncated: {total / rate:.1f} s long, only the first {max_seconds:g} s are used")
    if channels > 1:
        notes.append(f"downmixed {channels} channels to mono")
    if rate != SAMPLE_RATE:
        wave = resample(wave, rate)
        notes.append(f"resampled from {rate} Hz to {SAMPLE_RATE} Hz")
    full_scale = float(np.mean(np.abs(wave) >= CLIP_LEVEL))
    if full_scale >= CLIP_FRACTION:
        notes.append(f"clipped: {100 * full_scale:.1f}% of samples at full scale")
    wave = np.clip(wave, -1.0, 1.0).astype(np.float32, copy=False)
    return DecodedAudio(np.ascontiguousarray(wave), tuple(notes))


def _read_mono(f: Any, frames: int, path: Any) -> np.ndarray:
    """Up to ``frames`` frames of an open ``soundfile.SoundFile``, averaged to mono float32,
    read in blocks of at most :data:`BLOCK_VALUES` samples: memory follows what the file
    holds, not the frame or channel count its header claims."""
    block = max(1, BLOCK_VALUES // f.channels)
    # one array, filled block by block (not blocks then their concatenation: twice the clip).
    # ``frames`` is at most max_seconds × MAX_RATE, whatever the header claims, and the
    # pages of the array no block reaches are never touched, so never resident
    out = np.empty(max(frames, 0), np.float32)
    done = 0
    while done < frames:
        data = f.read(frames=min(block, frames - done), dtype="float32", always_2d=True)
        if not len(data):
            break
        if not np.isfinite(data).all():
            raise DataError(f"audio file has NaN or infinite samples: {path}")
        out[done:done + len(data)] = data.mean(axis=1) if f.channels > 1 else data[:, 0]
        done += len(data)
    return out if done == len(out) else out[:done].copy()


def resampling_ratio(rate: int, target: int = SAMPLE_RATE) -> tuple[int, int]:
    """``(up, down)`` with ``up / down`` = ``target / rate``, or, when that fraction's terms
    exceed :data:`MAX_RATIO_TERM`, the nearest fraction whose terms do not.

    >>> resampling_ratio(44100), resampling_ratio(48000), resampling_ratio(44101)
    ((160, 441), (1, 3), (792, 2183))
    """
    g = gcd(rate, target)
    up, down = target // g, rate // g
    if max(up, down) <= MAX_RATIO_TERM:
        return up, down
    # bound the larger term: the denominator when downsampling, the numerator when upsampling
    if rate >= target:
        f = Fraction(target, rate).limit_denominator(MAX_RATIO_TERM)
        return max(f.numerator, 1), f.denominator
    f = Fraction(rate, target).limit_denominator(MAX_RATIO_TERM)
    return f.denominator, max(f.numerator, 1)


def resample(wave: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """``wave`` at ``rate`` Hz → float32 at ``target`` Hz, ``ceil(len × target / rate)``
    samples long. Polyphase filtering (``resample_poly``, a Kaiser-windowed FIR of
    ``20 × max(up, down)`` taps) at :func:`resampling_ratio`: about ``20 × rate / target``
    multiply-adds per output sample, whatever the rate's digits."""
    from scipy.signal import resample_poly

    up, down = resampling_ratio(rate, target)
    out = resample_poly(wave, up, down).astype(np.float32)
    length = ceil(len(wave) * target / rate)
    if len(out) != length:  # an approximated ratio: the exact length, its end trimmed or padded
        out = np.pad(out[:length], (0, max(0, length - len(out))))
    return out


def check_audio(path: Any) -> ItemCheck:
    """The check of every audio file (training, indexing, queries): the decoding training
    uses, plus the silence rule."""
    try:
        decoded = decode_audio(path)
    except DataError as e:
        return ItemCheck(str(e))
    if float(np.abs(decoded.samples).max()) < SILENCE_PEAK:
        return ItemCheck(f"audio is silent (peak below -80 dBFS): {path}")
    return ItemCheck(None, tuple(f"{note}: {path}" for note in decoded.notes))


def samples_problem(samples: Any) -> str | None:
    """Why an array of samples (NumPy or torch) given as a query cannot be used, or None:
    the silence rule of :func:`check_audio` (an empty array is refused too)."""
    if hasattr(samples, "detach"):  # a torch tensor, on any device
        samples = samples.detach().float().cpu().numpy()
    samples = np.asarray(samples)
    if samples.size == 0:
        return "audio samples are empty (0 samples)"
    if not np.issubdtype(samples.dtype, np.number):
        return None  # the tower names what it takes
    peak = float(np.nanmax(np.abs(samples))) if not np.isnan(samples).all() else 0.0
    if peak < SILENCE_PEAK:
        return "audio is silent (peak below -80 dBFS)"
    return None


#: the file name endings of audio in a folder being indexed: formats :func:`decode_audio`
#: reads (libsndfile's), each tested (tests/data/test_audio_files.py)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc")
