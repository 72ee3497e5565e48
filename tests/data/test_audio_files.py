"""Audio files as users have them: each bad kind gets the reader's treatment."""
import json
import logging

import numpy as np
import pytest
import soundfile

from jointspace.data.audio import MAX_SECONDS, SAMPLE_RATE, check_audio, decode_audio
from jointspace.data.manifest import read_manifest
from jointspace.errors import DataError

import jointspace.towers  # noqa: F401  (registers the audio modality)


def _tone(hz=440.0, seconds=1.0, rate=SAMPLE_RATE, amp=0.5):
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _write(path, samples, rate=SAMPLE_RATE, subtype="PCM_16"):
    soundfile.write(str(path), samples, rate, subtype=subtype)
    return path


def _manifest(tmp_path, files):
    lines = ["id,audio,text"] + [f"r{i},{f},clip {i}" for i, f in enumerate(files)]
    path = tmp_path / "m.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _read(tmp_path, files):
    return read_manifest(_manifest(tmp_path, files), required=("audio", "text"),
                         quarantine_dir=tmp_path / "q")


def _dominant_hz(wave):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.argmax(spectrum) * SAMPLE_RATE / len(wave), SAMPLE_RATE / len(wave)


def test_clean_16k_mono_decodes_exactly_with_no_notes(tmp_path):
    tone = _tone()
    decoded = decode_audio(_write(tmp_path / "a.wav", tone))
    assert decoded.notes == ()
    assert decoded.samples.dtype == np.float32
    np.testing.assert_allclose(decoded.samples, tone, atol=1 / 32768)


def test_unreadable_missing_and_empty_files_are_quarantined_with_their_reason(tmp_path):
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "zero.wav").write_bytes(b"")
    _write(tmp_path / "noframes.wav", np.zeros(0, np.float32))
    _write(tmp_path / "good.wav", _tone())
    m = _read(tmp_path, ["noise.wav", "missing.wav", "zero.wav", "noframes.wav", "good.wav"])
    assert [r.id for r in m.records] == ["r4"]
    reasons = {b.line: b.reason for b in m.bad_rows}
    assert "cannot be decoded" in reasons[2] and "noise.wav" in reasons[2]
    assert "not found" in reasons[3] and "missing.wav" in reasons[3]
    assert "cannot be decoded" in reasons[4] and "zero.wav" in reasons[4]
    assert "empty (0 samples)" in reasons[5]
    quarantined = [json.loads(line) for line in open(m.quarantine_path)]
    assert [q["row"]["audio"] for q in quarantined] == ["noise.wav", "missing.wav", "zero.wav",
                                                        "noframes.wav"]


@pytest.mark.parametrize("rate", [44100, 8000, 22050])
def test_other_sample_rates_are_resampled_and_the_log_says_so(tmp_path, rate, caplog):
    files = [_write(tmp_path / f"t{i}.wav", _tone(330.0, 1.0, rate), rate).name for i in range(3)]
    decoded = decode_audio(tmp_path / files[0])
    assert len(decoded.samples) == SAMPLE_RATE  # 1 s at 16 kHz
    hz, bin_width = _dominant_hz(decoded.samples)
    assert abs(hz - 330.0) <= bin_width
    assert decoded.notes == (f"resampled from {rate} Hz to {SAMPLE_RATE} Hz",)
    with caplog.at_level(logging.WARNING, logger="jointspace"):
        m = _read(tmp_path, files)
    assert len(m.records) == 3 and len(m.notes) == 3
    summary = [r.getMessage() for r in caplog.records if "resampled" in r.getMessage()]
    assert len(summary) == 1 and "3 rows resampled" in summary[0] and "t0.wav" in summary[0]


def test_silence_is_quarantined_but_a_quiet_tone_is_kept(tmp_path):
    _write(tmp_path / "zeros.wav", np.zeros(SAMPLE_RATE, np.float32))
    hiss = np.random.default_rng(0).standard_normal(SAMPLE_RATE)
    hiss = (hiss / np.abs(hiss).max() * 10 ** (-90 / 20)).astype(np.float32)  # peak −90 dBFS
    _write(tmp_path / "hiss.wav", hiss, subtype="FLOAT")
    _write(tmp_path / "quiet.wav", _tone(amp=10 ** (-40 / 20)))
    m = _read(tmp_path, ["zeros.wav", "hiss.wav", "quiet.wav"])
    assert [r.id for r in m.records] == ["r2"]
    assert all("silent" in b.reason for b in m.bad_rows)
    assert decode_audio(tmp_path / "zeros.wav").samples.max() == 0  # decoding itself is fine


def test_clipped_audio_is_kept_with_a_note_and_float_overs_are_clipped(tmp_path):
    clipped = np.clip(_tone(amp=4.0), -1, 1)
    decoded = decode_audio(_write(tmp_path / "c.wav", clipped))
    share = float(np.mean(np.abs(clipped) >= 0.999))
    assert len(decoded.notes) == 1 and decoded.notes[0].startswith("clipped: ")
    assert f"{100 * share:.1f}%" in decoded.notes[0] and share > 0.5
    overs = decode_audio(_write(tmp_path / "f.wav", _tone(amp=3.0), subtype="FLOAT")).samples
    assert overs.max() == 1.0 and overs.min() == -1.0
    assert check_audio(tmp_path / "c.wav").problem is None


def test_long_files_are_truncated_and_only_their_head_is_read(tmp_path):
    decoded = decode_audio(_write(tmp_path / "long.wav", _tone(seconds=25.0)))
    assert len(decoded.samples) == int(MAX_SECONDS * SAMPLE_RATE)
    assert decoded.notes == ("truncated: 25.0 s long, only the first 10 s are used",)
    # a float file whose samples turn NaN after 10 s: reading them would be an error
    tail_bad = np.concatenate([_tone(seconds=10.0), np.full(SAMPLE_RATE, np.nan, np.float32)])
    assert np.isfinite(decode_audio(_write(tmp_path / "tail.wav", tail_bad, subtype="FLOAT")).samples).all()
    with pytest.raises(DataError, match="NaN"):
        decode_audio(tmp_path / "tail.wav", max_seconds=10.5)


def test_any_channel_count_is_averaged_to_mono(tmp_path):
    a, b = _tone(440.0, amp=0.4), _tone(660.0, amp=0.2)
    decoded = decode_audio(_write(tmp_path / "st.wav", np.stack([a, b], axis=1)))
    np.testing.assert_allclose(decoded.samples, (a + b) / 2, atol=1e-4)
    assert decoded.notes == ("downmixed 2 channels to mono",)
    six = np.stack([_tone(110.0 * (k + 1), amp=0.1) for k in range(6)], axis=1)
    decoded = decode_audio(_write(tmp_path / "51.wav", six))
    np.testing.assert_allclose(decoded.samples, six.mean(axis=1), atol=1e-4)
    assert decoded.notes == ("downmixed 6 channels to mono",)


def test_nan_samples_are_an_error_and_quarantined(tmp_path):
    bad = _tone()
    bad[100] = np.nan
    _write(tmp_path / "nan.wav", bad, subtype="FLOAT")
    with pytest.raises(DataError, match="NaN or infinite samples: .*nan.wav"):
        decode_audio(tmp_path / "nan.wav")
    _write(tmp_path / "ok.wav", _tone())
    m = _read(tmp_path, ["nan.wav", "ok.wav"])
    assert [r.id for r in m.records] == ["r1"] and "NaN" in m.bad_rows[0].reason
