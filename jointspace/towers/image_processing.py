"""The preprocessing a pretrained image model was trained with, as data.

:class:`ImageProcessing` holds what a Hugging Face folder's image processor settings say
(``preprocessor_config.json``, or those nested in ``processor_config.json``: resize,
centre crop, rescale, normalise), read by :func:`read_image_processing`
with the defaults of the processor class it names, and applies it with PIL and NumPy
exactly as ``transformers``' PIL ("slow") processors of CLIP, SigLIP, ViT, BiT
(DINOv2) and ConvNeXt do: the same output sizes (``int`` truncation of the long side,
centre-crop offsets, zero padding of a crop larger than the image), PIL's resize on
8-bit RGB with the folder's filter, rescale in float64 then float32, and
``(x - mean) / std`` in float32. :meth:`ImageProcessing.pixels` stops at the uint8
crop (loaders move bytes); :meth:`ImageProcessing.normalise` does the rest on a batch.

>>> p = ImageProcessing(shortest_edge=224, crop_height=224, crop_width=224, do_center_crop=True)
>>> p.resized_shape(480, 640), p.output_size()
((224, 298), (224, 224))
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import from_dict
from ..errors import ConfigError
from .hf_loading import read_json

PREPROCESSOR_FILE = "preprocessor_config.json"
#: a processor's settings, its image processor's nested under "image_processor" (transformers 5)
PROCESSOR_FILE = "processor_config.json"
KINDS = ("default", "convnext")
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HALF = (0.5, 0.5, 0.5)
_SQUARE_224 = {"height": 224, "width": 224}

#: the class-level defaults of transformers' processors, for keys a folder's JSON leaves out
_PROCESSORS: dict[str, dict[str, Any]] = {
    "CLIPImageProcessor": dict(resample=3, image_mean=_CLIP_MEAN, image_std=_CLIP_STD,
                               size={"shortest_edge": 224}, default_to_square=False,
                               do_center_crop=True, crop_size=_SQUARE_224),
    "BitImageProcessor": dict(resample=3, image_mean=_CLIP_MEAN, image_std=_CLIP_STD,
                              size={"shortest_edge": 224}, default_to_square=False,
                              do_center_crop=True, crop_size=_SQUARE_224),
    "SiglipImageProcessor": dict(resample=3, image_mean=_HALF, image_std=_HALF,
                                 size=_SQUARE_224, default_to_square=False),
    "ViTImageProcessor": dict(resample=2, image_mean=_HALF, image_std=_HALF, size=_SQUARE_224,
                              default_to_square=True),
    "ConvNextImageProcessor": dict(resample=3, image_mean=_HALF, image_std=_HALF,
                                   size={"shortest_edge": 384}, default_to_square=False,
                                   crop_pct=224 / 256, kind="convnext"),
}


@dataclass(frozen=True)
class ImageProcessing:
    """Resize → centre crop → rescale → normalise, as a folder's image processor does it.

    Resize: to ``height`` × ``width`` when they are set, else the shorter side to
    ``shortest_edge`` (aspect kept; the longer side capped at ``longest_edge`` when set);
    ``kind="convnext"``: ConvNeXt's rule (below 384 the shorter side to
    ``int(shortest_edge / crop_pct)`` then a centre crop of ``shortest_edge``², else a
    warp to ``shortest_edge``²). ``resample`` is a PIL filter number (2 bilinear, 3 bicubic).
    """

    kind: str = "default"
    do_resize: bool = True
    shortest_edge: int = 0
    longest_edge: int = 0
    height: int = 0
    width: int = 0
    resample: int = 3
    crop_pct: float = 224 / 256
    do_center_crop: bool = False
    crop_height: int = 0
    crop_width: int = 0
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = _HALF
    image_std: tuple[float, ...] = _HALF

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"image processing kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.do_resize and not (self.height > 0 and self.width > 0) and self.shortest_edge <= 0:
            raise ConfigError("image processing resizes but names no size (height and width, or "
                              "shortest_edge)")
        if self.kind == "convnext" and self.do_resize and self.shortest_edge <= 0:
            raise ConfigError("ConvNeXt's image processing needs size.shortest_edge")
        if self.do_center_crop and not (self.crop_height > 0 and self.crop_width > 0):
            raise ConfigError("image processing crops but names no crop_size")
        if self.do_normalize and (len(self.image_mean) != 3 or len(self.image_std) != 3):
            raise ConfigError("image_mean and image_std must hold 3 values (RGB)")
        if self.resample not in range(6):
            raise ConfigError(f"resample must be a PIL filter number 0–5, got {self.resample}")

    # -- sizes -------------------------------------------------------------------
    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the resize step gives an image of that size (before any crop)."""
        if not self.do_resize:
            return height, width
        if self.kind == "convnext":
            if self.shortest_edge >= 384:
                return self.shortest_edge, self.shortest_edge
            return _shortest_edge_shape(height, width, int(self.shortest_edge / self.crop_pct))
        if self.height > 0 and self.width > 0:
            return self.height, self.width
        if self.longest_edge > 0:
            return _capped_shape(height, width, self.shortest_edge, self.longest_edge)
        return _shortest_edge_shape(height, width, self.shortest_edge)

    def output_size(self) -> tuple[int, int] | None:
        """The (height, width) of every output, or None when it depends on the image."""
        if self.do_center_crop:
            return self.crop_height, self.crop_width
        if self.do_resize and self.kind == "convnext":
            return self.shortest_edge, self.shortest_edge
        if self.do_resize and self.height > 0 and self.width > 0:
            return self.height, self.width
        return None

    def decode_size(self) -> int | None:
        """The smallest side a JPEG may be draft-decoded to (``decode_image``'s
        ``min_size``) without going below what the resize reads; None: decode in full."""
        if not self.do_resize:
            return None
        if self.kind == "convnext":
            edge = self.shortest_edge
            return edge if edge >= 384 else int(edge / self.crop_pct)
        if self.height > 0 and self.width > 0:
            return max(self.height, self.width)
        return self.shortest_edge

    def at_size(self, size: int) -> "ImageProcessing":
        """The same processing giving ``size`` × ``size`` outputs: the crop becomes ``size``
        and the resize target scales with it (ConvNeXt: ``shortest_edge = size``)."""
        native = self.output_size()
        if native is None or native[0] != native[1]:
            raise ConfigError("image_size needs a processor whose outputs are square and of one "
                              f"size; this one gives {native or 'sizes that depend on the image'}")
        if size == native[0]:
            return self
        ratio = size / native[0]
        change: dict[str, Any] = {}
        if self.do_center_crop:
            change.update(crop_height=size, crop_width=size)
        if self.kind == "convnext":
            change.update(shortest_edge=size)
        elif self.height > 0 and self.width > 0:
            change.update(height=round(self.height * ratio), width=round(self.width * ratio))
        elif self.do_resize:
            change.update(shortest_edge=round(self.shortest_edge * ratio),
                          longest_edge=round(self.longest_edge * ratio))
        return dataclasses.replace(self, **change)

    # -- pixels ------------------------------------------------------------------
    def pixels(self, image: Image.Image) -> np.ndarray:
        """An RGB image → uint8 ``[3, H, W]``: resized and centre-cropped."""
        if image.mode != "RGB":
            raise ValueError(f"ImageProcessing.pixels expects an RGB image, got mode {image.mode}")
        if self.do_resize:
            h, w = self.resized_shape(image.height, image.width)
            if self.kind == "convnext" and self.shortest_edge < 384:
                image = _resize(image, h, w, self.resample)
                a = center_crop(np.asarray(image), self.shortest_edge, self.shortest_edge)
            else:
                a = np.asarray(_resize(image, h, w, self.resample))
        else:
            a = np.asarray(image)
        if self.do_center_crop:
            a = center_crop(a, self.crop_height, self.crop_width)
        return np.ascontiguousarray(a.transpose(2, 0, 1))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0–255 valued) ``[B, 3, H, W]`` → float32 model input: ``x · rescale_factor``
        (in float64, then float32) and ``(x - mean) / std`` (in float32)."""
        if self.do_rescale:
            x = (x.to(torch.float64) * self.rescale_factor).to(torch.float32)
        else:
            x = x.to(torch.float32)
        if self.do_normalize:
            mean = torch.tensor(self.image_mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.image_std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "image processing") -> "ImageProcessing":
        return from_dict(cls, data, where=where)


def _shortest_edge_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """``transformers.image_transforms.get_resize_output_image_size(default_to_square=False)``."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (new_long, size) if width <= height else (size, new_long)


