"""``jointspace demo --video`` on a tiny budget: both models train on the same clips, both are
evaluated (retrieval, zero-shot, minimal pairs), and mean pooling is exactly blind to order."""
import json

import pytest

from jointspace.data.video_shapes import VideoSpec
from jointspace.demos.video import TEMPORALS, run_video_demo, summary, video_demo_config

TINY = ["train.batch_size=16", "train.max_steps=6", "train.warmup_steps=1", "train.log_every=2"]


def test_the_two_models_differ_only_in_their_temporal_module():
    mean, transformer = (video_demo_config(t) for t in TEMPORALS)
    a, b = mean.model.towers["video"], transformer.model.towers["video"]
    assert (a.options["temporal"], b.options["temporal"]) == ("mean", "transformer")
    assert {k: v for k, v in a.options.items() if k != "temporal"} == \
        {k: v for k, v in b.options.items() if k != "temporal"}
    assert a.options["frame_tower"]["trainable"] == "head"  # locked backbone: features cached
    assert mean.model.towers["text"] == transformer.model.towers["text"]
    assert mean.train == transformer.train
    with pytest.raises(ValueError, match="temporal must be one of mean, transformer"):
        video_demo_config("lstm")


def test_video_demo_runs_end_to_end(tmp_path, capsys):
    spec = VideoSpec(n=60, frames=6, frame_size=16, workers=1)
    result = run_video_demo(tmp_path / "v", overrides=TINY, spec=spec)
    assert set(result.results) == set(TEMPORALS) and set(result.steps_per_s) == set(TEMPORALS)
    assert all(s > 0 for s in result.steps_per_s.values())
    for temporal in TEMPORALS:
        r = result.results[temporal]
        assert r["pair"] == ["video", "text"] and r["retrieval"]["gallery"] == {"video": 12, "text": 24}
        assert r["minimal_pairs"]["n_pairs"] == 5 and "zero_shot" in r
        on_disk = json.loads((tmp_path / "v" / "eval" / temporal / "results.json").read_text())
        assert on_disk["minimal_pairs"] == r["minimal_pairs"]
        assert (tmp_path / "v" / "eval" / temporal / "report.html").is_file()
        config = json.loads((result.models[temporal] / "config.json").read_text())
        assert "frames" in json.dumps(config) and temporal in json.dumps(config)
    # the twins of a pair are the same frames in another order: mean pooling cannot tell them
    # apart, however it was trained; the transformer, even barely trained, does not tie
    assert result.results["mean"]["minimal_pairs"]["two_way"] == {"video_to_text": 0.5, "text_to_video": 0.5}
    assert result.results["transformer"]["minimal_pairs"]["two_way"] != {"video_to_text": 0.5,
                                                                        "text_to_video": 0.5}
    rows = summary(result.results)
    assert [row["model"] for row in rows] == list(TEMPORALS)
    assert rows[0]["2-way video_to_text"] == 0.5 and rows[1]["R@1 text_to_video"] == \
        result.results["transformer"]["retrieval"]["text_to_video"]["R@1"]
    from jointspace.cli.demo import print_video_table
    print_video_table(result.results)
    printed = capsys.readouterr().out
    assert "test split: 12 clips, 24 captions; minimal pairs: 5 (2-way chance 0.5)" in printed
    assert "mean         video_to_text   0.500" in printed and "transformer  text_to_video" in printed
