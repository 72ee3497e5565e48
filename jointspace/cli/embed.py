"""The ``embed`` verb: a source of any size into Parquet parts, on Ray."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import Verb

#: ``jointspace embed`` embeds images unless ``--modality`` says otherwise (its documented default)
USER_FACING_DEFAULTS = ("image",)
EXAMPLES = {
    "embed": ("jointspace embed runs/m --data 'shards/{00000..00099}.tar' --out runs/emb\n"
              "  jointspace embed runs/m --data data/shapes/test.csv --out runs/emb --workers 2\n"
              "  jointspace embed runs/m --data /shared/shards/*.tar --out /shared/emb "
              "--ray-address ray://head:10001\n"
              "  jointspace index runs/m runs/emb --collection runs/col   # the vectors, as they are"),
}


def add_verbs(verb: Verb) -> None:
    e = verb("embed", "embed a source of any size into Parquet parts, on Ray", EXAMPLES["embed"])
    e.add_argument("model", type=Path, help="model folder")
    e.add_argument("--data", required=True, help="shards (file, glob, brace range, folder) or a manifest")
    e.add_argument("--out", required=True, type=Path, help="folder for part-*.parquet")
    e.add_argument("--modality", default="image", help="which items to embed (default: image)")
    e.add_argument("--ray-address", help="a Ray cluster (default: a local Ray when ray is installed, else this process)")
    e.add_argument("--workers", type=int, default=2, help="model actors (default: 2)")
    e.add_argument("--batch-size", type=int, default=256, help="items per forward pass")
    e.add_argument("--part-size", type=int, default=10_000, help="manifest rows per part")


def run_embed(args: argparse.Namespace) -> None:
    from ..bulk_embed import embed

    report = embed(args.model, args.data, args.out, modality=args.modality,
                   ray_address=args.ray_address, workers=args.workers, batch_size=args.batch_size,
                   part_size=args.part_size)
    rate = report.items / max(1e-9, report.seconds - report.startup_seconds)
    print(f"{report.parts} parts in {report.out} ({report.written} written now, "
          f"{report.parts - report.written} already there): {report.items} items, "
          f"{report.quarantined} quarantined; {report.seconds:.1f} s"
          + (f", Ray start-up {report.startup_seconds:.1f} s, {rate:.0f} items/s after it"
             if report.startup_seconds > 0 else f", {rate:.0f} items/s"))
    if report.redone:
        more = len(report.redone) - 3
        shown = ", ".join(report.redone[:3]) + (f" and {more} more" if more > 0 else "")
        print(f"redone because their input changed since they were written: {shown}")
    if report.removed:
        print(f"removed {report.removed} parts beyond the manifest's rows (it has fewer now)")
    if report.problems:
        print(f"first problem: {report.problems[0]['key']}: {report.problems[0]['reason']}")
    print(f"next: jointspace index {args.model} {args.out} --collection COLLECTION")


RUN = {"embed": run_embed}
