"""Sample rates a header may claim: absurd ones are refused, awkward ones cost what the
audio holds (issue 20 §1), and resampling keeps its quality."""
import io
import tracemalloc
from math import ceil

import librosa
import numpy as np
import pytest
import scipy.signal  # noqa: F401  (imported here, so tracemalloc does not count its import)
import soundfile

from jointspace.data.audio import (MAX_RATE, MAX_RATIO_TERM, MIN_RATE, SAMPLE_RATE, check_audio,
                                   decode_audio, resample, resampling_ratio)
from jointspace.errors import DataError


def _tone(hz, rate, seconds=1.0, amp=0.5):
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _wav(samples, rate):
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _corr(a, b, edge=200):
    return float(np.corrcoef(a[edge:-edge], b[edge:-edge])[0, 1])


@pytest.mark.parametrize("rate", [655_331, MAX_RATE + 1, MIN_RATE - 1, 1])
def test_absurd_header_rates_are_refused_naming_the_file_and_rate(tmp_path, rate):
    path = tmp_path / "odd.wav"
    path.write_bytes(_wav(_tone(100.0, 8000, 0.012), rate))  # ~200 bytes, any header rate
    with pytest.raises(DataError, match=f"sample rate of {rate} Hz; rates from {MIN_RATE} to "
                                        f"{MAX_RATE} Hz are read: .*odd.wav"):
        decode_audio(path)
    assert f"{rate} Hz" in check_audio(path).problem


@pytest.mark.parametrize("rate", [44_101, 383_999, MIN_RATE + 1, MAX_RATE])
def test_tiny_files_at_awkward_rates_cost_what_they_hold(rate):
    """A 96-sample WAV at 383,999 Hz took 350 MB (a polyphase filter of 7.7M taps)."""
    data = _wav(_tone(300.0, rate, 96 / rate), rate)
    assert len(data) < 300
    tracemalloc.start()
    try:
        decoded = decode_audio(io.BytesIO(data), name="tiny.wav")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8e6, f"{peak / 1e6:.1f} MB to decode 96 samples"
    assert len(decoded.samples) == ceil(96 * SAMPLE_RATE / rate)
    up, down = resampling_ratio(rate)
    assert max(up, down) <= MAX_RATIO_TERM and abs(up * rate / (down * SAMPLE_RATE) - 1) < 1.3e-4


def test_common_rates_keep_their_exact_ratio():
    assert [resampling_ratio(r) for r in (8000, 11025, 22050, 44100, 48000, 96000, 192000, 352800)] \
        == [(2, 1), (640, 441), (320, 441), (160, 441), (1, 3), (1, 6), (1, 12), (20, 441)]


@pytest.mark.parametrize("rate", [44_100, 48_000, 44_101, 383_999])
def test_a_tone_resamples_as_the_reference_does_and_keeps_its_length(rate):
    x = _tone(1000.0, rate)
    y = resample(x, rate)
    assert y.dtype == np.float32 and len(y) == ceil(len(x) * SAMPLE_RATE / rate)
    reference = librosa.resample(x, orig_sr=rate, target_sr=SAMPLE_RATE)  # soxr, an exact ratio
    assert _corr(y, reference[:len(y)]) > 0.999
    assert _corr(y, _tone(1000.0, SAMPLE_RATE)[:len(y)]) > 0.999
    up, down = resampling_ratio(rate)
    if up * rate == down * SAMPLE_RATE:  # an exact ratio: what resample_poly alone gives
        np.testing.assert_array_equal(y, scipy.signal.resample_poly(x, up, down).astype(np.float32))


@pytest.mark.parametrize("rate", [44_100, 48_000, 44_101, 383_999])
def test_tones_above_8_khz_are_filtered_out_not_folded_down(rate):
    x = _tone(12_000.0, rate)  # would alias to 4 kHz
    y = resample(x, rate)
    assert np.sqrt(np.mean(y[200:-200] ** 2)) < 0.01 * np.sqrt(np.mean(x ** 2))  # below −40 dB
