"""Pretrained image encoders from local Hugging Face folders (tower ``hf_vision``).

``path`` is a folder ``transformers`` loads offline: a CLIP vision model (with or without
its projection), a SigLIP vision model, ViT, DINOv2, ConvNeXt, or a whole CLIP / SigLIP
model, of which the tower takes the vision half. Images go through
:func:`~jointspace.towers.vision.open_image` (EXIF, 16-bit, alpha, JPEG draft decoding
never below what the resize needs), then the folder's own preprocessing
(:mod:`.image_processing`, read from ``preprocessor_config.json`` or the
``image_processor`` settings in ``processor_config.json``), then the backbone;
:meth:`HFVisionTower.features` is the family's pooled output (table in the README,
*Pretrained image towers*). ``head: new`` projects it with a fresh trainable
``Linear(width, embed_dim)``; ``head: pretrained`` uses the family's own projection into
its joint space as ``proj`` (CLIP's ``visual_projection``; SigLIP: the identity).

Model folders, the held-aside weights, ``precision`` and ``quantize`` behave as for the
``hf`` text tower (:mod:`.hf_text`'s docstring; the machinery is :mod:`.hf_backbone`);
``fused_cpu`` (on by default) runs fp32 CPU inference through :mod:`.fused_cpu`.
The tower's subfolder holds the vision ``config.json``, ``image_processing.json`` (an
:class:`~.image_processing.ImageProcessing`) and ``hf_vision.json``.
"""
from __future__ import annotations

import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError, JointspaceError
from . import fused_cpu
from .base import TOWERS, Adapter
from .hf_backbone import HFBackboneTower, InferenceOptions
from .hf_loading import (HF_CONFIG_FILE, LOCAL_ONLY, config_signature, drop_pooler,
                         quiet_transformers, read_json, transformers_module)
from .hf_vision_families import FAMILIES, IDENTITY, WHOLE_MODELS, VisionFamily
from .image_processing import ImageProcessing, read_image_processing
from .vision import open_image

SETTINGS_FILE = "hf_vision.json"
PROCESSING_FILE = "image_processing.json"
HEADS = ("new", "pretrained")


@dataclass
class HFVisionConfig(InferenceOptions):
    """Options of the ``hf_vision`` tower (``precision`` and ``quantize``:
    :class:`~.hf_backbone.InferenceOptions`)."""

    #: a local Hugging Face vision (or whole CLIP / SigLIP) model folder
    path: str = ""
    #: new: a trainable Linear(width, embed_dim); pretrained: the family's own projection
    #: (CLIP, SigLIP; embed_dim must be its output size)
    head: str = "new"
    #: square input size other than the folder's (positions interpolated); 0 = the folder's
    image_size: int = 0
    #: fp32 CPU inference runs a fused copy of the backbone (:mod:`.fused_cpu`: oneDNN-packed
    #: weights, activations in the kernel, CLIP's last layer for its pooled token alone);
    #: equal to transformers' forward to fp32 rounding. False: transformers' modules as they are
    fused_cpu: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.image_size < 0:
            raise ConfigError(f"image_size must be 0 (the folder's) or positive, got {self.image_size}")