def _capped_shape(height: int, width: int, size: int, max_size: int) -> tuple[int, int]:
    """``transformers.image_transforms.get_size_with_aspect_ratio`` (shortest + longest edge)."""
    raw = None
    lo, hi = float(min(height, width)), float(max(height, width))
    if hi / lo * size > max_size:
        raw = max_size * lo / hi
        size = int(round(raw))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    if width < height:
        return (int(raw * height / width) if raw is not None else int(size * height / width)), size
    return size, (int(raw * width / height) if raw is not None else int(size * width / height))


def _resize(image: Image.Image, height: int, width: int, resample: int) -> Image.Image:
    return image.resize((width, height), resample=Image.Resampling(resample))


def center_crop(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """``transformers.image_transforms.center_crop`` on ``[H, W, C]``: offsets
    ``(H - height) // 2``; a crop larger than the image pads it with zeros first."""
    h, w = a.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    if top >= 0 and left >= 0:
        return a[top:top + height, left:left + width]
    new_h, new_w = max(height, h), max(width, w)
    padded = np.zeros((new_h, new_w) + a.shape[2:], dtype=a.dtype)
    top_pad, left_pad = math.ceil((new_h - h) / 2), math.ceil((new_w - w) / 2)
    padded[top_pad:top_pad + h, left_pad:left_pad + w] = a
    top, left = top + top_pad, left + left_pad
    return padded[max(0, top):min(new_h, top + height), max(0, left):min(new_w, left + width)]


# --------------------------------------------------------------------------- reading a folder
def read_image_processing(folder: Path, fallback: str = "") -> ImageProcessing:
    """The :class:`ImageProcessing` a folder's settings describe, found where
    ``transformers``' ``AutoImageProcessor`` looks offline: the ``"image_processor"`` entry of
    ``processor_config.json`` (what ``CLIPProcessor.save_pretrained`` writes in transformers
    5), else ``preprocessor_config.json`` (hub folders, ``ImageProcessor.save_pretrained``).
    Keys it leaves out take the defaults of the processor class it names (``fallback``, a
    class name such as ``"CLIPImageProcessor"``, when it names none)."""
    folder = Path(folder)
    nested = folder / PROCESSOR_FILE
    if nested.is_file():
        settings = read_json(nested).get("image_processor")
        if isinstance(settings, dict):
            return processing_from_config(settings, f"{nested} (image_processor)", fallback)
    path = folder / PREPROCESSOR_FILE
    if not path.is_file():
        raise ConfigError(f"{folder} has no {PREPROCESSOR_FILE} (nor image_processor settings in "
                          f"{PROCESSOR_FILE}): the image tower needs the preprocessing the model "
                          "was trained with")
    return processing_from_config(read_json(path), str(path), fallback)


def processing_from_config(data: dict[str, Any], where: str = PREPROCESSOR_FILE,
                           fallback: str = "") -> ImageProcessing:
    """:func:`read_image_processing` on the parsed JSON."""
    name = _processor_name(data) or fallback
    if name not in _PROCESSORS:
        raise ConfigError(f"{where}: image processor {name or '(none named)'!r} is not supported; "
                          f"supported: {', '.join(_PROCESSORS)}")
    if data.get("do_pad"):
        raise ConfigError(f"{where}: do_pad is not supported")
    base = {"do_resize": True, "do_rescale": True, "do_normalize": True, "do_center_crop": False,
            "rescale_factor": 1 / 255, "kind": "default", **_PROCESSORS[name]}
    cfg = {**base, **{k: v for k, v in data.items() if v is not None}}
    size = _size_dict(cfg.get("size"), bool(cfg.get("default_to_square", True)), where, "size")
    crop = _size_dict(cfg.get("crop_size"), True, where, "crop_size") if cfg.get("crop_size") else {}
    if cfg["do_center_crop"] and set(crop) != {"height", "width"}:
        raise ConfigError(f"{where}: crop_size must give height and width, got {cfg.get('crop_size')}")
    if cfg["do_resize"] and set(size) not in ({"height", "width"}, {"shortest_edge"},
                                               {"shortest_edge", "longest_edge"}):
        raise ConfigError(f"{where}: size {dict(size)} is not supported (height and width, or "
                          "shortest_edge with an optional longest_edge)")
    return ImageProcessing(
        kind=str(cfg["kind"]), do_resize=bool(cfg["do_resize"]),
        shortest_edge=int(size.get("shortest_edge", 0)), longest_edge=int(size.get("longest_edge", 0)),
        height=int(size.get("height", 0)), width=int(size.get("width", 0)),
        resample=int(cfg.get("resample", 2)), crop_pct=float(cfg.get("crop_pct", 224 / 256)),
        do_center_crop=bool(cfg["do_center_crop"]), crop_height=int(crop.get("height", 0)),
        crop_width=int(crop.get("width", 0)), do_rescale=bool(cfg["do_rescale"]),
        rescale_factor=float(cfg["rescale_factor"]), do_normalize=bool(cfg["do_normalize"]),
        image_mean=_three(cfg.get("image_mean"), where), image_std=_three(cfg.get("image_std"), where))


def _processor_name(data: dict[str, Any]) -> str:
    name = str(data.get("image_processor_type") or data.get("feature_extractor_type") or "")
    for suffix in ("Pil", "Fast"):
        name = name[:-len(suffix)] if name.endswith(suffix) else name
    return name.replace("FeatureExtractor", "ImageProcessor")


def _size_dict(size: Any, default_to_square: bool, where: str, key: str) -> dict[str, int]:
    """``transformers.image_processing_utils.get_size_dict``."""
    if isinstance(size, dict):
        return {str(k): int(v) for k, v in size.items() if v is not None}
    if isinstance(size, int) and not isinstance(size, bool):
        return {"height": size, "width": size} if default_to_square else {"shortest_edge": size}
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    raise ConfigError(f"{where}: cannot read {key} {size!r}")


def _three(values: Any, where: str) -> tuple[float, ...]:
    if isinstance(values, (int, float)):
        return (float(values),) * 3
    if not isinstance(values, (list, tuple)) or len(values) != 3:
        raise ConfigError(f"{where}: image_mean and image_std must be 3 numbers, got {values!r}")
    return tuple(float(v) for v in values)
