"""Image towers trained from scratch: a small ConvNet and a small ViT.

Both take uint8 ``[B, 3, H, W]`` batches (so loaders move bytes, not floats)
and scale them to [-1, 1] inside ``embed``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..modalities.image import decode_image, open_image, to_rgb8  # noqa: F401 (re-exported)
from .base import TOWERS, Tower
from .layers import conv_bn_relu, transformer_encoder

def load_image(item: Any, size: int) -> torch.Tensor:
    """A path or PIL image → uint8 tensor ``[3, size, size]`` (RGB, bicubic resize) of
    :func:`open_image`'s image (JPEGs decoded no smaller than ``size``)."""
    image = open_image(item, size)
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


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
