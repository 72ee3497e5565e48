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
from PIL import Image
from torch import nn

from ..errors import DataError
from .base import TOWERS, Tower
from .layers import transformer_encoder


def load_image(item: Any, size: int) -> torch.Tensor:
    """A path or PIL image → uint8 tensor ``[3, size, size]`` (RGB, bicubic resize)."""
    if isinstance(item, (str, Path)):
        try:
            with Image.open(item) as im:
                image = im.convert("RGB")
        except FileNotFoundError:
            raise DataError(f"image file not found: {item}") from None
        except Exception as e:
            raise DataError(f"image file cannot be decoded ({e}): {item}") from None
    elif isinstance(item, Image.Image):
        image = item.convert("RGB")
    else:
        raise DataError(f"expected an image path or PIL image, got {type(item).__name__}")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


class ImageTower(Tower):
    modality = "image"

    def preprocess_one(self, item: Any) -> torch.Tensor:
        return load_image(item, self.config.image_size)

    @staticmethod
    def to_float(x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(127.5).sub_(1.0)


@dataclass
class ConvNetConfig:
    image_size: int = 64
    stem_patch: int = 4
    widths: tuple[int, ...] = (64, 128, 256)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@TOWERS.register("convnet")
class ConvNetTower(ImageTower):
    """A patchifying stem (stride ``stem_patch``), then per extra width a 3×3
    stride-2 and a 3×3 stride-1 convolution with batch norm and ReLU, global
    average pooling and a linear projection. (ReLU and the patch stem make it
    about 3× faster on CPU than a GELU net with strided 3×3 stems.)"""

    Config = ConvNetConfig

    def __init__(self, config: ConvNetConfig, embed_dim: int) -> None:
        super().__init__(config, embed_dim)
        p = config.stem_patch
        layers = [nn.Conv2d(3, config.widths[0], p, stride=p), nn.BatchNorm2d(config.widths[0]),
                  nn.ReLU(inplace=True)]
        for c_in, c_out in zip(config.widths, config.widths[1:]):
            layers += _conv_bn_relu(c_in, c_out, 3, 2) + _conv_bn_relu(c_out, c_out, 3, 1)
        self.trunk = nn.Sequential(*layers)
        self.proj = nn.Linear(config.widths[-1], embed_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(self.to_float(x))
        return self.proj(h.mean(dim=(2, 3)))


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

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch(self.to_float(x)).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1) + self.pos
        h = self.encoder(h)
        return self.proj(self.norm(h[:, 0]))
