"""Video decoding: jointspace's ``read_clip`` (8 frames, uniform) against plain PyAV loops
that decode every frame, on 10-second 640×360 H.264 clips (issue 24 "Must show").

Clips: ``--clips`` synthetic scenes (a textured background panning, moving coloured
squares) of ``--seconds`` s at ``--fps`` encoded by libx264 with its defaults (preset
medium, keyint 250: one group of pictures per 10 s clip at 25 fps, B-frames), written
into ``--work`` first, not timed. Cases, each in a fresh subprocess per round so that its
peak RSS is its own: the child's ``VmHWM`` from ``/proc/self/status``, which includes
FFmpeg's buffers (not ``getrusage``'s max RSS, which a child inherits from its parent
over ``exec``); the round order alternates because this machine's speed drifts:

* ``ours``: :func:`jointspace.modalities.video_io.read_clip` (keyframe seeks, forward
  decoding with non-reference frames before each target skipped, 8 RGB conversions);
* ``full``: the plain loop — ``[f.to_ndarray(format="rgb24") for f in c.decode(v)]`` (every
  frame decoded and converted, as ``torchvision.io.read_video`` does), then the frame on
  screen at each of the same 8 segment midpoints;
* ``full-lazy``: every frame decoded, only the 8 picked converted (the best a loop that
  decodes every frame can do).

Before timing, every clip's 8 frames from ``read_clip`` are checked bit for bit against
``full``'s frames at the same time (``Clip.times`` count from the clip's first frame, so
the full decode's times are taken from its first frame too). Memory: each child's RSS after its imports (``ours``
imports jointspace, and so torch), and its peak RSS (``VmHWM``, reset after the imports
where the kernel allows it) over one warm-up clip and the timed loop; the difference is
what decoding took.

    python bench/video_decode.py                      # 20 clips, 3 rounds
    python bench/video_decode.py --clips 10 --rounds 5 --work /tmp/vclips
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_clip(path: Path, seed: int, seconds: int, fps: int, width: int, height: int) -> None:
    """A panning textured background with five moving squares, libx264 defaults."""
    import av

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:2 * height, 0:2 * width]
    background = np.stack([xx * 255 // (2 * width), yy * 255 // (2 * height),
                           ((xx // 40 + yy // 40) % 2) * 120 + 60], -1)
    background = (background + rng.integers(-12, 12, background.shape)).clip(0, 255).astype(np.uint8)
    squares = [(rng.uniform(0, width), rng.uniform(0, height), rng.uniform(-4, 4), rng.uniform(-3, 3),
                int(rng.integers(20, 60)), rng.integers(0, 255, 3)) for _ in range(5)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            ox = int(width / 2 + width / 2 * np.sin(i / 90 + seed))
            oy = int(height / 2 + height / 2 * np.sin(i / 70 + seed))
            rgb = background[oy:oy + height, ox:ox + width].copy()
            for x, y, dx, dy, r, colour in squares:
                cx, cy = int(x + dx * i) % width, int(y + dy * i) % height
                rgb[max(0, cy - r):cy + r, max(0, cx - r):cx + r] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def midpoints(starts: list[float], end: float, frames: int) -> list[int]:
    """Index of the frame on screen at each segment midpoint (``starts`` ascending)."""
    first = starts[0]
    picked = []
    for k in range(frames):
        t = first + (k + 0.5) * (end - first) / frames
        picked.append(max(0, int(np.searchsorted(starts, t + 1e-9, side="right")) - 1))
    return picked


def full(path: Path, frames: int) -> list[np.ndarray]:
    """The plain loop: decode and convert every frame, then pick."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        decoded = [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(stream)]
        step = 1 / float(stream.guessed_rate)
    starts = [t for t, _ in decoded]
    return [decoded[i][1] for i in midpoints(starts, starts[-1] + step, frames)]


