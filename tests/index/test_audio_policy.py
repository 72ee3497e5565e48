"""Issue 20 §2: one list of audio suffixes (what the decoder reads is what a folder indexes)
and one policy for a silent clip (refused as a query from the CLI, Python and HTTP alike)."""
import numpy as np
import pytest
import soundfile

from jointspace.cli import main
from jointspace.data.audio import AUDIO_SUFFIXES, decode_audio
from jointspace.index import index_source
from jointspace.towers import MODALITIES

WRITE = {".opus": {"format": "OGG", "subtype": "OPUS"}, ".oga": {"format": "OGG"},
         ".aif": {"format": "AIFF"}, ".aifc": {"format": "AIFF"}}  # endings soundfile cannot guess


def test_every_audio_suffix_decodes_and_a_folder_indexes_them(image_audio_model_dir, tmp_path):
    assert MODALITIES.get("audio").suffixes == AUDIO_SUFFIXES  # the folder indexer's list
    folder = tmp_path / "sounds"
    folder.mkdir()
    t = np.arange(24_000) / 48_000
    for i, suffix in enumerate(AUDIO_SUFFIXES):
        path = folder / f"tone-{i}{suffix.upper() if i % 2 else suffix}"
        soundfile.write(path, 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t), 48_000,
                        **WRITE.get(suffix, {}))
        assert len(decode_audio(path).samples) > 7_000, suffix
    report = index_source(tmp_path / "col", image_audio_model_dir, folder)
    assert report.added == len(AUDIO_SUFFIXES) and not report.problems  # .mp3 was skipped


def test_a_silent_query_is_refused_by_the_cli_as_over_http(image_audio_model_dir, media_dir, tmp_path,
                                                           capsys):
    index_source(tmp_path / "col", image_audio_model_dir, media_dir)
    capsys.readouterr()
    assert main(["search", "--collection", str(tmp_path / "col"), "--audio",
                 str(media_dir / "silence.wav")]) == 2
    assert "audio is silent (peak below -80 dBFS)" in capsys.readouterr().err
    assert main(["search", "--collection", str(tmp_path / "col"), "--audio",
                 str(media_dir / "tone-330.mp3"), "--target", "audio", "-k", "1"]) == 0
    assert "tone-330.mp3" in capsys.readouterr().out