@TOWERS.register("hf_vision")
class HFVisionTower(HFBackboneTower):
    """A pretrained Hugging Face image encoder with its own preprocessing and pooled
    output, and a new or its pretrained projection (see the module docstring). E.g.
    ``build_tower(TowerSpec("hf_vision", {"path": "dinov2-small"}), 256, "image")``, then
    ``tower.encode_features(["a.jpg", "b.png"])`` → ``[2, 384]`` DINOv2 features.
    """

    Config = HFVisionConfig
    modality = "image"

    def __init__(self, config: HFVisionConfig, embed_dim: int) -> None:
        super().__init__(config, embed_dim)
        self.family_name = ""
        self.native: ImageProcessing | None = None  # the folder's preprocessing
        self.processing: ImageProcessing | None = None  # the one applied (image_size)
        self.pooler = True
        #: linear (new), linear_nobias (CLIP's projection) or identity (SigLIP)
        self.head_layout = "linear"
        self.source = ""
        pretrained_head = None
        try:
            pretrained_head = self._build_from_folder(self.resolve_path())
            width = self.width
        except ConfigError as e:
            # no backbone yet: a model folder's load_assets builds it; any other use raises this
            self.unavailable = str(e)
            width = 0
        if config.head == "pretrained":
            if self.unavailable is None:
                self.head_layout = "identity" if pretrained_head is None else "linear_nobias"
            else:
                self.head_layout = "linear_nobias"  # a placeholder: the saved weights say which
        if pretrained_head is not None:
            self.proj = pretrained_head
        elif self.head_layout == "identity":
            self.proj = nn.Identity()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "initializing zero-element tensors is a no-op"
                self.proj = nn.Linear(width, embed_dim, bias=self.head_layout == "linear")

    # -- where the model comes from ----------------------------------------------
    def resolve_path(self) -> Path:
        if not self.config.path:
            raise ConfigError("the hf_vision tower needs a path: options: {path: /a/local/model/folder}")
        return Path(self.config.path).expanduser()

    def _build_from_folder(self, folder: Path) -> nn.Module | None:
        """Load backbone and preprocessing from ``folder``; return the pretrained projection
        when ``head: pretrained`` asks for one (None for the identity)."""
        if not folder.is_dir():
            raise ConfigError(f"image tower path {folder} " + ("is not a folder" if folder.exists()
                                                               else "does not exist"))
        if not (folder / HF_CONFIG_FILE).is_file():
            raise ConfigError(f"image tower path {folder} is not a Hugging Face model folder "
                              f"(no {HF_CONFIG_FILE})")
        transformers = transformers_module()
        name, vision_config = _vision_config(transformers, folder)
        family = FAMILIES[name]
        native = read_image_processing(folder, family.processor)
        with quiet_transformers():
            try:
                loaded, info = getattr(transformers, family.loader).from_pretrained(
                    str(folder), config=vision_config, **LOCAL_ONLY,
                    output_loading_info=True)
            except (OSError, ValueError, KeyError, RuntimeError, ImportError) as e:
                raise ConfigError(f"cannot load the vision model in {folder}: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        missing = sorted(info.get("missing_keys") or ())
        projection = family.projection not in ("", IDENTITY)
        lacks_projection = projection and any(k.startswith(family.projection + ".") for k in missing)
        self.pooler = not any(k.startswith("pooler.") for k in missing)
        other = [k for k in missing if not k.startswith("pooler.")
                 and not (projection and k.startswith(family.projection + "."))]
        if other:
            raise ConfigError(f"the weights in {folder} lack {', '.join(other[:3])}"
                              f"{' …' if len(other) > 3 else ''}")
        backbone = loaded.get_submodule(family.backbone)
        if not self.pooler:
            drop_pooler(backbone)  # ViT saved without add_pooling_layer: its first token
        head = None
        if self.config.head == "pretrained":
            if family.projection == "":
                raise ConfigError(f"{name} models have no projection into a joint space; use the "
                                  "hf_vision tower's head: new")
            if lacks_projection:
                raise ConfigError(f"{folder} holds no {family.projection} weights (a vision model "
                                  "without its projection); use the hf_vision tower's head: new")
            head = loaded.get_submodule(family.projection).float() if projection else None
            size = head.out_features if head is not None else _pooled_width(backbone.config)
            if size != self.embed_dim:
                raise ConfigError(f"the pretrained projection of {folder} gives {size}-d vectors, "
                                  f"but embed_dim is {self.embed_dim}; set model.embed_dim={size} or "
                                  "the tower's head: new")
        self.family_name = name
        self._set_processing(native)
        self.source = str(folder)
        self.backbone = backbone.float().eval()  # Tower.train() sets the mode later
        return head

    def _fuses_on_cpu(self) -> bool:
        return self.config.fused_cpu and fused_cpu.available()

    def _cls_only_last_layer(self) -> bool:
        return self.family.cls_only_last_layer

    def _set_processing(self, native: ImageProcessing) -> None:
        self.native = native
        self.processing = native.at_size(self.config.image_size) if self.config.image_size else native

    @property
    def family(self) -> VisionFamily:
        return FAMILIES[self.family_name]

    @property
    def width(self) -> int:
        """The pooled output's size (``proj``'s input)."""
        self._check_backbone()
        return _pooled_width(self.backbone.config)

    # -- data --------------------------------------------------------------------
    def preprocess_one(self, item: Any) -> torch.Tensor:
        """A path or PIL image → uint8 ``[3, H, W]``, resized and cropped as the folder's
        processor does (rescale and normalisation happen in :meth:`features`)."""
        if self.processing is None:
            raise ConfigError(self.unavailable or "image tower has no preprocessing")
        image = open_image(item, self.processing.decode_size())
        return torch.from_numpy(self.processing.pixels(image))

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        shapes = {tuple(t.shape) for t in items}
        if len(shapes) > 1:
            raise DataError(f"images of different sizes after preprocessing ({sorted(shapes)[:2]}): "
                            "the folder's processor resizes without cropping to one size")
        return torch.stack(list(items))

    # -- model -------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 3, H, W]`` from :meth:`preprocess_one` → the backbone's pooled output,
        float32 ``[B, width]`` (no projection)."""
        self._check_backbone()
        return self.pooled_features(self.processing.normalise(x))

    def pooled_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float pixel values ``[B, 3, H, W]`` → the pooled output, float32
        ``[B, width]``, run as :meth:`features` runs it (fused copy, precision options)."""
        backbone, ctx = self._runner(pixels.device, input_grad=pixels.requires_grad)
        dtype = next((p.dtype for p in backbone.parameters() if p.is_floating_point()), torch.float32)
        kwargs = {}
        native = getattr(self.backbone.config, "image_size", None)
        if self.family.interpolate and tuple(pixels.shape[-2:]) != (native, native):
            kwargs["interpolate_pos_encoding"] = True
        with ctx:
            out = backbone(pixel_values=pixels.to(dtype), **kwargs)
        pooled = out.pooler_output
        if pooled is None:
            if not self.family.first_token:
                raise JointspaceError(f"the {self.family_name} backbone gives no pooled output")
            pooled = out.last_hidden_state[:, 0]
        return pooled.float()

    @torch.inference_mode()
    def encode_features(self, images: Sequence[Any] | Any, batch_size: int = 32,
                        normalize: bool = True, workers: int = 0) -> torch.Tensor:
        """Pooled features of ``images`` (paths or PIL images; one alone is one) → float32
        ``[N, width]``, L2-normalised unless ``normalize=False``, in eval mode with the
        tower's precision options, in the order given. ``workers`` > 0 decodes and resizes
        on that many threads, the next batch while the model runs on this one (on 2
        cores, ``bench/image_embed.py`` found no steady gain from it)."""
        self._check_backbone()
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        device = next(self.backbone.parameters()).device
        batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
        out = [torch.zeros(0, self.width)]
        was_training = self.training
        self.eval()
        pool = ThreadPoolExecutor(workers) if workers > 0 else None
        try:
            if pool is None:
                pending = iter([self.preprocess_one(it) for it in b] for b in batches)
            else:
                pending = _prefetched(pool, self.preprocess_one, batches)
            for pixels in pending:
                f = self.features(self.collate(pixels).to(device)).cpu()
                out.append(F.normalize(f, dim=-1) if normalize else f)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            self.train(was_training)
        return torch.cat(out)

    # -- what trains -------------------------------------------------------------
    def set_trainable(self, mode: str, adapter_hidden: int = 64) -> None:
        """As :meth:`Tower.set_trainable`; an identity head (SigLIP's) adapts at the
        pooled width."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-width placeholders until a model folder says
            if mode == "adapter" and isinstance(self.adapter, nn.Identity) and isinstance(
                    self.proj, nn.Identity):
                width = self.width if self.backbone is not None else 0
                self.adapter = Adapter(width, adapter_hidden).to(self._device())
            super().set_trainable(mode, adapter_hidden)

    def _fit_head(self, width: int) -> None:
        """``proj`` as ``head_layout`` says, at ``width`` (and an adapter at ``width``)."""
        new: nn.Module | None = None
        bias = self.head_layout == "linear"
        if self.head_layout == IDENTITY:
            new = None if isinstance(self.proj, nn.Identity) else nn.Identity()
        elif (not isinstance(self.proj, nn.Linear) or self.proj.in_features != width
              or (self.proj.bias is not None) != bias):
            new = nn.Linear(width, self.embed_dim, bias=bias)
        if new is not None:
            self.proj = new.to(self._device())
        super()._fit_head(width)

    def _fit_head_to_state(self, state_dict: dict[str, Any], prefix: str) -> None:
        """The head the incoming weights have: ``proj`` with or without a bias, or none."""
        weight = state_dict.get(prefix + "proj.weight")
        norm = state_dict.get(prefix + "adapter.norm.weight")
        if weight is not None and weight.ndim == 2:
            self.head_layout = "linear" if prefix + "proj.bias" in state_dict else "linear_nobias"
            self._fit_head(int(weight.shape[1]))
        else:
            self.head_layout = IDENTITY
            self._fit_head(int(norm.shape[0]) if norm is not None else 0)

    # -- assets ------------------------------------------------------------------
    def prepare(self, items: Sequence[Any]) -> None:
        """Nothing to learn; fails if ``path`` was unusable."""
        self._check_backbone()

    def save_assets(self, folder: Path) -> None:
        """The vision config, the preprocessing and the settings (not the weights: the joint
        state dict has them)."""
        self._check_backbone()
        folder = Path(folder)
        self.backbone.config.to_json_file(str(folder / HF_CONFIG_FILE))
        (folder / PROCESSING_FILE).write_text(json.dumps(self.native.to_json(), indent=2), encoding="utf-8")
        settings = {"family": self.family_name, "pooler": self.pooler, "head_layout": self.head_layout,
                    "source": self.source}
        (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")

    def load_assets(self, folder: Path) -> None:
        """Read what :meth:`save_assets` wrote and (re)build the backbone from the folder's
        own config when there is none or it differs."""
        folder = Path(folder)
        for name in (HF_CONFIG_FILE, PROCESSING_FILE, SETTINGS_FILE):
            if not (folder / name).is_file():
                raise JointspaceError(f"model folder {folder} lacks {name} of the image tower")
        settings = read_json(folder / SETTINGS_FILE)
        if settings.get("family") not in FAMILIES:
            raise JointspaceError(f"{folder / SETTINGS_FILE}: unknown family {settings.get('family')!r}")
        native = ImageProcessing.from_json(read_json(folder / PROCESSING_FILE), str(folder / PROCESSING_FILE))
        transformers = transformers_module()
        with quiet_transformers():
            hf_config = transformers.AutoConfig.from_pretrained(
                str(folder), **LOCAL_ONLY)
        self.family_name = str(settings["family"])
        self.pooler = bool(settings["pooler"])
        self.head_layout = str(settings["head_layout"])
        self._set_processing(native)
        if self.backbone is None or config_signature(hf_config) != config_signature(self.backbone.config):
            with quiet_transformers():
                model = transformers.AutoModel.from_config(hf_config, trust_remote_code=False).float()
            if not self.pooler:
                drop_pooler(model)
            self._adopt_backbone(model, _pooled_width(hf_config))
        self.source = str(settings.get("source", ""))
        self.unavailable = None


def _vision_config(transformers: Any, folder: Path) -> tuple[str, Any]:
    """The family name and vision config of ``folder`` (a whole CLIP / SigLIP model's
    ``vision_config``, CLIP's with the whole model's ``projection_dim``)."""
    with quiet_transformers():
        try:
            config = transformers.AutoConfig.from_pretrained(
                str(folder), **LOCAL_ONLY)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"cannot read the model config in {folder}: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if config.model_type in WHOLE_MODELS:
        vision = config.vision_config
        if hasattr(config, "projection_dim"):
            vision.projection_dim = config.projection_dim  # the whole model's, not the default
        config = vision
    if config.model_type not in FAMILIES:
        raise ConfigError(f"{folder} holds a {config.model_type!r} model; the hf_vision tower opens "
                          f"{', '.join(FAMILIES)} and the vision half of {', '.join(WHOLE_MODELS)}")
    return config.model_type, config


def _pooled_width(config: Any) -> int:
    sizes = getattr(config, "hidden_sizes", None)  # ConvNeXt: its last stage
    return int(sizes[-1]) if sizes else int(config.hidden_size)


def _prefetched(pool: ThreadPoolExecutor, fn: Any, batches: list[list[Any]]):
    """``[fn(x) for x in batch]`` for each batch in order, the next one already running."""
    ahead = [pool.submit(fn, x) for x in batches[0]] if batches else []
    for i in range(len(batches)):
        current = ahead
        ahead = [pool.submit(fn, x) for x in batches[i + 1]] if i + 1 < len(batches) else []
        yield [f.result() for f in current]
