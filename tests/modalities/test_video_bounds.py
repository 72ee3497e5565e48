"""The video reader's bounds on damaged and costly files (issue 24 review): whatever a file
holds, reading it returns a clip or raises a :class:`DataError` naming it (a manifest
quarantines the row, a server answers 400), and decoding one clip costs a bounded number
of pixels, every decoded frame within the size bounds."""
from __future__ import annotations

import random
import numpy as np
import pytest

pytest.importorskip("av")

from video_files import count_cursors, frame_number, full_decode, write_clip, write_latin1_title, write_sizes  # noqa: E402

from jointspace.errors import DataError  # noqa: E402
from jointspace.modalities import TooLarge, video_io, video_seek  # noqa: E402
from jointspace.modalities.video import VIDEO  # noqa: E402
from jointspace.modalities.video_io import check_video, read_clip  # noqa: E402


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_latin1_metadata_is_read_with_replacement_characters(tmp_path, suffix):
    path = write_latin1_title(tmp_path / f"tagged{suffix}")
    clip = read_clip(path, frames=5)
    assert [frame_number(f) for f in clip.frames] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(clip.frames[2], full_decode(path)[2][1])
    assert check_video(path).problem is None
    assert VIDEO.decode(path.read_bytes(), where="upload" + suffix).frames.shape == (8, 48, 64, 3)


def test_bit_flipped_files_give_clips_or_data_errors_only(tmp_path):
    """50 small MP4s with 1–20 bytes overwritten (a fifth also cut short): each is read or
    refused with a DataError naming it — never another exception."""
    sources = [write_clip(tmp_path / f"s{i}.mp4", n=20, options=opts).read_bytes()
               for i, opts in enumerate([{"g": "5"}, {"bf": "2"}])]
    rnd = random.Random(7)
    outcomes = {"read": 0, "refused": 0}
    for k in range(50):
        data = bytearray(rnd.choice(sources))
        for _ in range(rnd.randint(1, 20)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        if rnd.random() < 0.2:
            data = data[:rnd.randrange(len(data))]
        try:
            read_clip(bytes(data), where=f"flipped-{k}.mp4")
            outcomes["read"] += 1
        except DataError as e:
            assert f"flipped-{k}.mp4" in str(e), e
            outcomes["refused"] += 1
    assert outcomes["read"] and outcomes["refused"], outcomes


def test_any_other_exception_while_decoding_is_a_data_error_naming_the_file(tmp_path, monkeypatch):
    path = write_clip(tmp_path / "c.mp4", n=10)

    def broken(self, t):
        raise IndexError("list index out of range")

    monkeypatch.setattr(video_io.Cursor, "frame_at", broken)
    with pytest.raises(DataError, match=r"^.*c\.mp4 cannot be read as a video: its data is damaged \("
                                        r"IndexError in the decoder: list index out of range\)"):
        read_clip(path)
    assert "c.mp4" in check_video(path).problem


def test_a_stream_that_grows_mid_way_is_refused_though_no_sampled_frame_is_large(tmp_path):
    """Frames 4–6 are 128×96, the rest 64×48; two targets (0.3 s, 0.9 s) take frames 3
    and 9, and decoding forward from 3 to 9 decodes the large ones."""
    sizes = [(64, 48)] * 4 + [(128, 96)] * 3 + [(64, 48)] * 5
    path = write_sizes(tmp_path / "grows.mkv", sizes)
    assert [(f.shape[1], f.shape[0]) for _, f, _ in full_decode(path)] == sizes
    assert [frame_number(f) for f in read_clip(path, frames=2).frames] == [3, 9]
    with pytest.raises(TooLarge, match=r"grows\.mkv has 128×96 frames; at most 6144 pixels"):
        read_clip(path, frames=2, max_pixels=64 * 48 * 2)
    assert read_clip(path, frames=2, max_pixels=128 * 96).size == (64, 48)


def test_the_decoded_pixels_of_a_clip_are_bounded(tmp_path, monkeypatch):
    """A clip that decodes P pixels is read under a budget of P and refused under P − 1."""
    cursors = count_cursors(monkeypatch)
    path = write_clip(tmp_path / "c.mp4", n=60, options={"g": "10", "bf": "0"})
    read_clip(path)
    pixels = cursors[-1].pixels
    assert pixels % (64 * 48) == 0 and 8 <= pixels // (64 * 48) <= 60
    assert video_seek.MAX_DECODED_PIXELS == 10_000_000_000
    monkeypatch.setattr(video_seek, "MAX_DECODED_PIXELS", pixels)
    assert len(read_clip(path).frames) == 8
    monkeypatch.setattr(video_seek, "MAX_DECODED_PIXELS", pixels - 1)
    with pytest.raises(TooLarge, match=r"c\.mp4: sampling it needs more than [\d.e+]+ pixels decoded"):
        read_clip(path)


def test_an_mpeg_ps_file_is_read_from_its_start_within_the_packet_bound(tmp_path, monkeypatch):
    """MPEG-PS is never sought mid-file; one longer than MAX_DECODED frames is refused."""
    path = write_clip(tmp_path / "c.mpg", codec="mpeg2video", n=60, rate=25, options={"bf": "2", "g": "12"})
    seeks = []
    real = video_seek.Cursor._seek_to
    monkeypatch.setattr(video_seek.Cursor, "_seek_to", lambda self, at: seeks.append(at) or real(self, at))
    clip = read_clip(path, frames=4)
    import av
    with av.open(str(path)) as container:
        first = next(p for p in container.demux(video=0) if p.size)
    assert seeks == [min(first.pts, first.dts)]  # the cursor's one seek: back to the first packet
    assert [frame_number(f) for f in clip.frames] == [7, 22, 37, 52]
    monkeypatch.setattr(video_io, "MAX_DECODED", 40)
    with pytest.raises(TooLarge, match=r"c\.mpg is MPEG-PS, decoded from its start .* more than 40 frames"):
        read_clip(path)
