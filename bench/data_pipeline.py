"""Is the reader the bottleneck? Shard and manifest readers against a training step, and Ray
``embed`` against single-process ``encode``.

One run on the demo's data (``--n`` shapes scenes, 64 px) exported to WebDataset and
Parquet shards of ``--shard-size``:

1. samples/s delivered to a training loop by a DataLoader with ``--workers`` workers
   and the demo model's towers (image decode + resize, MiniLM tokenisation):
   the manifest reader (``PairDataset`` + the step sampler), the WebDataset stream
   and the Parquet stream (``ShardStream``), ``--samples`` each;
2. the training step's own samples/s on the demo config (convnet image tower,
   locked MiniLM computed in the step, as on streamed data), batch ``--batch``;
3. ``jointspace embed`` (Ray Data, ``--ray-workers`` actors) against one process
   calling ``model.encode`` on the same images; Ray's start-up time is reported apart.

Target (issue 12): each shard reader ≥ 3× the step's consumption with 2 workers.

    python bench/data_pipeline.py                    # 20,000 scenes
    python bench/data_pipeline.py --n 5000 --samples 3000
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader


def drain(loader, samples: int) -> tuple[float, float]:
    """``(samples/s over samples after the first batch, seconds to the first batch)``."""
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)
    first_s = time.perf_counter() - t0
    size = len(next(iter(v for k, v in first.items() if not k.startswith("_"))))
    seen, t = 0, time.perf_counter()
    for batch in it:
        seen += size
        if seen >= samples:
            break
    return seen / (time.perf_counter() - t), first_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--samples", type=int, default=8_000)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--ray-workers", type=int, default=2)
    p.add_argument("--embed-images", type=int, default=5000)
    p.add_argument("--work", type=Path)
    args = p.parse_args()

    from jointspace.data.export import export_manifest
    from jointspace.data.manifest import read_manifest
    from jointspace.data.pairs import PairDataset
    from jointspace.data.shapes import ShapesSpec, write_shapes
    from jointspace.data.shards import list_shards
    from jointspace.data.stream import ShardStream, collate_stream
    from jointspace.demo import demo_config
    from jointspace.model import JointModel
    from jointspace.train.sampler import StepBatchSampler
    from jointspace.train.step import build_optimizer, train_step, training_objectives

    torch.set_num_threads(2)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-data-"))
    data = work / "shapes"
    if not (data / "train.csv").is_file():
        write_shapes(data, ShapesSpec(n=args.n, seed=0, fractions=(0.9, 0.05, 0.05)))
    for fmt in ("webdataset", "parquet"):
        if not (work / fmt).is_dir():
            export_manifest(data / "train.csv", work / fmt, format=fmt, shard_size=args.shard_size)
    run = demo_config(["model.towers.text={name: minilm, trainable: none}"])
    model = JointModel(run.model)
    fields = ["image", "text"]
    manifest = read_manifest(data / "train.csv")
    print(f"{len(manifest)} training pairs; shards of {args.shard_size}; {args.workers} workers, "
          f"batch {args.batch}, {os.cpu_count()} cores")

    rates = {}
    dataset = PairDataset(manifest.records, model.towers, fields)
    sampler = StepBatchSampler(len(dataset), args.batch, 0, 10 ** 9)
    rates["manifest (PNG files + CSV)"] = drain(DataLoader(
        dataset, batch_sampler=sampler, collate_fn=dataset.collate, num_workers=args.workers),
        args.samples)
    for fmt, spec in (("webdataset", f"{work}/webdataset/*.tar"), ("parquet", str(work / "parquet"))):
        stream = ShardStream(list_shards(spec), fields, towers=model.towers)
        rates[f"{fmt} stream"] = drain(DataLoader(
            stream, batch_size=args.batch, num_workers=args.workers,
            collate_fn=collate_stream(dataset.collate)), args.samples)

    objectives = training_objectives(run.model)
    optimizer = build_optimizer(model, 1e-3, 0.1)
    batches = DataLoader(dataset, batch_sampler=StepBatchSampler(len(dataset), args.batch, 0,
                                                                 args.steps + 2),
                         collate_fn=dataset.collate)
    model.train()
    times = []
    for i, batch in enumerate(batches):
        t = time.perf_counter()
        train_step(model, objectives, optimizer, batch)
        if i >= 2:  # the first steps warm up allocators
            times.append(time.perf_counter() - t)
    step_rate = args.batch * len(times) / sum(times)

    print(f"\n{'reader → training loop':<30} {'samples/s':>10} {'× step':>8} {'1st batch':>10}")
    for name, (rate, first) in rates.items():
        print(f"{name:<30} {rate:10.0f} {rate / step_rate:7.1f}× {first:9.1f}s")
    print(f"{'training step (consumes)':<30} {step_rate:10.0f}")

    # -- bulk embedding ---------------------------------------------------------------
    from jointspace.bulk_embed import embed

    model_dir = work / "model"
    if not model_dir.is_dir():
        model.save(model_dir)
    from jointspace.model import load
    images = [r.image for r in manifest.records[:args.embed_images]]
    encoder = load(model_dir)
    t = time.perf_counter()
    encoder.encode_image(images, batch_size=256)
    single = len(images) / (time.perf_counter() - t)
    subset = work / "embed-subset"
    if not subset.is_dir():
        export_manifest(data / "train.csv", subset, format="parquet", shard_size=500)
        for extra in sorted(subset.glob("*.parquet"))[args.embed_images // 500:]:
            extra.unlink()
    shutil.rmtree(work / "embeddings", ignore_errors=True)
    report = embed(model_dir, str(subset), work / "embeddings", workers=args.ray_workers)
    ray_rate = report.items / (report.seconds - report.startup_seconds)
    print(f"\nembed {report.items} images: Ray Data ({args.ray_workers} actors) {ray_rate:.0f} img/s "
          f"after a {report.startup_seconds:.1f} s start-up ({report.seconds:.1f} s in all); one "
          f"process encode {single:.0f} img/s ({ray_rate / single:.2f}×)")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
