"""Audio towers: a log-mel spectrogram computed in torch, a small encoder, a projection.

Files are decoded by :func:`jointspace.data.audio.decode_audio` (16 kHz mono,
at most 10 s read; resampling, downmixing and truncation as documented there).
A tower looks at the first ``clip_seconds`` of a clip and pads shorter clips
with silence, so every item of a batch has the same length.

The spectrogram (:class:`LogMel`) follows the usual definition, the one
librosa's ``melspectrogram`` + ``power_to_db`` computes (the tests check it
against librosa): a centred STFT with zero padding and a periodic Hann window,
power ``|X|²``, Slaney-style mel filters (linear below 1 kHz, logarithmic
above, each triangle normalised to unit area), then ``10·log10(max(S, 1e-10))``.
It is a fixed layer (no weights), run in float32 even under autocast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..modalities.audio_io import MAX_SECONDS, SAMPLE_RATE, decode_audio
from ..errors import ConfigError, DataError
from ..progress import logger
from .base import TOWERS, Tower
from .layers import conv_bn_relu, transformer_encoder

#: the floor of the power spectrum before the logarithm (−100 dB), so silence stays finite
POWER_FLOOR = 1e-10


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: 3 mels per 200 Hz up to 1 kHz (15 mels), then
    ``27 / ln 6.4`` mels per natural-log unit of frequency."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log_part = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) * 27.0 / math.log(6.4)
    return np.where(hz >= 1000.0, log_part, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """The inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * 200.0 / 3.0
    log_part = 1000.0 * np.exp((mel - 15.0) * math.log(6.4) / 27.0)
    return np.where(mel >= 15.0, log_part, linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> np.ndarray:
    """Triangular mel filters ``[n_mels, n_fft // 2 + 1]`` over the STFT's bins,
    centres evenly spaced in mels from ``f_min`` to ``f_max``, each with area
    ``2 / (right edge − left edge)`` in Hz (Slaney's equal-area normalisation)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ConfigError(f"mel range must satisfy 0 <= f_min < f_max <= {sample_rate / 2}, "
                          f"got {f_min}, {f_max}")
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - left) / (centre - left)
    falling = (right - bins[None]) / (right - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (right - left))


class LogMel(nn.Module):
    """Waveforms ``[B, n]`` → log-mel power in dB ``[B, n_mels, 1 + n // hop_length]``."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_fft: int = 400, hop_length: int = 160,
                 n_mels: int = 64, f_min: float = 0.0, f_max: float | None = None) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        # buffers, not parameters, and not saved: they follow from the config alone
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
                             .float(), persistent=False)
        filters = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
        self.register_buffer("filters", torch.from_numpy(filters).float(), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = torch.stft(wave.float(), self.n_fft, self.hop_length, window=self.window,
                              center=True, pad_mode="constant", return_complex=True)
            power = spec.real.square() + spec.imag.square()  # [B, bins, frames]
            mel = torch.matmul(self.filters, power)
            return 10.0 * torch.log10(mel.clamp_min(POWER_FLOOR))


def load_audio(item: Any, samples: int) -> torch.Tensor:
    """A file path, or mono float samples at 16 kHz (NumPy or torch), → float32 ``[samples]``:
    the first ``samples`` of the clip, padded with silence when shorter."""
    if isinstance(item, (str, Path)):
        decoded = decode_audio(item, max_seconds=min(MAX_SECONDS, samples / SAMPLE_RATE))
        for note in decoded.notes:  # the manifest reader already summarised these
            logger.debug("%s: %s", item, note)
        wave = torch.from_numpy(decoded.samples)
    elif isinstance(item, (np.ndarray, torch.Tensor)):
        wave = torch.as_tensor(item, dtype=torch.float32).detach().cpu()
        if wave.ndim != 1:
            raise DataError(f"audio samples must be one mono channel [n] at {SAMPLE_RATE} Hz, "
                            f"got shape {tuple(wave.shape)}")
        if not torch.isfinite(wave).all():
            raise DataError("audio samples contain NaN or infinite values")
    else:
        raise DataError(f"expected an audio file path or an array of samples, got {type(item).__name__}")
    wave = wave[:samples].clamp(-1.0, 1.0)
    if len(wave) < samples:
        wave = torch.cat([wave, wave.new_zeros(samples - len(wave))])
    return wave.contiguous()


@dataclass
class AudioConvConfig:
    #: the part of each clip the tower hears (the start; shorter clips are padded)
    clip_seconds: float = 1.0
    n_fft: int = 400        # 25 ms windows
    hop_length: int = 160   # 10 ms hops
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float = 8000.0
    widths: tuple[int, ...] = (32, 64, 128)
    layers: int = 2         # transformer layers over time after the convolutions
    heads: int = 4


@TOWERS.register("audio_conv")
class AudioConvTower(Tower):
    """Log-mel → batch norm (a learned dataset-level standardisation, so loudness
    survives) → a 3×3 convolution stack that halves frequency and time at each
    width → mean over frequency → a small transformer over the time steps
    with learned positions (when a sound starts matters) → mean over time →
    layer norm → projection."""

    modality = "audio"
    Config = AudioConvConfig

    def __init__(self, config: AudioConvConfig, embed_dim: int) -> None:
        super().__init__(config, embed_dim)
        if not 0 < config.clip_seconds <= MAX_SECONDS:
            raise ConfigError(f"clip_seconds must be in (0, {MAX_SECONDS}], got {config.clip_seconds}")
        if config.widths[-1] % config.heads:
            raise ConfigError(f"the last width {config.widths[-1]} must be a multiple of heads "
                              f"{config.heads}")
        self.samples = round(config.clip_seconds * SAMPLE_RATE)
        self.logmel = LogMel(SAMPLE_RATE, config.n_fft, config.hop_length, config.n_mels,
                             config.f_min, config.f_max)
        self.input_norm = nn.BatchNorm2d(1)
        layers = conv_bn_relu(1, config.widths[0], 3, 2)
        for c_in, c_out in zip(config.widths, config.widths[1:]):
            layers += conv_bn_relu(c_in, c_out, 3, 2) + conv_bn_relu(c_out, c_out, 3, 1)
        self.trunk = nn.Sequential(*layers)
        width = config.widths[-1]
        steps = 1 + self.samples // config.hop_length
        for _ in config.widths:  # each stride-2, padding-1 convolution: ⌈n / 2⌉
            steps = (steps + 1) // 2
        self.pos = nn.Parameter(torch.randn(1, steps, width) * 0.02)
        self.encoder = transformer_encoder(width, config.layers, config.heads, 4.0)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim)

    def preprocess_one(self, item: Any) -> torch.Tensor:
        return load_audio(item, self.samples)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_norm(self.logmel(x).unsqueeze(1))       # [B, 1, mels, frames]
        h = self.trunk(h).mean(dim=2).transpose(1, 2)          # [B, steps, width]
        h = self.encoder(h + self.pos)
        return self.norm(h.mean(dim=1))
