"""The decoder's walk over one video stream for :func:`~.video_io.read_clip`: the frame on
screen at each of a clip's target times (ascending), reached by keyframe seeks and
forward decoding, decoding fully only what the wanted frames need.

For a target ``t`` (in the stream's time_base): seek if the last keyframe at or before
``t`` (from the container's index) lies beyond what has been read, else read on; with no
index covering ``t``, seek if ``t`` is more than :attr:`Cursor.forward_limit` ahead
(1 s, raised to a GOP's span when a seek lands behind the position it left). Packets are
demuxed until one whose decoding time is past ``t`` — none after it can show before
``t`` — so the wanted frame's pts is known from the packets: the largest at or before
``t``. A packet whose frame a later-showing packet read since the seek replaces before
the next target is decoded with ``skip_frame = NONREF`` (if no other frame refers to it,
it is skipped; the frames that remain decode exactly as in a full decode), the rest in
full. A seek that lands after ``t`` is retried further back.

The start is not sought by the first frame's pts: a demuxer that seeks by decoding time
(MPEG-TS/PS) would land past the first keyframe of a stream with B-frames. The cursor
seeks to the first packet's lowest timestamp and checks that the packet it reads first
is the file's first packet (else further back); only then is it *at the start*, where
the first frame that decodes is the first frame. A container in which timestamps after
a seek are not exact (:data:`READ_FROM_START`) is never sought mid-file.

Every decoded frame is checked against the size bounds (a stream may grow mid-way), and
the pixels decoded for one clip are bounded by :data:`MAX_DECODED_PIXELS`.
"""
from __future__ import annotations

import bisect
from collections import deque
from typing import Any

from ..errors import DataError
from .base import TooLarge

MAX_DECODED = 20_000   # packets decoded (or read ahead) for one clip
#: pixels decoded for one clip (every frame the decoder puts out, sampled or not): 10⁹·10,
#: about 4,800 1080p frames, 1,200 4K or 300 8K ones — some 35 s of one core for H.264
#: here (about 300 Mpx/s); a clip needing more is refused (:class:`TooLarge`)
MAX_DECODED_PIXELS = 10_000_000_000
MAX_SIDE, MAX_PIXELS = 7680, 7680 * 4320   # 8K: the largest frame read
INDEX_WALK = 4096      # index entries looked back through for a keyframe
REORDER = 16           # the most frames a decoder holds back to put them in order (H.264's bound)
#: demuxers whose timestamps after a seek are not those of a read from the start, so a
#: clip in them is decoded forward from its start (at most MAX_DECODED packets): MPEG-PS
#: (a PES's timestamp belongs to the frame starting in it; a seek lands mid-frame and the
#: timestamps FFmpeg then interpolates are frames off)
READ_FROM_START = ("mpeg",)


def check_size(width: int, height: int, max_pixels: int | None, name: str) -> None:
    """:class:`TooLarge` for a frame above 8K or over ``max_pixels``."""
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise TooLarge(f"{name} has {width}×{height} frames; videos up to 8K (7680×4320) are read")
    if max_pixels is not None and width * height > max_pixels:
        raise TooLarge(f"{name} has {width}×{height} frames; at most {max_pixels} pixels a frame "
                       "are accepted (send a smaller video)")


def packet_key(packet: Any) -> tuple:
    """What tells a packet from its neighbours: its timestamps and size."""
    return packet.pts, packet.dts, packet.size


