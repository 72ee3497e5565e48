"""The distribution-shifted test split of the shapes data (``test_shifted``).

``test_shifted.csv`` holds the *scenes, captions and labels of* ``test.csv``,
row by row, rendered with changes that training never shows and that no
training augmentation imitates (training uses none):

* **photographic background**: a random crop (a fifth to two thirds of the
  shorter side, sometimes mirrored) of one of scikit-learn's two sample photos
  (``china.jpg``, ``flower.jpg``; shipped with scikit-learn, no download),
  tinted towards the scene's background colour by 25–50 % so that captions
  naming the background ("on brown") stay roughly true; training backgrounds
  are one flat colour;
* **scale**: every shape's radius multiplied by one factor in [0.75, 1.25]
  (positions unchanged, so "on the left" still holds);
* **resolution**: the image is written at 48, 64, 96 or 128 px (training: the
  spec's ``image_size``, 64 by default), so a tower resizes it;
* **blur**: a Gaussian blur of radius 0.3–1.2 px (at 64 px, scaled with the size);
* **noise**: additive Gaussian pixel noise, σ 4–16 (of 255);
* **JPEG artefacts**: saved as JPEG at quality 20–50 (training images are PNG).

Every draw comes from ``random.Random(f"{seed}/test_shifted/{i}")``, so the split
is deterministic from the seed, and the test records are untouched (their own
generator draws the scene and caption).
"""
from __future__ import annotations

import random
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from .scenes import BACKGROUNDS, draw_shapes

TEST_SHIFTED = "test_shifted"
SHIFTED_SIZES = (48, 64, 96, 128)
SCALE_RANGE = (0.75, 1.25)
TINT_RANGE = (0.25, 0.5)
BLUR_RANGE = (0.3, 1.2)  # Gaussian radius in pixels at 64 px
NOISE_RANGE = (4.0, 16.0)
JPEG_QUALITY = (20, 50)


@lru_cache(maxsize=1)
def background_photos() -> tuple[Image.Image, ...]:
    """scikit-learn's sample photographs (china.jpg, flower.jpg; 427 × 640) as RGB images."""
    from sklearn.datasets import load_sample_images  # lazy: only the shifted split needs it

    return tuple(Image.fromarray(np.asarray(a, dtype=np.uint8)) for a in load_sample_images().images)


def _background(rng: random.Random, colour: tuple[int, int, int], side: int) -> Image.Image:
    photo = rng.choice(background_photos())
    w, h = photo.size
    crop = round(min(w, h) * rng.uniform(0.2, 0.67))
    x, y = rng.randint(0, w - crop), rng.randint(0, h - crop)
    patch = photo.crop((x, y, x + crop, y + crop)).resize((side, side), Image.BICUBIC)
    if rng.random() < 0.5:
        patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return Image.blend(patch, Image.new("RGB", (side, side), colour), rng.uniform(*TINT_RANGE))


def render_shifted(scene, seed_key: str) -> tuple[Image.Image, int]:
    """A scene rendered with the shift (see the module docstring) and the JPEG
    quality to save it at; ``seed_key`` (``"<seed>/test_shifted/<i>"``) fixes every draw."""
    rng = random.Random(seed_key)
    size = rng.choice(SHIFTED_SIZES)
    big = size * 2
    image = _background(rng, BACKGROUNDS[scene.background], big)
    draw_shapes(image, scene, rng.uniform(*SCALE_RANGE))
    image = image.resize((size, size), Image.LANCZOS)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*BLUR_RANGE) * size / 64))
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, rng.uniform(*NOISE_RANGE),
                                                               (size, size, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).round().astype(np.uint8)
    return Image.fromarray(pixels), rng.randint(*JPEG_QUALITY)