def full_lazy(path: Path, frames: int) -> list[np.ndarray]:
    """Decode every frame, keep the undecoded-to-RGB frames, convert the 8 picked ones."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        kept = [f for f in c.decode(stream)]
        step = 1 / float(stream.guessed_rate)
        starts = [float(f.pts * f.time_base) for f in kept]
        return [kept[i].to_ndarray(format="rgb24") for i in midpoints(starts, starts[-1] + step, frames)]


def ours(path: Path, frames: int) -> list[np.ndarray]:
    from jointspace.modalities.video_io import read_clip

    return list(read_clip(path, frames=frames).frames)


CASES = {"ours": ours, "full": full, "full-lazy": full_lazy}


def run_case_here(case: str, clips: list[Path], frames: int) -> dict:
    """Time one case over all clips (after one warm-up clip) in this process."""
    from _machine import reset_peak, rss_now, rss_peak_since_reset

    import av  # noqa: F401  (the imports before the baseline)
    if case == "ours":
        import jointspace.modalities.video_io  # noqa: F401
    fn = CASES[case]
    base, reset = rss_now(), reset_peak()
    fn(clips[0], frames)
    t0 = time.perf_counter()
    for path in clips:
        fn(path, frames)
    seconds = time.perf_counter() - t0
    return {"case": case, "clips_per_s": len(clips) / seconds, "seconds": seconds,
            "rss_base_mb": base / 2**20, "rss_peak_mb": rss_peak_since_reset() / 2**20,
            "peak_reset": reset}


def run_case(case: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--case", case, "--work", str(args.work), "--frames", str(args.frames)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_equal(clips: list[Path], frames: int) -> int:
    """Bit-for-bit check of read_clip's frames against the full decode's at the same time
    from the first frame (``Clip.times`` are relative to it; a stream's first pts need not
    be 0); returns the frames compared."""
    import av
    from jointspace.modalities.video_io import read_clip

    compared = 0
    for path in clips:
        clip = read_clip(path, frames=frames)
        with av.open(str(path)) as c:
            decoded = [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24"))
                       for f in c.decode(video=0) if f.pts is not None]
        origin = decoded[0][0]
        by_time = {round(t - origin, 6): rgb for t, rgb in decoded}
        for rgb, t in zip(clip.frames, clip.times):
            expected = by_time.get(round(float(t), 6))
            if expected is None:
                raise SystemExit(f"{path.name}: read_clip's frame at {t:.3f} s (from the first frame, "
                                 f"at {origin:.3f} s) starts no frame of the full decode")
            if not np.array_equal(rgb, expected):
                raise SystemExit(f"{path.name}: the frame at {t:.3f} s differs from the full decode's")
            compared += 1
    return compared


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--size", default="640x360")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--work", type=Path)
    p.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)  # a child's one case
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.case:
        clips = sorted(args.work.glob("clip-*.mp4"))
        print(json.dumps(run_case_here(args.case, clips, args.frames)))
        return
    import av

    args.work = args.work or Path(tempfile.mkdtemp(prefix="bench-video-"))
    args.work.mkdir(parents=True, exist_ok=True)
    width, height = (int(x) for x in args.size.split("x"))
    t0 = time.perf_counter()
    for i in range(args.clips):
        path = args.work / f"clip-{i:03d}.mp4"
        if not path.is_file():
            write_clip(path, i, args.seconds, args.fps, width, height)
    clips = sorted(args.work.glob("clip-*.mp4"))[:args.clips]
    with av.open(str(clips[0])) as c:
        v = c.streams.video[0]
        keys = sum(1 for pkt in c.demux(v) if pkt.is_keyframe and pkt.size)
    print(f"{len(clips)} clips of {args.seconds} s, {width}×{height}, {args.fps} fps, libx264 defaults "
          f"({keys} keyframe(s) in the first; {time.perf_counter() - t0:.0f} s to write): {args.work}")
    print(f"pixel check: {check_equal(clips, args.frames)} sampled frames bit-equal to the full decode's")
    results: dict[str, list[dict]] = {case: [] for case in CASES}
    for r in range(args.rounds):
        order = list(CASES) if r % 2 == 0 else list(reversed(CASES))
        for case in order:
            results[case].append(run_case(case, args))
    print(f"\n{'case':<10} {'clips/s (median)':>17} {'per round':>24} {'RSS after imports MB':>21} "
          f"{'peak RSS MB':>12} {'peak - imports MB':>18}")
    for case, rows in results.items():
        rates = [row["clips_per_s"] for row in rows]
        print(f"{case:<10} {statistics.median(rates):>17.2f} {' '.join(f'{x:.2f}' for x in rates):>24} "
              f"{max(row['rss_base_mb'] for row in rows):>21.0f} {max(row['rss_peak_mb'] for row in rows):>12.0f} "
              f"{max(row['rss_peak_mb'] - row['rss_base_mb'] for row in rows):>18.0f}")
    if not all(row["peak_reset"] for rows in results.values() for row in rows):
        print("(the kernel refused to reset VmHWM: peaks include the imports and the warm-up)")
    for ref in ("full", "full-lazy"):
        ratios = [o["clips_per_s"] / f["clips_per_s"] for o, f in zip(results["ours"], results[ref])]
        print(f"ours / {ref}: median {statistics.median(ratios):.2f}× (rounds: "
              f"{', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
