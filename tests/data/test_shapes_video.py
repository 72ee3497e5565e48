"""The shapes video data (``jointspace data shapes --video``): clips that decode with plain
PyAV to what was planned, captions that say what the pixels do, minimal pairs made of
the same frames whose captions differ only in direction or order words, determinism."""
import csv
import sys
from collections import Counter

import numpy as np
import pytest

from jointspace.cli import main
from jointspace.data.scenes import BACKGROUNDS, COLOURS, KINDS, SIZES
from jointspace.data.shapes import SYNONYMS
from jointspace.data.video_clips import Encoding, encode_clip, render_frames
from jointspace.data.video_scenes import class_names
from jointspace.data.video_shapes import VideoSpec, count_pairs, plan_split, write_video_shapes
from jointspace.errors import ConfigError, DataError
from jointspace.extras import MissingExtraError

av = pytest.importorskip("av")

SPEC = VideoSpec(n=40, seed=3, frame_size=32, frames=8, workers=1)  # 28 / 4 / 8 clips, 4 pairs
# independent of the generator's tables: the words a reversed clip swaps ...
ANTONYMS = dict(p for a, b in [("left", "right"), ("leftwards", "rightwards"), ("up", "down"),
                               ("upwards", "downwards"), ("top", "bottom"), ("grows", "shrinks"),
                               ("growing", "shrinking"), ("bigger", "smaller"),
                               ("expands", "contracts"), ("expanding", "contracting")]
                for p in ((a, b), (b, a)))
# ... and the words that describe a shape (what a swapped order moves around)
DESCRIPTIVE = set(COLOURS) | set(KINDS) | set(SIZES) | {"shape"} | {
    w for words in SYNONYMS.values() for phrase in words for w in phrase.split()}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _decode(path):
    """Every frame of a file as RGB arrays, with a plain PyAV loop (no jointspace code)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.codec_context.name, container.format.name, stream.average_rate


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    return out, write_video_shapes(out, SPEC)


def test_manifests_columns_rows_and_pairs(clips):
    out, manifests = clips
    assert set(manifests) == {"train", "val", "test"}
    sizes = {"train": 28, "val": 4, "test": 8}
    for split, path in manifests.items():
        assert path == out / f"{split}.csv"
        with open(path, newline="") as f:
            assert next(csv.reader(f)) == ["id", "video", "image", "text", "label", "pair"]
        rows = _rows(path)
        assert len(rows) == sizes[split] * SPEC.captions
        assert len({r["id"] for r in rows}) == len(rows)  # ids unique per row
        by_clip = {}
        for r in rows:
            by_clip.setdefault(r["video"], []).append(r)
        assert len(by_clip) == sizes[split]
        for video, group in by_clip.items():  # one clip: several captions, one label and pair
            assert len(group) == 2 and group[0]["text"] != group[1]["text"]
            assert len({(r["image"], r["label"], r["pair"]) for r in group}) == 1
            assert video.startswith(f"videos/{split}/") and video.endswith(".mp4")
            assert (out / video).is_file() and (out / group[0]["image"]).is_file()
            assert group[0]["label"] in class_names()
        pairs = Counter(r["pair"] for r in rows if r["pair"])
        if split == "test":
            assert len(pairs) == count_pairs(SPEC) == 3  # round(8 × 0.8) // 2
            assert set(pairs.values()) == {4}  # two clips × two captions
        else:
            assert not pairs


def test_clips_decode_with_pyav_to_the_planned_frames(clips):
    out, _ = clips
    errors = []
    for split in ("train", "val", "test"):
        for record in plan_split(SPEC, split):
            frames, codec, container, rate = _decode(out / f"videos/{split}/{record.clip_id}.mp4")
            assert (codec, rate) == ("h264", 8) and "mp4" in container
            assert len(frames) == 8 and all(f.shape == (32, 32, 3) for f in frames)
            planned = render_frames(record.plan, 32).astype(np.int16)
            errors.append(np.abs(np.stack(frames).astype(np.int16) - planned).mean(axis=(1, 2, 3)))
            poster = np.asarray(__import__("PIL.Image").Image.open(
                out / f"images/{split}/{record.clip_id}.png"))
            assert np.array_equal(poster, planned[4])  # the middle shown frame, lossless
    errors = np.concatenate(errors)
    # every decoded frame is the planned one up to H.264 at qp 20 and 4:2:0 chroma; a frame of
    # another clip (or the same clip in another order) is far off
    assert errors.max() < 6, errors.max()


def _pairs(records):
    pairs = {}
    for r in records:
        if r.pair:
            pairs.setdefault(r.pair, []).append(r)
    return list(pairs.values())


def test_pair_members_decode_to_the_same_frame_multiset_in_another_order(tmp_path):
    records = plan_split(VideoSpec(n=300, seed=11, frames=10, frame_size=32), "test")
    pairs = _pairs(records)
    kinds = {}
    for a, b in pairs:  # one pair of each kind, and reversed motion at least twice
        kind = a.plan.kind if a.plan.label != "shape changing colour" else "colour"
        if kinds.get(kind, 0) < (2 if kind == "solo" else 1):
            kinds[kind] = kinds.get(kind, 0) + 1
            fa, fb = (_decode(encode_clip(render_frames(r.plan, 32), tmp_path / f"{r.clip_id}.mp4"))[0]
                      for r in (a, b))
            assert len(fa) == len(fb) == 10
            assert sorted(f.tobytes() for f in fa) == sorted(f.tobytes() for f in fb)
            assert [f.tobytes() for f in fa] != [f.tobytes() for f in fb]  # the order differs
            if a.plan.kind != "sequence":
                assert all(np.array_equal(x, y) for x, y in zip(fa, fb[::-1]))  # reversed
    assert set(kinds) == {"solo", "duet", "sequence", "colour"}, kinds


def _runs(tokens):
    """The caption's template words, and its runs of shape-describing words."""
    skeleton, runs, run = [], [], []
    for t in ("a" if t == "an" else t for t in tokens):  # the article agrees with the next word
        if t.strip(",") in DESCRIPTIVE:
            run.append(t)
        else:
            skeleton.append(t)
            if run:
                runs.append(" ".join(run))
            run = []
    return skeleton, Counter(runs + ([" ".join(run)] if run else []))


