"""The audio tower: log-mel against librosa, shapes, silence, padding, save/load."""
import librosa  # a test dependency (pyproject.toml [test]): the reference never skips
import numpy as np
import pytest
import soundfile
import torch

from jointspace.config import ModelConfig, PairSpec, TowerSpec
from jointspace.errors import ConfigError, DataError
from jointspace.model import JointModel, load
from jointspace.towers.audio import LogMel, hz_to_mel, load_audio, mel_filterbank, mel_to_hz

SR = 16000
TINY_AUDIO = {"widths": [8, 16], "layers": 1, "heads": 2, "n_mels": 32, "clip_seconds": 0.5}


def _signal(seed=0, n=SR):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sign(np.sin(2 * np.pi * 97 * t))
            + 0.05 * rng.standard_normal(n)).astype(np.float32)


def test_mel_scale_and_filters_equal_librosa_slaney():
    hz = np.array([0.0, 100.0, 999.0, 1000.0, 1001.0, 4000.0, 8000.0])
    np.testing.assert_allclose(hz_to_mel(hz), librosa.hz_to_mel(hz, htk=False), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-10)
    for n_fft, n_mels, f_min, f_max in ((400, 64, 0.0, 8000.0), (512, 40, 50.0, 7600.0)):
        ours = mel_filterbank(SR, n_fft, n_mels, f_min, f_max)
        ref = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max,
                                  htk=False, norm="slaney", dtype=np.float64)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


def test_log_mel_equals_librosa_within_a_thousandth_of_a_db():
    """Stated tolerance: 1e-3 dB wherever the reference is above −80 dB (float32 STFT
    against librosa's float64 pipeline), and 0.05 dB everywhere."""
    waves = np.stack([_signal(0), _signal(1)[::-1].copy()])
    ours = LogMel(SR, 400, 160, 64, 0.0, 8000.0)(torch.from_numpy(waves)).numpy()
    for wave, got in zip(waves, ours):
        power = librosa.feature.melspectrogram(
            y=wave.astype(np.float64), sr=SR, n_fft=400, hop_length=160, n_mels=64, fmin=0.0,
            fmax=8000.0, power=2.0, center=True, pad_mode="constant", window="hann")
        ref = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)
        assert got.shape == ref.shape == (64, 101)
        loud = ref > -80
        assert loud.mean() > 0.9
        assert np.abs(got - ref)[loud].max() < 1e-3
        assert np.abs(got - ref).max() < 0.05


def test_log_mel_of_silence_is_finite_and_stays_float32_under_autocast():
    logmel = LogMel()
    silent = logmel(torch.zeros(2, SR))
    assert torch.isfinite(silent).all() and float(silent.max()) == pytest.approx(-100.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = logmel(torch.from_numpy(_signal()[None]))
    assert out.dtype == torch.float32


def _model(**audio_options):
    cfg = ModelConfig(embed_dim=16, towers={
        "image": TowerSpec("convnet", {"image_size": 16, "widths": [8, 16]}),
        "text": TowerSpec("transformer", {"width": 16, "layers": 1, "heads": 2, "context_length": 16}),
        "audio": TowerSpec("audio_conv", {**TINY_AUDIO, **audio_options})},
        pairs=[PairSpec("audio", "image"), PairSpec("image", "text")])
    torch.manual_seed(0)
    return JointModel(cfg)


def test_tower_embeds_unit_vectors_and_copes_with_silence_and_any_length():
    tower = _model().towers["audio"]
    tower.eval()
    short, long = _signal(0, 3000), _signal(1, 3 * SR)
    x = tower.collate([tower.preprocess_one(a) for a in (short, long, np.zeros(SR, np.float32))])
    assert x.shape == (3, SR // 2)  # clip_seconds 0.5: cut or padded to 8000 samples
    assert torch.all(x[0, 3000:] == 0) and torch.equal(x[1], torch.from_numpy(long[:SR // 2]))
    with torch.no_grad():
        out = tower(x)
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    # the projection sees what the sound is: two different clips get different vectors
    assert float(out[0] @ out[1]) < 0.999


def test_bad_sample_arrays_are_clear_errors():
    tower = _model().towers["audio"]
    with pytest.raises(DataError, match="mono"):
        tower.preprocess_one(np.zeros((2, 100), np.float32))
    with pytest.raises(DataError, match="NaN"):
        tower.preprocess_one(np.array([0.0, np.nan], np.float32))
    with pytest.raises(DataError, match="audio file path or an array"):
        tower.preprocess_one(42)
    with pytest.raises(ConfigError, match="clip_seconds"):
        _model(clip_seconds=11.0)


def test_audio_file_round_trip_through_a_saved_model(tmp_path):
    path = tmp_path / "a.wav"
    soundfile.write(str(path), _signal(), SR, subtype="PCM_16")
    wave = load_audio(path, SR // 2)
    np.testing.assert_allclose(wave.numpy(), _signal()[:SR // 2], atol=1 / 32768)
    model = _model()
    model.towers["text"].prepare(["a red circle"])
    before = model.encode_audio(path)
    model.save(tmp_path / "m")
    after = load(tmp_path / "m").encode_audio([path])
    np.testing.assert_allclose(after, before, atol=1e-6)
    # the fixed spectrogram buffers are rebuilt from the config, not stored with the weights
    assert not any("logmel" in k for k in model.state_dict())
