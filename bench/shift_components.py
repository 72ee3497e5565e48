"""Which part of the shifted split costs a model what (issue 21 §2–3).

The shifted test split (:mod:`jointspace.data.shifted`) applies six changes at
once. This script renders the demo's 700 test scenes seven times — clean, and with
each change *alone*, drawn from the same per-row generator as ``test_shifted`` —
and reports label-level R@1 both ways of every model folder given, on each:

* ``clean``: the test split as training sees it (64 px PNG, flat background);
* ``background``: the tinted crop of a sample photograph behind the shapes;
* ``scale``: radii × [0.75, 1.25]; ``resolution``: written at 48–128 px;
* ``blur``: Gaussian, radius 0.3–1.2 px at 64 px; ``noise``: σ 4–16;
* ``jpeg``: saved at quality 20–50.

Run from the repository root (never in CI), with the data of a demo run::

    .venv/bin/python bench/shift_components.py --data demo_out/data \\
        --model demo_out/model --model runs/efficientnet
"""
from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from jointspace import load
from jointspace.data.scenes import BACKGROUNDS, draw_shapes
from jointspace.data.shapes import ShapesSpec, generate_records
from jointspace.data.shifted import (BLUR_RANGE, JPEG_QUALITY, NOISE_RANGE, SCALE_RANGE,
                                     SHIFTED_SIZES, TEST_SHIFTED, _background)
from jointspace.eval.retrieval import retrieval_metrics

COMPONENTS = ("clean", "background", "scale", "resolution", "blur", "noise", "jpeg")


def render_one(scene, seed_key: str, component: str) -> tuple[Image.Image, int | None]:
    """The scene with only ``component`` of the shift, its draws taken in the order
    :func:`~jointspace.data.shifted.render_shifted` takes them (the same values)."""
    rng = random.Random(seed_key)
    size = rng.choice(SHIFTED_SIZES)
    size = size if component == "resolution" else 64
    big = size * 2
    photo = _background(rng, BACKGROUNDS[scene.background], big)
    image = photo if component == "background" else Image.new("RGB", (big, big),
                                                               BACKGROUNDS[scene.background])
    scale = rng.uniform(*SCALE_RANGE)
    draw_shapes(image, scene, scale if component == "scale" else 1.0)
    image = image.resize((size, size), Image.LANCZOS)
    blur = rng.uniform(*BLUR_RANGE) * size / 64
    if component == "blur":
        image = image.filter(ImageFilter.GaussianBlur(blur))
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, rng.uniform(*NOISE_RANGE),
                                                               (size, size, 3))
    if component == "noise":
        pixels = np.asarray(image, dtype=np.float32) + noise
        image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    quality = rng.randint(*JPEG_QUALITY)
    return image, quality if component == "jpeg" else None


def write_component(spec: ShapesSpec, component: str, out: Path) -> Path:
    """The test split with one component of the shift, as a manifest in ``out``."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    manifest = out / "test.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "image", "text", "label"])
        for i, (scene, text) in enumerate(generate_records(spec, "test")):
            image, quality = render_one(scene, f"{spec.seed}/{TEST_SHIFTED}/{i}", component)
            rel = f"images/{i:06d}.{'jpg' if quality else 'png'}"
            image.save(out / rel, quality=quality) if quality else image.save(out / rel)
            writer.writerow([f"test-{i:06d}", rel, text, scene.label])
    return manifest


def label_r1(model, manifest: Path) -> tuple[float, float]:
    rows = list(csv.DictReader(open(manifest, newline="")))
    images = model.encode("image", [str(manifest.parent / r["image"]) for r in rows])
    texts = model.encode("text", [r["text"] for r in rows])
    r = retrieval_metrics(images, texts, groups=[r["label"] for r in rows], ks=(1,),
                          include_strict=False)
    return r["text_to_image"]["R@1"], r["image_to_text"]["R@1"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a demo's data folder (its spec.json)")
    p.add_argument("--model", type=Path, action="append", required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/shift-components"))
    args = p.parse_args()
    spec = ShapesSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in
                         __import__("json").loads((args.data / "spec.json").read_text()).items()})
    manifests = {c: write_component(spec, c, args.work / c) for c in COMPONENTS}
    print(f"label-level R@1 text→image / image→text on {spec.n} scenes' test split "
          f"(seed {spec.seed}), one component of the shift at a time", flush=True)
    print("| model | " + " | ".join(COMPONENTS) + " |")
    print("|---|" + "---|" * len(COMPONENTS))
    for folder in args.model:
        model = load(folder)
        cells = [f"{a:.3f} / {b:.3f}" for a, b in (label_r1(model, manifests[c]) for c in COMPONENTS)]
        print(f"| {folder} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
