"""Image towers trained from scratch: a small ConvNet and a small ViT.

Both take uint8 ``[B, 3, H, W]`` batches (so loaders move bytes, not floats)
and scale them to [-1, 1] inside ``embed``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from ..errors import DataError
from .base import MODALITIES, TOWERS, Modality, Tower
from .layers import conv_bn_relu, transformer_encoder

# single-channel modes whose values run 0–65535 (16-bit PNG/TIFF/PGM)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB, without clipping high-bit-depth data.

    Policy:

    * ``I;16*`` (16-bit PNG/TIFF) and ``I`` (what Pillow makes of 16-bit PGM,
      already scaled to 0–65535) are taken as 0–65535 and divided by 257 with
      rounding, so 257·k → k and 65535 → 255. ``I`` values outside that range
      are clipped. (``convert("RGB")`` would clip everything above 255 to white.)
    * ``F`` is taken as 0.0–1.0 (the float-image convention), ×255, clipped.
    * Transparency (``LA``, ``RGBA``, ``PA``, palette or ``RGB``/``L`` with a
      ``transparency`` entry) is composited onto white, so fully transparent
      pixels become white whatever colour they happen to store.
    * Everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB`` …) uses
      Pillow's own conversion. Pillow already decodes 16-bit RGB(A) PNGs to
      8-bit ``RGB``/``RGBA`` by keeping the high byte.
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        a = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        # integer round(v / 257): exact, and 257·k → k for every 8-bit k
        return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        a = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        return Image.fromarray(np.rint(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("P", "L", "RGB", "1") and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def decode_image(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Decode an image file fully → upright 8-bit RGB.

    With ``min_size`` a JPEG is decoded by libjpeg at 1/2, 1/4 or 1/8 scale,
    the strongest reduction that keeps both sides ≥ ``min_size``
    (``Image.draft``), which makes huge photos several times cheaper to read;
    other formats decode in full.
    The drafted image is still decoded completely, so truncated files fail here.
    Raises ``FileNotFoundError`` or Pillow's errors; :func:`load_image` and
    ``check_image`` turn them into messages.
    """
    with Image.open(path) as im:
        if min_size is not None:
            # square request: after an EXIF 90° turn both sides must still be enough
            im.draft(None, (min_size, min_size))
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        rgb = to_rgb8(im)
        # closing the file also invalidates `im`, so never hand it back itself
        return rgb.copy() if rgb is im else rgb


def open_image(item: Any, min_size: int | None = None) -> Image.Image:
    """A path or PIL image → upright 8-bit RGB PIL image, the one way towers read images.

    EXIF orientation is applied, high-bit-depth and transparent images are
    converted as :func:`to_rgb8` documents, and a JPEG file is decoded no smaller
    than ``min_size`` (:func:`decode_image`). A PIL image passed in is not changed.
    Unreadable items raise :class:`~jointspace.errors.DataError`.
    """
    if isinstance(item, (str, Path)):
        try:
            return decode_image(item, min_size)
        except FileNotFoundError:
            raise DataError(f"image file not found: {item}") from None
        except Exception as e:
            raise DataError(f"image file cannot be decoded ({e}): {item}") from None
    if isinstance(item, Image.Image):
        return to_rgb8(ImageOps.exif_transpose(item))  # a copy: the caller's image is untouched
    raise DataError(f"expected an image path or PIL image, got {type(item).__name__}")


def load_image(item: Any, size: int) -> torch.Tensor:
    """A path or PIL image → uint8 tensor ``[3, size, size]`` (RGB, bicubic resize) of
    :func:`open_image`'s image (JPEGs decoded no smaller than ``size``)."""
    image = open_image(item, size)
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def _check_image_file(path: Any) -> str | None:
    from ..data.manifest import check_image  # the reader's check runs decode_image
    return check_image(Path(path))


MODALITIES.register("image")(Modality(
    "image", is_file=True, check=_check_image_file, default_tower="convnet",
    suffixes=(".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")))


class ImageTower(Tower):
    modality = "image"

    def preprocess_one(self, item: Any) -> torch.Tensor:
        return load_image(item, self.config.image_size)

    @staticmethod
    def to_float(x: torch.Tensor) -> torch.Tensor:
        # float() returns x itself when x is already float32: never modify it in place
        return x.float().div(127.5).sub_(1.0)


@dataclass
class ConvNetConfig:
    image_size: int = 64
    stem_patch: int = 4
    widths: tuple[int, ...] = (64, 128, 256)


@TOWERS.register("convnet")
class ConvNetTower(ImageTower):
    """A patchifying stem (stride ``stem_patch``), then per extra width a 3×3
    stride-2 and a 3×3 stride-1 convolution with batch norm and ReLU, global
    average pooling and a linear projection. (ReLU and the patch stem keep it
    cheap on a CPU, where a GELU net with strided 3×3 stems is several times slower.)"""

    Config = ConvNetConfig

    def __init__(self, config: ConvNetConfig, embed_dim: int) -> None:
        super().__init__(config, embed_dim)
        p = config.stem_patch
        layers = [nn.Conv2d(3, config.widths[0], p, stride=p), nn.BatchNorm2d(config.widths[0]),
                  nn.ReLU(inplace=True)]
        for c_in, c_out in zip(config.widths, config.widths[1:]):
            layers += conv_bn_relu(c_in, c_out, 3, 2) + conv_bn_relu(c_out, c_out, 3, 1)
        self.trunk = nn.Sequential(*layers)
        self.proj = nn.Linear(config.widths[-1], embed_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.to_float(x)).mean(dim=(2, 3))


@dataclass
class ViTConfig:
    image_size: int = 64
    patch_size: int = 8
    width: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0


@TOWERS.register("vit")
class ViTTower(ImageTower):
    """Vision transformer: patch embedding, class token, learned positions,
    pre-norm encoder, projection of the class token."""

    Config = ViTConfig

    def __init__(self, config: ViTConfig, embed_dim: int) -> None:
        super().__init__(config, embed_dim)
        if config.image_size % config.patch_size:
            from ..errors import ConfigError
            raise ConfigError(f"image_size {config.image_size} is not a multiple of "
                              f"patch_size {config.patch_size}")
        n_patches = (config.image_size // config.patch_size) ** 2
        self.patch = nn.Conv2d(3, config.width, config.patch_size, stride=config.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos = nn.Parameter(torch.randn(1, n_patches + 1, config.width) * 0.02)
        self.encoder = transformer_encoder(config.width, config.layers, config.heads, config.mlp_ratio)
        self.norm = nn.LayerNorm(config.width)
        self.proj = nn.Linear(config.width, embed_dim, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch(self.to_float(x)).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1) + self.pos
        return self.norm(self.encoder(h)[:, 0])
