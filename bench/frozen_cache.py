"""Training steps/s with a locked text tower: cached features vs the backbone run every step.

LiT-style run on the built-in shapes data: a small convnet image tower trained
against a locked pretrained text tower (``minilm`` by default). Two cases in
one invocation, same config, same seed, same steps:

* ``cached``: ``train.cache_features=true`` — the locked tower's features are
  computed once per distinct caption (before training; timed apart, and zero
  on a second run, since the cache is on disk) and the step runs only the head;
* ``recomputed``: ``train.cache_features=false`` — the locked backbone runs on
  every batch, as OpenCLIP's LiT does.

Reports steps/s of the training loop for each, their ratio, the one-off
feature time, and the final losses (which must agree: the features are the
same numbers). Never run in CI.

    python bench/frozen_cache.py                     # minilm, 60 steps of 128
    python bench/frozen_cache.py --steps 100 --batch 256
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch


def run_case(name: str, data: Path, out: Path, args: argparse.Namespace, cache_dir: Path) -> dict:
    from jointspace.config import load_run_config
    from jointspace.train.trainer import train
    widths = ", ".join(str(w) for w in args.image_widths)
    overrides = [f"model.towers.text={{name: minilm, trainable: none, options: {{precision: {args.precision}}}}}",
                 f"model.towers.image={{name: convnet, options: {{widths: [{widths}]}}}}",
                 f"train.max_steps={args.steps}", f"train.batch_size={args.batch}",
                 "train.log_every=1", f"train.eval_every={10 ** 6}", f"train.checkpoint_every={10 ** 6}",
                 f"train.cache_features={'true' if name == 'cached' else 'false'}",
                 f"train.feature_cache_dir={cache_dir}"]
    run = load_run_config(overrides=overrides)
    started = time.perf_counter()
    train(run, data, out)
    total = time.perf_counter() - started
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] / args.batch for r in log[2:]]  # skip warm-up steps
    return {"case": name, "steps_per_s": sorted(rates)[len(rates) // 2], "wall_s": total,
            "final_loss": log[-1]["loss"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--image-widths", type=int, nargs="+", default=[32, 64, 128],
                   help="convnet widths: the image tower's share of the step decides the ratio")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                   help="MiniLM's inference precision (fp32: cached and recomputed features "
                        "are the same numbers, so the losses must agree)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--n", type=int, default=3000, help="shapes scenes to generate")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("JOINTSPACE_QUIET", "1")
    from jointspace.data.shapes import ShapesSpec, write_shapes
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_shapes(tmp / "data", ShapesSpec(n=args.n, seed=0))["train"]
        results = []
        for name in ("cached", "recomputed"):
            t = time.perf_counter()
            results.append(run_case(name, data, tmp / name, args, tmp / "cache"))
            print(f"{name:>10}: {results[-1]['steps_per_s']:.2f} steps/s (median over steps), "
                  f"run {time.perf_counter() - t:.1f} s, final loss {results[-1]['final_loss']:.4f}",
                  flush=True)
        cached, recomputed = results
        print(json.dumps(results, indent=2))
        print(f"cached / recomputed steps/s: {cached['steps_per_s'] / recomputed['steps_per_s']:.2f}x; "
              f"one-off feature pass and set-up included in cached wall time "
              f"({cached['wall_s']:.1f} s vs {recomputed['wall_s']:.1f} s); "
              f"final loss difference {abs(cached['final_loss'] - recomputed['final_loss']):.2e}")


if __name__ == "__main__":
    main()
