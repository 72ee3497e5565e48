"""A report of any pair the model has shows its plug-ins' previews: sounds as players (never as
file paths), bounded in size; a model folder without a training log says its curves are absent."""
import re

import pytest

from jointspace.data.shapes import ShapesSpec, write_shapes
from jointspace.eval.report.previews import Previews
from jointspace.eval.run import evaluate


@pytest.fixture(scope="module")
def audio_report(image_audio_model_dir, tmp_path_factory):
    data = write_shapes(tmp_path_factory.mktemp("shapes-audio"), ShapesSpec(n=120, seed=3, audio=True))
    out = tmp_path_factory.mktemp("audio-report")
    results = evaluate(image_audio_model_dir, data["test"], out_dir=out, pair="audio:image",
                       tasks=["retrieval", "geometry"])
    return out / "report.html", results


def test_sounds_are_players_and_directions_read_by_the_pair(audio_report):
    path, results = audio_report
    page = path.read_text()
    players = re.findall(r"<span class='preview' id='(preview-\d+)'><audio controls preload='none' "
                         r"aria-label='[^']+'><source src='data:audio/[\w-]+;base64,[A-Za-z0-9+/=]+' "
                         r"type='audio/[\w-]+'></audio>", page)
    assert len(players) == len(set(players)) >= 10  # each sound once, however often it appears
    links = re.findall(r"<a href='#(preview-\d+)'>▶ test-\d+\.wav</a>", page)
    assert links and set(links) <= set(players)  # later appearances link to its player
    assert "image → audio: 8 queries drawn at random" in page and "audio → image: the 8 worst" in page
    assert "image → audio R@1 " in page and "Zero-shot classification was not run" in page
    hubs = page[page.index("Hubs among the audio items"):page.index("<section id='training'")]
    assert hubs.count("<audio controls") + hubs.count("<a href='#preview-") == 10
    assert "size bound" not in page and ".wav</code>" not in page
    assert "Training curves: absent — its folder has no training log (log.jsonl)." in page
    assert path.stat().st_size <= 5_000_000


def test_previews_are_bounded(tmp_path, media_dir):
    big = tmp_path / "long.wav"
    big.write_bytes((media_dir / "tone-220.wav").read_bytes() + b"\0" * 1_100_000)
    tone = media_dir / "tone-220.wav"
    previews = Previews(budget=int(tone.stat().st_size * 1.4))  # one tone's base64, not two
    shown = previews("audio", str(big))
    assert "<audio" not in shown and "long.wav" in shown and "too large to embed" in shown
    first = previews("audio", str(tone))
    assert "<audio controls" in first and "id='preview-0'" in first
    assert previews("audio", str(tone)).startswith("<span class='preview'><a href='#preview-0'>▶ tone-220.wav")
    other = previews("audio", str(media_dir / "tone-440.wav"))
    assert "<audio" not in other and "size bound" in other
    unknown = previews("no-such-modality", "x.bin")
    assert "x.bin" in unknown and "<img" not in unknown
    assert "&lt;b&gt;" in previews("text", "<b>bold</b>")