def test_default_test_split_has_200_pairs_differing_only_in_direction_or_order():
    spec = VideoSpec()  # the default size (3,000 clips); planned, nothing rendered
    records = plan_split(spec, "test")
    pairs = _pairs(records)
    assert len(pairs) == count_pairs(spec) >= 200
    assert all(len(p) == 2 for p in pairs)
    seen = Counter()
    for a, b in pairs:
        # the same frames: same background and shapes over the same base timeline, another order
        assert (a.plan.background, a.plan.actors) == (b.plan.background, b.plan.actors)
        assert sorted(a.plan.order) == sorted(b.plan.order) and a.plan.order != b.plan.order
        assert len(a.captions) == len(b.captions) == 2
        for ca, cb in zip(a.captions, b.captions):
            assert ca != cb
            flipped = [ANTONYMS.get(t, t) for t in ca.split()]
            if a.plan.kind == "sequence" or "from" in ca.split():  # order words moved
                assert _runs(flipped) == _runs(cb.split()), (ca, cb)
                seen["order"] += 1
            else:  # direction words flipped, nothing else
                assert flipped == cb.split(), (ca, cb)
                seen["direction"] += 1
        opposite = {"shape moving to the left": "shape moving to the right",
                    "shape moving up": "shape moving down", "shape growing": "shape shrinking"}
        opposite.update({v: k for k, v in opposite.items()})
        assert b.plan.label == opposite.get(a.plan.label, a.plan.label)
    assert seen["order"] > 100 and seen["direction"] > 200, seen


def _foreground(frame, background):
    return np.abs(frame.astype(np.int16) - np.array(BACKGROUNDS[background])).max(axis=2) > 40


def _nearest_colour(pixels):
    return min(COLOURS, key=lambda c: np.abs(pixels.mean(axis=0) - COLOURS[c]).sum())