class Cursor:
    """Frames of ``stream`` at ascending target times; ``notes`` on what it did. ``first``
    is :func:`packet_key` of the stream's first packet; ``seekable`` False: never seek
    mid-file (:data:`READ_FROM_START`); ``max_pixels``: the bound on every decoded frame."""

    def __init__(self, av: Any, container: Any, stream: Any, start: int, name: str,
                 targets: list[int], *, first: tuple, seekable: bool = True,
                 max_pixels: int | None = None) -> None:
        self.av, self.container, self.stream, self.start, self.name = av, container, stream, start, name
        self.targets = sorted(targets)  # every time that will be asked for
        self.first, self.seekable, self.max_pixels = first, seekable, max_pixels
        self.codec = stream.codec_context
        self.notes: list[str] = []
        self.decoded = self.pixels = 0
        self.forward_limit = max(1, round(1 / stream.time_base))  # 1 s
        self._skip = "DEFAULT"
        self._rewind()

    def _restart(self, offset: int) -> None:
        """Seek to the keyframe at or before ``offset`` (the file's start for an offset at
        or before it, or when the container is not sought mid-file) and forget what was read."""
        if offset <= self.start or not self.seekable:
            self._rewind()
        else:
            self._seek_to(offset)

    def _seek_to(self, offset: int) -> None:
        self.container.seek(offset, stream=self.stream)
        self.codec.flush_buffers()
        self.packets = self.container.demux(self.stream)
        self.pending: deque = deque()     # demuxed, not decoded yet
        self.seen: list[int] = []         # pts of the packets demuxed since the seek, sorted
        self.out: deque = deque()         # decoded frames not taken yet (presentation order)
        self.prev: Any = None             # the last decoded frame at or before the target
        self.pos: int | None = None       # decoding time of the last packet demuxed
        self.demuxed_all = self.decoded_all = self.at_start = False

    def _rewind(self) -> None:
        """Back to the file's first packet: a seek to its lowest timestamp, then further
        back while the first packet read is another one (nothing is decoded before it, so
        the first frame that decodes is the plain decode's first)."""
        low = min(t for t in self.first[:2] + (self.start,) if t is not None)
        for offset in (low, low - 10 * self.forward_limit, -(1 << 62)):
            try:
                self._seek_to(offset)
                packet = next((p for p in self.packets if p.size), None)
            except self.av.error.FFmpegError:
                continue
            if packet is not None and packet_key(packet) == self.first:
                self._keep(packet)
                self.at_start = True
                return
        raise DataError(f"{self.name} cannot be read again from its start (its container does "
                        "not seek back to its first frame)")

    def frame_at(self, t: int) -> Any:
        """The decoded frame on screen at ``t``: the last one starting at or before it (the
        first frame for a ``t`` before it)."""
        if self._should_seek(t):
            self._seek(t)
        back = self.forward_limit
        while True:
            self._look_ahead(t)
            i = bisect.bisect_right(self.seen, t)
            wanted = self.seen[i - 1] if i else None
            found = None if wanted is None and not self.at_start else self._decode_until(t, wanted)
            if found is not None:
                return found
            self._restart(t - back)  # landed after t: further back
            back *= 2

    def _position(self) -> int:
        return self.pos if self.pos is not None else self.start

    def _should_seek(self, t: int) -> bool:
        pos = self._position()
        if t <= pos or not self.seekable:
            return False  # already read past it
        key = self._keyframe_before(t)
        if key is not None:
            return key > pos
        return t - pos > self.forward_limit

    def _seek(self, t: int) -> None:
        left = self._position()
        self._restart(t)
        self._look_ahead(t)
        landed = self.pending[0].dts if self.pending and self.pending[0].dts is not None else None
        if landed is not None and landed <= left:  # the seek went back: the GOP is that long
            self.forward_limit = max(self.forward_limit, t - landed)

    def _keyframe_before(self, t: int) -> int | None:
        """The timestamp of the index's last keyframe at or before ``t``, or None when the
        index does not reach ``t`` (not loaded, or built while reading)."""
        entries = self.stream.index_entries
        n = len(entries)
        if n == 0 or entries[n - 1].timestamp < t:
            return None
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if entries[mid].timestamp <= t:
                lo = mid + 1
            else:
                hi = mid
        for i in range(lo - 1, max(lo - 1 - INDEX_WALK, -1), -1):
            if entries[i].is_keyframe:
                return entries[i].timestamp
        return None

    def _look_ahead(self, t: int) -> None:
        """Demux until a packet decoded after ``t`` (no later packet shows at or before it)."""
        while not self.demuxed_all and (self.pos is None or self.pos <= t):
            self._demux_one()

    def _demux_one(self) -> None:
        packet = next(self.packets, None)
        if packet is None or not packet.size:
            self.demuxed_all = True
            return
        self._keep(packet)

    def _keep(self, packet: Any) -> None:
        """Queue a demuxed packet for decoding and note its times."""
        self.pending.append(packet)
        if packet.pts is not None:
            bisect.insort(self.seen, packet.pts)
        if packet.dts is not None:
            self.pos = packet.dts
        elif len(self.seen) > REORDER:  # no decoding time (Matroska's first packets …): a
            # decoder shows frames in pts order at most REORDER packets late, so no later
            # packet shows before the REORDER+1-th largest pts read so far
            self.pos = max(self.seen[-REORDER - 1], self.pos if self.pos is not None else 0)
        if len(self.pending) > MAX_DECODED:
            raise TooLarge(f"{self.name}: more than {MAX_DECODED} packets lie between a keyframe "
                           "and a sampled frame; such videos are not read")

    def _decode_until(self, t: int, wanted: int | None) -> Any:
        """Decode until the frame on screen at ``t`` is known; None if none is at or before
        ``t`` since a seek that did not start at the beginning."""
        while True:
            while self.out and (self.out[0].pts is None or self.out[0].pts <= t):
                frame = self.out.popleft()
                if frame.pts is not None:
                    self.prev = frame
            if self.prev is not None and (self.prev.pts == wanted or self.out or self.decoded_all):
                return self.prev
            if self.prev is None and (self.out or self.decoded_all):
                if not self.at_start:
                    return None
                if self.out:
                    return self.out[0]
                raise DataError(f"{self.name} has no video frames that decode")
            self._feed()

    def _needed(self, packet: Any) -> bool:
        """Whether ``packet``'s frame may be on screen at a target: not if a packet read
        since the seek shows after it and at or before the first target at or after it
        (nor if no target is after it). A keyframe is always decoded."""
        if packet.is_keyframe or packet.pts is None:
            return True
        k = bisect.bisect_left(self.targets, packet.pts)
        if k == len(self.targets):
            return False
        i = bisect.bisect_right(self.seen, packet.pts)
        return not (i < len(self.seen) and self.seen[i] <= self.targets[k])

    def _feed(self) -> None:
        """Decode the next packet (skipping a non-reference frame no target can show),
        or flush the decoder at the end."""
        if not self.pending and not self.demuxed_all:
            self._demux_one()
        if not self.pending:
            self.out.extend(self._decode(None))
            self.decoded_all = True
            return
        packet = self.pending.popleft()
        mode = "DEFAULT" if self._needed(packet) else "NONREF"
        if mode != self._skip:
            self.codec.skip_frame = self._skip = mode
        self.decoded += 1
        if self.decoded > MAX_DECODED:
            raise TooLarge(f"{self.name}: sampling it needs more than {MAX_DECODED} frames decoded "
                           "(keyframes too far apart); such videos are not read")
        self.out.extend(self._decode(packet))

    def _decode(self, packet: Any) -> list:
        """The frames decoding ``packet`` (None: flush) puts out, each checked against the
        size bounds and counted against :data:`MAX_DECODED_PIXELS`."""
        try:
            frames = list(self.codec.decode(packet))
        except self.av.error.FFmpegError as e:
            at = "at its end" if packet is None or packet.pts is None else \
                f"at {float(packet.pts * self.stream.time_base):.2f} s"
            raise DataError(f"{self.name} cannot be decoded {at} "
                            f"({getattr(e, 'strerror', None) or e})") from None
        for frame in frames:
            check_size(frame.width, frame.height, self.max_pixels, self.name)
            self.pixels += frame.width * frame.height
        if self.pixels > MAX_DECODED_PIXELS:
            raise TooLarge(f"{self.name}: sampling it needs more than {MAX_DECODED_PIXELS:.3g} pixels "
                           "decoded (large frames with keyframes far apart); such videos are not read")
        return frames
