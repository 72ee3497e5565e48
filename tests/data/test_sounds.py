"""The shapes dataset's sounds: each scene property is audible where the docs say."""
import csv

import numpy as np
import pytest
import soundfile

from jointspace.data.shapes import Scene, Shape, ShapesSpec, write_shapes
from jointspace.data.sounds import LOUDNESS, PITCHES, synthesise

SR = 16000


def _scene(kind="circle", colour="red", size="large", x=0.5, y=0.5, background="black", extra=()):
    return Scene((Shape(kind, colour, size, x, y), *extra), background)


def _dominant_hz(wave):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.argmax(spectrum) * SR / len(wave)


@pytest.mark.parametrize("colour", list(PITCHES))
def test_pitch_names_the_colour(colour):
    wave = synthesise(_scene(colour=colour), "0/train/1")
    assert _dominant_hz(wave) == pytest.approx(PITCHES[colour], rel=0.02)


def test_timbre_loudness_onset_duration_and_background_follow_the_scene():
    def harmonic_share(kind):
        w = synthesise(_scene(kind=kind), "0/train/2")
        spectrum = np.abs(np.fft.rfft(w)) ** 2
        f = np.fft.rfftfreq(len(w), 1 / SR)
        return spectrum[f > 300].sum() / spectrum.sum()  # energy above the 220 Hz fundamental
    assert harmonic_share("circle") < 0.01 < harmonic_share("triangle") < harmonic_share("square")
    peaks = {s: np.abs(synthesise(_scene(size=s), "0/train/3")).max() for s in LOUDNESS}
    assert peaks["small"] < peaks["medium"] < peaks["large"]

    def onset_and_length(x, y):
        active = np.flatnonzero(np.abs(synthesise(_scene(x=x, y=y), "0/train/4")) > 0.01)
        return active[0] / SR, (active[-1] - active[0]) / SR
    (left, _), (right, _) = onset_and_length(0.2, 0.5), onset_and_length(0.8, 0.5)
    assert right - left == pytest.approx(0.18, abs=0.02)
    (_, top), (_, bottom) = onset_and_length(0.5, 0.2), onset_and_length(0.5, 0.8)
    assert bottom - top == pytest.approx(0.27, abs=0.03)
    quiet = [np.std(synthesise(_scene(x=0.8, background=b), "0/train/5")[:800]) for b in
             ("black", "grey", "brown")]  # the first 50 ms: before the note starts
    assert quiet[0] == 0 and 0.01 < quiet[1] < 0.03 and 0.02 < quiet[2] < 0.06


def test_clips_are_deterministic_distinct_and_in_range():
    scene = _scene(extra=(Shape("star", "blue", "small", 0.2, 0.2), Shape("square", "cyan", "small", 0.8, 0.8)))
    a, b = synthesise(scene, "0/train/7"), synthesise(scene, "0/train/7")
    c = synthesise(scene, "0/train/8")
    assert a.dtype == np.float32 and a.shape == (SR,)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert np.abs(a).max() < 1.0


def test_write_shapes_with_audio_adds_a_column_and_wav_files(tmp_path):
    paths = write_shapes(tmp_path, ShapesSpec(n=30, seed=1, audio=True))
    without = write_shapes(tmp_path / "plain", ShapesSpec(n=30, seed=1))
    for split in ("train", "test", "test_words"):
        rows = list(csv.DictReader(open(paths[split])))
        plain = list(csv.DictReader(open(without[split])))
        assert list(rows[0]) == ["id", "image", "text", "audio", "label"]
        # the sounds change nothing else: same ids, images, captions and labels
        assert [{k: r[k] for k in plain[0]} for r in rows] == plain
        for r in rows[:3]:
            info = soundfile.info(str(tmp_path / r["audio"]))
            assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR, 1, SR, "PCM_16")
    test = list(csv.DictReader(open(paths["test"])))
    words = list(csv.DictReader(open(paths["test_words"])))
    assert [r["audio"] for r in test] == [r["audio"] for r in words]