def test_captions_say_what_the_pixels_do():
    """For clips of one shape, or one shape after another, the caption's direction, size
    change or colours are those measured on the rendered frames."""
    checked = Counter()
    for record in plan_split(VideoSpec(n=300, seed=2, frames=8), "train"):
        plan, words = record.plan, record.captions[0].replace(",", "").split()
        if len(plan.actors) > 1 and plan.kind != "sequence":
            continue
        frames = render_frames(plan, 64)
        masks = [_foreground(f, plan.background) for f in frames]
        if plan.kind == "sequence":
            first = next(f[m] for f, m in zip(frames, masks) if m.sum() > 50)
            assert _nearest_colour(first) == next(w for w in words if w in COLOURS)
        elif "from" in words:
            i = words.index("from")
            assert _nearest_colour(frames[0][masks[0]]) == words[i + 1]
            assert _nearest_colour(frames[-1][masks[-1]]) == words[i + 3]
        elif {"grows", "growing", "bigger", "expands", "expanding"} & set(words):
            assert masks[-1].sum() > 2 * masks[0].sum()
        elif {"shrinks", "shrinking", "smaller", "contracts", "contracting"} & set(words):
            assert masks[0].sum() > 2 * masks[-1].sum()
        else:
            (y0, x0), (y1, x1) = (np.argwhere(m).mean(axis=0) for m in (masks[0], masks[-1]))
            moved = ("right" if x1 > x0 else "left") if abs(x1 - x0) > abs(y1 - y0) else \
                ("down" if y1 > y0 else "up")
            said = {"left": "left", "leftwards": "left", "right": "right", "rightwards": "right",
                    "up": "up", "upwards": "up", "top": "up", "down": "down",
                    "downwards": "down", "bottom": "down"}
            assert moved in {said[w] for w in words if w in said}, (record.captions[0], moved)
            assert max(abs(x1 - x0), abs(y1 - y0)) > 0.25 * 64
        checked[plan.label] += 1
    assert len(checked) == len(class_names()), checked  # every action was checked


def test_same_seed_same_bytes_any_workers_and_another_seed_differs(clips, tmp_path):
    out, _ = clips
    again = tmp_path / "again"
    write_video_shapes(again, VideoSpec(**{**SPEC.__dict__, "workers": 2}))  # a process pool
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert len(files) == 3 + 1 + 2 * 40
    assert all((again / f).read_bytes() == (out / f).read_bytes() for f in files)
    other = tmp_path / "other"
    write_video_shapes(other, VideoSpec(**{**SPEC.__dict__, "seed": 4}))
    assert (other / "test.csv").read_text() != (out / "test.csv").read_text()


def test_cli_flag_end_to_end(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "shapes", "--out", str(out), "--n", "30", "--video", "--frames", "6",
                 "--image-size", "24", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"test: {out / 'test.csv'}" in printed and "2 minimal pairs" in printed
    rows = _rows(out / "test.csv")
    assert len(rows) == 12 and sum(1 for r in rows if r["pair"]) == 8  # 6 clips, 2 pairs
    frames, *_ = _decode(out / rows[0]["video"])
    assert len(frames) == 6 and frames[0].shape == (24, 24, 3)
    assert main(["data", "shapes", "--out", str(out), "--video", "--audio"]) == 2
    assert main(["data", "shapes", "--out", str(out), "--frames", "8"]) == 2
    assert "needs --video" in capsys.readouterr().err


def test_codec_and_container_are_parameters(clips, tmp_path):
    out, _ = clips
    mp4 = (out / "videos/test/test-000000.mp4").read_bytes()
    assert mp4.index(b"moov") < mp4.index(b"mdat")  # faststart: playable while it downloads
    spec = VideoSpec(n=10, seed=3, frame_size=16, frames=6, codec="libvpx-vp9", container="webm")
    manifests = write_video_shapes(tmp_path, spec)
    row = _rows(manifests["test"])[0]
    assert row["video"] == "videos/test/test-000000.webm"
    frames, codec, container, _ = _decode(tmp_path / row["video"])
    assert (codec, len(frames), frames[0].shape) == ("vp9", 6, (16, 16, 3)) and "webm" in container


def test_bad_settings_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"33×33 has an odd side.*yuv420p.*34×34"):
        write_video_shapes(tmp_path, VideoSpec(n=10, frame_size=33))
    with pytest.raises(ConfigError, match="frames must be 6–64, not 3"):
        VideoSpec(n=10, frames=3).check()
    with pytest.raises(DataError, match=r"bad\.mp4: could not encode the clip with no-such-codec"):
        encode_clip(np.zeros((6, 16, 16, 3), np.uint8), tmp_path / "bad.mp4",
                    Encoding(codec="no-such-codec"))
    assert not list(tmp_path.iterdir())  # nothing half-written
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'jointspace\[video\]'"):
        encode_clip(np.zeros((6, 16, 16, 3), np.uint8), tmp_path / "x.mp4")
