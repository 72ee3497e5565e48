"""A sound for every shapes scene, synthesised with NumPy (the audio of the built-in data).

Each shape of a scene plays one note; what the caption says is what the note
carries, so image–text, audio–image and audio–text pairs all exist:

* **pitch** from the colour: eight fundamentals a minor third apart, from
  220 Hz (red) up to 740 Hz (white) (:data:`PITCHES`);
* **timbre** from the kind: a sine (circle), odd harmonics falling as 1/n
  (square) or 1/n² (triangle), an organ-like set (diamond), all harmonics as
  1/n (star), inharmonic bell partials (hexagon) (:data:`TIMBRES`);
* **loudness** from the size (:data:`LOUDNESS`);
* **onset** from the horizontal position (left starts early, right late) and
  **duration** from the vertical one (top short, bottom long);
* the **background** as a bed of noise: none (black), white noise (grey),
  brown noise (brown).

The main shape is the loudest note; secondary shapes are small, so quieter.
Every clip is :data:`CLIP_SECONDS` long at 16 kHz, mono, written as 16-bit
PCM WAV. Small random detuning, level and phase make each clip unique; the
randomness depends only on (seed, split, index), not on the captions' draws.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..modalities.audio_io import SAMPLE_RATE
from .scenes import Scene, Shape

CLIP_SECONDS = 1.0
PITCHES = {colour: 220.0 * 2 ** (3 * k / 12) for k, colour in enumerate(
    ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "white"))}
#: (frequency ratio, amplitude) of each partial, per shape kind
TIMBRES = {
    "circle": ((1.0, 1.0),),
    "square": tuple((float(n), 1.0 / n) for n in range(1, 16, 2)),
    "triangle": tuple((float(n), 1.0 / n ** 2) for n in range(1, 16, 2)),
    "diamond": ((1.0, 1.0), (2.0, 0.8), (4.0, 0.6), (8.0, 0.3)),
    "star": tuple((float(n), 1.0 / n) for n in range(1, 16)),
    "hexagon": ((1.0, 1.0), (2.76, 0.6), (5.40, 0.4), (8.93, 0.25)),
}
LOUDNESS = {"small": 0.12, "medium": 0.26, "large": 0.45}  # peak amplitude of a note
NOISE_RMS = {"black": 0.0, "grey": 0.02, "brown": 0.04}
ATTACK, RELEASE = 0.01, 0.04  # seconds


def _note(shape: Shape, rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    onset = 0.02 + 0.30 * shape.x
    duration = 0.30 + 0.45 * shape.y
    f0 = PITCHES[shape.colour] * (1 + rng.uniform(-0.01, 0.01))
    tone = np.zeros(n)
    for ratio, amp in TIMBRES[shape.kind]:
        if f0 * ratio < SAMPLE_RATE / 2 * 0.95:  # keep partials below Nyquist (no aliasing)
            tone += amp * np.sin(2 * np.pi * f0 * ratio * t + rng.uniform(0, 2 * np.pi))
    tone /= np.abs(tone).max() or 1.0
    local = t - onset
    envelope = np.clip(np.minimum(local / ATTACK, (duration - local) / RELEASE), 0.0, 1.0)
    return LOUDNESS[shape.size] * rng.uniform(0.9, 1.1) * envelope * tone


def _noise(background: str, rng: np.random.Generator, n: int) -> np.ndarray:
    rms = NOISE_RMS[background]
    if rms == 0:
        return np.zeros(n)
    noise = rng.standard_normal(n)
    if background == "brown":  # integrated white noise, its drift removed
        noise = np.cumsum(noise)
        noise -= np.linspace(noise[0], noise[-1], n)
    return noise * rms / (noise.std() or 1.0)


def synthesise(scene: Scene, seed: str, seconds: float = CLIP_SECONDS) -> np.ndarray:
    """The scene's sound: float32 mono samples at 16 kHz, peak below 1.
    ``seed`` names the clip's randomness (e.g. ``"0/train/17"``)."""
    rng = np.random.default_rng(int(hashlib.sha256(f"{seed}/audio".encode()).hexdigest()[:16], 16))
    n = round(seconds * SAMPLE_RATE)
    wave = _noise(scene.background, rng, n)
    for shape in scene.shapes:
        wave += _note(shape, rng, n)
    peak = np.abs(wave).max()
    if peak > 0.98:  # rare: three loud notes at once; scale rather than clip
        wave *= 0.98 / peak
    return wave.astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float samples in [-1, 1] as 16-bit PCM WAV."""
    import soundfile

    path = Path(path)
    soundfile.write(str(path), samples, sample_rate, subtype="PCM_16")
    return path
