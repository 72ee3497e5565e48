"""The ``data`` verb: the built-in dataset, or shards from a manifest."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import Verb, column_options

EXAMPLES = {
    "data": ("jointspace data shapes --out data/shapes --n 7000\n"
             "  jointspace data export data/shapes/train.csv --format webdataset --out shards/train "
             "--shard-size 1000\n"
             "  jointspace data shapes --out data/shapes_audio --n 7000 --audio\n"
             "  jointspace data shapes --out data/shape_clips --n 3000 --video"),
}


def add_verbs(verb: Verb) -> None:
    d = verb("data", "make data: the built-in dataset, or shards from a manifest", EXAMPLES["data"])
    kinds = d.add_subparsers(dest="dataset", required=True, metavar="KIND")
    g = kinds.add_parser("shapes", help="generate the built-in dataset (images + CSV manifests)")
    g.add_argument("--out", required=True, type=Path, help="folder to write")
    g.add_argument("--n", type=int, default=7000, help="scenes in all splits together")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--image-size", type=int, default=64)
    g.add_argument("--audio", action="store_true",
                   help="also synthesise each scene's sound (16 kHz WAV) and an audio column")
    g.add_argument("--shifted", action="store_true",
                   help="also write test_shifted.csv: the test scenes on photographic backgrounds, "
                        "rescaled, blurred, noisy, as JPEG (a distribution-shifted test split)")
    g.add_argument("--video", action="store_true",
                   help="write clips instead of stills: shapes that move, grow, shrink, change "
                        "colour or appear in turn (H.264 MP4, --frames frames of --image-size px at "
                        "8 fps, a PNG poster frame), 2 captions per clip, and minimal pairs in the "
                        "test split (same frames, another order; the pair column)")
    g.add_argument("--frames", type=int, help="frames per clip, with --video (6–64; default 12)")
    x = kinds.add_parser("export", help="write a manifest and its files as WebDataset or Parquet shards")
    x.add_argument("manifest", type=Path)
    x.add_argument("--format", choices=["webdataset", "parquet"], default="webdataset")
    x.add_argument("--out", required=True, type=Path, help="folder for the shards")
    x.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    column_options(x)


def run_data(args: argparse.Namespace) -> None:
    if args.dataset == "export":
        _export(args)
        return
    if args.video:
        _video(args)
        return
    if args.frames is not None:
        from ..errors import ConfigError
        raise ConfigError("--frames is the length of a clip: it needs --video")
    from ..data.shapes import ShapesSpec, write_shapes
    paths = write_shapes(args.out, ShapesSpec(n=args.n, seed=args.seed, image_size=args.image_size,
                                               audio=args.audio, shifted=args.shifted))
    for split, path in paths.items():
        print(f"{split}: {path}")


def _video(args: argparse.Namespace) -> None:
    from ..errors import ConfigError
    if args.audio or args.shifted:
        raise ConfigError("--video writes a dataset of its own: it does not combine with "
                          "--audio or --shifted")
    from ..data.video_shapes import VideoSpec, count_pairs, write_video_shapes
    spec = VideoSpec(n=args.n, seed=args.seed, frame_size=args.image_size,
                     frames=12 if args.frames is None else args.frames)
    for split, path in write_video_shapes(args.out, spec).items():
        print(f"{split}: {path}")
    print(f"{count_pairs(spec)} minimal pairs in the test split (its pair column)")


def _export(args: argparse.Namespace) -> None:
    from ..data.export import export_manifest
    from .common import columns
    report = export_manifest(args.manifest, args.out, format=args.format,
                             shard_size=args.shard_size, columns=columns(args))
    print(f"{report.samples} samples in {len(report.shards)} shards: {args.out}"
          + (f" ({len(report.skipped)} rows not exported: {args.out / 'export-quarantine.jsonl'})"
             if report.skipped else ""))
    if report.shards:
        first, last = report.shards[0], report.shards[-1]
        print(f"train with: --data '{args.out}/{{{first.stem}..{last.stem}}}{first.suffix}'")


RUN = {"data": run_data}
