"""The video plug-in and its reader (issue 24 §2): which frames come out, from which files,
at what cost, and what bad videos are told.

Every test clip numbers its frames (``video_files``): a sampled frame is checked to be the
*right* frame (its number against the target times, computed here) and pixel-equal to the
same frame of a plain PyAV loop that decodes every frame (the reference)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("av")

from video_files import (count_cursors, full_decode, frame_number, numbered_frame, on_screen, reference_at,  # noqa: E402
                         set_mp4_rotation, write_audio_only, write_blank, write_clip, write_no_frames)

from jointspace.data.manifest import read_manifest  # noqa: E402
from jointspace.errors import DataError  # noqa: E402
from jointspace.modalities import (MODALITIES, TooLarge, decode_with_limits, modality_for_shard_key,  # noqa: E402
                                   modality_for_suffix, sniff)
from jointspace.modalities import video_io  # noqa: E402
from jointspace.modalities import video as video_plugin  # noqa: E402
from jointspace.modalities.base import PLAYER_BYTES  # noqa: E402
from jointspace.modalities.video import VIDEO  # noqa: E402
from jointspace.modalities.video_io import check_video, read_clip  # noqa: E402

#: (file name, codec, pixel format): every container and codec the policy names
FORMATS = [("h264.mp4", "libx264", "yuv420p"), ("mpeg4.mp4", "mpeg4", "yuv420p"),
           ("vp9.webm", "libvpx-vp9", "yuv420p"), ("mpeg4.avi", "mpeg4", "yuv420p"),
           ("h264.mkv", "libx264", "yuv420p"), ("h264.mov", "libx264", "yuv420p"),
           ("anim.gif", "gif", "rgb8")]


def assert_reference(path: Path, clip, rotate: int = 0) -> None:
    """Each sampled frame is the full decode's frame at the same time from the first frame
    (turned ``rotate`` quarter turns counter-clockwise), bit for bit."""
    frames = full_decode(path)
    first = frames[0][0]
    for rgb, t in zip(clip.frames, clip.times):
        _, expected = reference_at(frames, first + t)
        np.testing.assert_array_equal(rgb, np.rot90(expected, rotate))


@pytest.mark.parametrize("name, codec, pix_fmt", FORMATS)
def test_uniform_sampling_takes_the_frame_on_screen_at_each_segment_midpoint(tmp_path, name, codec, pix_fmt):
    path = write_clip(tmp_path / name, codec=codec, pix_fmt=pix_fmt, n=30, rate=10)
    clip = read_clip(path)
    midpoints = [(k + 0.5) * 3.0 / 8 for k in range(8)]
    assert clip.frames.shape == (8, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.size == (64, 48) and clip.duration == pytest.approx(3.0) and clip.notes == ()
    assert [frame_number(f) for f in clip.frames] == [math.floor(t * 10) for t in midpoints]
    np.testing.assert_allclose(clip.times, [math.floor(t * 10) / 10 for t in midpoints])
    assert_reference(path, clip)


#: MPEG-TS (sought by decoding time, landing on any packet) and MPEG-PS (timestamps after
#: a seek frames off) with B-frames, at 25 fps (MPEG-2's rates); the last: one GOP
STREAMS = [("h264.ts", "libx264", {"bf": "3", "g": "12"}), ("mpeg2.ts", "mpeg2video", {"bf": "2", "g": "12"}),
           ("mpeg2.mpg", "mpeg2video", {"bf": "2", "g": "12"}), ("one-gop.ts", "libx264", {"bf": "3"})]


@pytest.mark.parametrize("name, codec, options", STREAMS, ids=[n for n, _, _ in STREAMS])
def test_mpeg_ts_and_ps_with_b_frames_give_the_plain_decodes_frames(tmp_path, name, codec, options):
    path = write_clip(tmp_path / name, codec=codec, n=60, rate=25, options=options)
    frames = full_decode(path)
    starts = [s - frames[0][0] for s, _, _ in frames]
    assert len(frames) == 60 and starts[0] == 0 and not math.isclose(frames[0][0], 0)  # pts start late
    clip = read_clip(path)
    assert clip.duration == pytest.approx(starts[-1] + 0.04)  # the last frame's end
    assert [frame_number(f) for f in clip.frames] == [math.floor((k + 0.5) * 60 / 8) for k in range(8)]
    assert_reference(path, clip)
    for seed in (0, 1):  # other targets: other seeks
        shuffled = read_clip(path, sampling="random", rng=np.random.default_rng(seed))
        assert [frame_number(f) for f in shuffled.frames] == [round(t * 25) for t in shuffled.times]
        assert_reference(path, shuffled)


def test_fixed_fps_sampling_and_its_cap(tmp_path):
    path = write_clip(tmp_path / "c.mp4", n=30, rate=10)
    clip = read_clip(path, fps=4)
    assert len(clip.frames) == 12 and clip.notes == ()
    assert [frame_number(f) for f in clip.frames] == [math.floor((k + 0.5) / 4 * 10) for k in range(12)]
    assert_reference(path, clip)
    capped = read_clip(path, fps=40)  # 120 targets: the first 64
    assert len(capped.frames) == video_io.MAX_FRAMES
    assert "only the first 64" in capped.notes[0]
    assert [frame_number(f) for f in capped.frames] == [math.floor((k + 0.5) / 40 * 10) for k in range(64)]


def test_random_sampling_stays_in_its_segments_and_repeats_with_the_seed(tmp_path):
    path = write_clip(tmp_path / "c.webm", codec="libvpx-vp9", n=40, rate=10)
    picks = []
    for seed in (0, 0, 1):
        clip = read_clip(path, sampling="random", rng=np.random.default_rng(seed))
        width = 4.0 / 8
        for k, (rgb, t) in enumerate(zip(clip.frames, clip.times)):
            assert k * width - 0.1 < t < (k + 1) * width  # the frame on screen at a time inside
            assert frame_number(rgb) == round(t * 10)
        assert_reference(path, clip)
        picks.append(clip.times.tolist())
    assert picks[0] == picks[1] and picks[0] != picks[2]


@pytest.mark.parametrize("name, codec", [("vfr.mp4", "libx264"), ("vfr.mkv", "libx264"),
                                         ("vfr.webm", "libvpx-vp9")])
def test_variable_frame_rate_uses_presentation_times(tmp_path, name, codec):
    pts_ms = [0, 40, 80, 300, 320, 900, 1000, 1500, 1510, 2000]
    path = write_clip(tmp_path / name, codec=codec, n=10, pts_ms=pts_ms)
    clip = read_clip(path)
    assert clip.duration >= 2.0  # from the packets (FFmpeg's MP4 header says 1.68 s here)
    frames = full_decode(path)
    expected = [on_screen(frames, (k + 0.5) * clip.duration / 8) for k in range(8)]
    np.testing.assert_allclose(clip.times, expected)
    assert [frame_number(f) for f in clip.frames] == [pts_ms.index(round(t * 1000)) for t in expected]
    assert_reference(path, clip)
    assert any("repeat" in n for n in clip.notes)  # 0.3 s and 1.5 s hold two targets each


def test_rotation_metadata_turns_frames_upright(tmp_path):
    """A phone's portrait matrix (0 1 -1 0 in ``tkhd``, written here byte by byte) shows the
    stored picture a quarter turn clockwise; PyAV's own display rotation of 90 (counter-
    clockwise) the other way."""
    phone = write_clip(tmp_path / "phone.mp4", n=10)
    set_mp4_rotation(phone, 0, 1, -1, 0)
    clip = read_clip(phone)
    assert clip.size == (48, 64) and clip.frames.shape[1:3] == (64, 48)
    assert_reference(phone, clip, rotate=-1)
    turned_back = np.rot90(clip.frames[0], 1)
    assert frame_number(turned_back) == frame_number(numbered_frame(0)) == 0
    red = clip.frames[0][..., 0].astype(int) - clip.frames[0][..., 1]
    assert red[:8].max() > 150 and red[-8:].max() < 100  # the marker on the left edge is now on top
    ccw = read_clip(write_clip(tmp_path / "ccw.mkv", n=10, rotation=90))
    assert_reference(tmp_path / "ccw.mkv", ccw, rotate=1)


@pytest.mark.parametrize("name, codec, pix_fmt", [("odd.mp4", "libx264", "yuv444p"),
                                                  ("odd.webm", "libvpx-vp9", "yuv420p"),
                                                  ("odd.mkv", "ffv1", "yuv420p")])
def test_odd_sizes_are_kept(tmp_path, name, codec, pix_fmt):
    path = write_clip(tmp_path / name, codec=codec, pix_fmt=pix_fmt, n=20, width=63, height=37)
    clip = read_clip(path, frames=4)
    assert clip.size == (63, 37) and clip.frames.shape == (4, 37, 63, 3)
    assert [frame_number(f) for f in clip.frames] == [2, 7, 12, 17]
    assert_reference(path, clip)


def test_a_clip_shorter_than_its_samples_repeats_frames_and_says_so(tmp_path):
    path = write_clip(tmp_path / "short.mp4", n=3, rate=10)
    clip = read_clip(path)
    assert len(clip.frames) == 8
    assert [frame_number(f) for f in clip.frames] == [0, 0, 0, 1, 1, 2, 2, 2]
    assert clip.notes == ("5 of 8 sampled frames repeat the frame before them (fewer frames than "
                          "samples there; 3 distinct frames)",)
    one = read_clip(write_clip(tmp_path / "one.mp4", n=1), frames=4)
    assert [frame_number(f) for f in one.frames] == [0, 0, 0, 0]


def test_cost_does_not_grow_with_the_duration(tmp_path, monkeypatch):
    """Keyframes every 10 frames: 8 samples decode at most 8 × (a GOP + the reorder window)
    packets, for a 20 s clip as for a 60 s one (a full decode: 200 and 600)."""
    cursors = count_cursors(monkeypatch)
    decoded = []
    for seconds in (20, 60):
        path = write_clip(tmp_path / f"{seconds}.mp4", n=seconds * 10, rate=10,
                          options={"g": "10", "keyint_min": "10", "preset": "ultrafast"})
        clip = read_clip(path)
        assert [frame_number(f) for f in clip.frames] == \
            [math.floor((k + 0.5) * seconds / 8 * 10) % 256 for k in range(8)]
        decoded.append(cursors[-1].decoded)
    assert max(decoded) <= 8 * (10 + 4) and abs(decoded[0] - decoded[1]) <= 8


@pytest.mark.parametrize("make, reason", [
    (lambda d: _cut(write_clip(d / "x.webm", codec="libvpx-vp9", n=30)), "is truncated"),
    (lambda d: _cut(write_clip(d / "x.mp4", n=30)), "truncated, or not a video file"),
    (lambda d: write_no_frames(d / "x.avi"), "has no video frames"),
    (lambda d: write_audio_only(d / "x.mp4"), "has no video stream (audio only)"),
    (lambda d: _bytes(d / "x.mp4", np.random.default_rng(0).bytes(5000)), "not a video file"),
    (lambda d: _bytes(d / "x.mp4", b""), "is empty"),
    (lambda d: _still(d / "x.mp4", "PNG"), "is a still image (PNG)"),
    (lambda d: _still(d / "x.mp4", "JPEG"), "is a still image (JPEG)"),
    (lambda d: _still(d / "x.gif", "GIF"), "is a still GIF image (one frame)"),
    (lambda d: d / "missing.mp4", "video file not found"),
], ids=["truncated-webm", "truncated-mp4", "no-frames", "audio-only", "noise", "empty", "png",
        "jpeg", "one-frame-gif", "missing"])
def test_each_bad_video_is_refused_with_its_reason(tmp_path, make, reason):
    path = make(tmp_path)
    found = check_video(path)
    assert found.problem is not None and reason in found.problem and path.name in found.problem, found
    with pytest.raises(DataError, match=r"x\.(mp4|webm|gif|avi)|missing\.mp4"):
        VIDEO.decode(path, where=str(path))


def _cut(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _still(path: Path, fmt: str) -> Path:
    Image.fromarray(numbered_frame(3)).save(path, fmt)
    return path


def test_a_manifest_quarantines_bad_videos_with_their_reason(tmp_path):
    write_clip(tmp_path / "good.mp4", n=10)
    write_audio_only(tmp_path / "sound.mp4")
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,video,text\nr0,good.mp4,a clip\nr1,sound.mp4,no picture\n")
    m = read_manifest(manifest, required=("video", "text"), quarantine_dir=tmp_path / "q")
    assert [r.id for r in m.records] == ["r0"]
    assert "has no video stream (audio only)" in m.bad_rows[0].reason


def test_a_manifest_checks_each_clip_once_and_sums_up_its_notes_by_kind(tmp_path, monkeypatch, caplog):
    """Five captions of one clip: one decode, its verdict on every row; "5 of 8 …" and
    "3 of 8 …" notes are one kind in the log."""
    import logging
    write_clip(tmp_path / "short.mp4", n=3)
    write_clip(tmp_path / "shorter.mp4", n=2)
    write_audio_only(tmp_path / "sound.mp4")
    calls = []
    check = VIDEO.check
    monkeypatch.setattr(VIDEO, "check", lambda path: calls.append(path) or check(path))
    rows = [f"r{i},short.mp4,caption {i}" for i in range(5)] + ["s0,shorter.mp4,x"] + \
        [f"b{i},sound.mp4,no picture {i}" for i in range(2)]
    (tmp_path / "m.csv").write_text("id,video,text\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="jointspace"):
        m = read_manifest(tmp_path / "m.csv", required=("video", "text"))
    assert sorted(p.name for p in calls) == ["short.mp4", "shorter.mp4", "sound.mp4"]
    assert [r.id for r in m.records] == [f"r{i}" for i in range(5)] + ["s0"]
    assert [b.line for b in m.bad_rows] == [8, 9] and all("audio only" in b.reason for b in m.bad_rows)
    assert len(m.notes) == 6 and m.notes[0][1].startswith("5 of 8") and m.notes[5][1].startswith("6 of 8")
    summary = [r.getMessage() for r in caplog.records if "sampled frames repeat" in r.getMessage()]
    assert len(summary) == 1 and "6 rows N of N sampled frames repeat" in summary[0], summary


def test_size_limits_refuse_8k_max_pixels_and_max_bytes(tmp_path):
    over_8k = write_blank(tmp_path / "8k.mkv", 7680, 4336)
    with pytest.raises(TooLarge, match=r"7680×4336 frames; videos up to 8K"):
        read_clip(over_8k)
    with pytest.raises(TooLarge, match="7696×16"):
        read_clip(write_blank(tmp_path / "wide.mkv", 7696, 16))
    assert read_clip(write_blank(tmp_path / "tall.mkv", 16, 7680)).size == (16, 7680)
    small = write_clip(tmp_path / "c.mp4", n=5)
    with pytest.raises(TooLarge, match="at most 3000 pixels"):
        decode_with_limits(VIDEO, small.read_bytes(), where="upload.mp4", max_pixels=3000)
    assert decode_with_limits(VIDEO, small.read_bytes(), max_pixels=3072).size == (64, 48)
    with pytest.raises(TooLarge, match="at most 100 are read"):
        read_clip(small, max_bytes=100)


def test_bytes_read_like_the_file_and_errors_name_the_source(tmp_path):
    path = write_clip(tmp_path / "c.mkv", n=20)
    from_file, from_bytes = read_clip(path), VIDEO.decode(path.read_bytes(), where="KEY.mkv")
    np.testing.assert_array_equal(from_file.frames, from_bytes.frames)
    np.testing.assert_array_equal(from_file.times, from_bytes.times)
    with pytest.raises(DataError, match=r"^upload\.mp4 is a still image \(PNG\)"):
        VIDEO.decode(_still(tmp_path / "s.png", "PNG").read_bytes(), where="upload.mp4")


def test_sniff_knows_each_container_and_nothing_else(tmp_path):
    heads = {name: write_clip(tmp_path / name, codec=codec, pix_fmt=pix, n=3).read_bytes()[:4096]
             for name, codec, pix in FORMATS}
    for name, head in heads.items():
        expected = "image" if name.endswith(".gif") else "video"  # GIF stays the image plug-in's
        assert sniff(head).name == expected, name
        assert VIDEO.sniff(head) is (expected == "video"), name
    import soundfile
    soundfile.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    assert sniff((tmp_path / "a.wav").read_bytes()).name == "audio"
    assert sniff(_still(tmp_path / "s.png", "PNG").read_bytes()).name == "image"
    assert not VIDEO.sniff(b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00")  # AAC audio in MP4
    assert not VIDEO.sniff(b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00")  # a HEIF photo
    assert not VIDEO.sniff(b"RIFF\x24\x00\x00\x00WAVEfmt ")


def test_preview_is_the_middle_frame_as_a_small_jpeg_and_the_player_the_file(tmp_path):
    import io
    path = write_clip(tmp_path / "c.mp4", n=30)
    shown = VIDEO.preview(path, max_px=64)
    assert (shown.kind, shown.mime) == ("image", "image/jpeg")
    poster = np.asarray(Image.open(io.BytesIO(shown.data)))
    assert poster.shape == (48, 64, 3) and frame_number(poster) == 15
    assert max(Image.open(io.BytesIO(VIDEO.preview(path, max_px=20).data)).size) <= 20
    played = VIDEO.player(path)
    assert (played.kind, played.mime, played.data) == ("video", "video/mp4", path.read_bytes())
    assert VIDEO.player(write_clip(tmp_path / "c.webm", codec="libvpx-vp9", n=3)).mime == "video/webm"
    with pytest.raises(TooLarge):
        VIDEO.player(path, max_bytes=100)
    import inspect  # one bound for every plug-in's player: the base class's
    assert not hasattr(video_plugin, "PREVIEW_BYTES")
    assert inspect.signature(VIDEO.player).parameters["max_bytes"].default is PLAYER_BYTES
    assert inspect.signature(MODALITIES.get("audio").player).parameters["max_bytes"].default \
        is PLAYER_BYTES


def test_the_plugin_is_registered_and_unambiguous(tmp_path):
    assert MODALITIES.get("video") is VIDEO
    assert (VIDEO.is_file, VIDEO.uploadable, VIDEO.default_tower, VIDEO.preview_kind, VIDEO.player_kind) == \
        (True, True, "video_frames", "image", "video")  # a poster on a card, the file in a player
    for suffix in (".mp4", ".M4V", ".mov", ".webm", ".avi", ".mkv"):
        assert modality_for_suffix("a" + suffix) is VIDEO
    assert modality_for_suffix("a.gif").name == "image"
    for key in VIDEO.shard_keys:
        assert modality_for_shard_key(key) is VIDEO
    claimed = [(s, m) for m in MODALITIES.names() for s in MODALITIES.get(m).suffixes]
    assert len({s for s, _ in claimed}) == len(claimed), "a suffix claimed twice"
    warm = VIDEO.sample(tmp_path)
    assert VIDEO.check(warm).problem is None and VIDEO.decode(warm).frames.shape == (8, 32, 32, 3)
