"""Does a pretrained text tower understand words training never used?

Trains two image–text models on the same built-in shapes data for the same
wall-clock budget — one with the from-scratch ``transformer`` text tower, one
with the pretrained ``minilm`` tower locked whole (LiT, as the demo does) — and
evaluates both on the test split twice: with the usual test captions
(``test.csv``: held-out templates, training vocabulary) and with captions
that use words training never contains (``test_words.csv``: "crimson" for
red, "ball" for circle …, same images and labels). Reports zero-shot top-1
and group-aware text→image R@1 (and label-level R@1) for each. Never run in CI.

    python bench/pretrained_vs_scratch.py                    # 150 s of training each
    python bench/pretrained_vs_scratch.py --seconds 240 --n 20000
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch


def train_for(text_tower: str, data: dict, out: Path, seconds: float, probe_steps: int) -> int:
    """Train for about ``seconds`` of training loop: measure the step time on a short
    run, then train the steps that fit (the same budget for both towers, not the same
    number of steps; set-up and the one-off feature pass are not counted)."""
    from jointspace.config import TowerSpec, load_run_config
    from jointspace.train.trainer import train

    def config(steps: int):
        run = load_run_config(overrides=[f"train.max_steps={steps}", f"train.eval_every={10 ** 6}",
                                         f"train.warmup_steps={max(1, steps // 12)}"])
        if text_tower == "minilm":
            run.model.towers["text"] = TowerSpec("minilm", {}, "none")
        return run
    train(config(probe_steps), data["train"], out / "probe")
    # the loop's own rate (set-up and the one-off MiniLM feature pass excluded)
    log = [json.loads(l) for l in (out / "probe" / "log.jsonl").read_text().splitlines()]
    rates = sorted(r["samples_per_s"] for r in log[1:])
    per_step = 128 / rates[len(rates) // 2]
    steps = max(probe_steps, int(seconds / per_step))
    train(config(steps), data["train"], out / "model", val_data=data["val"])
    return steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=150.0, help="training budget per model")
    p.add_argument("--n", type=int, default=7000)
    p.add_argument("--probe-steps", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(2)
    os.environ.setdefault("JOINTSPACE_QUIET", "1")
    from jointspace.data.shapes import HELD_OUT_COMBOS, ShapesSpec, class_names, write_shapes
    from jointspace.eval.run import evaluate
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_shapes(tmp / "data", ShapesSpec(n=args.n, seed=0))
        test_words = tmp / "data" / "test_words.csv"
        if not test_words.is_file():
            raise SystemExit("this shapes version writes no test_words.csv")
        held_out = [f"{c} {k}" for c, k in sorted(HELD_OUT_COMBOS)]
        rows = {}
        for tower in ("transformer", "minilm"):
            steps = train_for(tower, data, tmp / tower, args.seconds, args.probe_steps)
            for split, manifest in (("test", data["test"]), ("test_words", test_words)):
                r = evaluate(tmp / tower / "model", manifest, classes=class_names(),
                             subsets={"unseen_combos": held_out})
                rows[(tower, split)] = {
                    "steps": steps, "zero_shot_top1": r["zero_shot"]["top1"],
                    "zero_shot_unseen": r["zero_shot_unseen_combos"]["top1"],
                    "t2i_R@1": r["retrieval"]["text_to_image"]["R@1"],
                    "i2t_R@1": r["retrieval"]["image_to_text"]["R@1"],
                    "label_t2i_R@1": r["retrieval_by_label"]["text_to_image"]["R@1"],
                    "label_i2t_R@1": r["retrieval_by_label"]["image_to_text"]["R@1"]}
                print(tower, split, json.dumps(rows[(tower, split)]), flush=True)
        print("\n| text tower | captions | steps | zero-shot | unseen combos | t→i R@1 | i→t R@1 "
              "| label t→i R@1 | label i→t R@1 |\n|---|---|---|---|---|---|---|---|---|")
        for (tower, split), r in rows.items():
            print(f"| {tower} | {split} | {r['steps']} | {r['zero_shot_top1']:.3f} | "
                  f"{r['zero_shot_unseen']:.3f} | {r['t2i_R@1']:.3f} | {r['i2t_R@1']:.3f} | "
                  f"{r['label_t2i_R@1']:.3f} | {r['label_i2t_R@1']:.3f} |")


if __name__ == "__main__":
    main()
