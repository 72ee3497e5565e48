"""Video towers: every frame through a registered image tower, then a temporal module.

``video_frames`` follows CLIP4Clip: a clip is ``frames`` RGB frames; each goes through
the *frame tower* (any registered image tower — the from-scratch ``convnet`` or ``vit``,
``efficientnet_lite``, ``hf_vision`` — with that tower's own preprocessing), its frame
embedding is L2-normalised, and the ``[B, T, embed_dim]`` sequence is pooled over time:

* ``temporal: mean`` — the mean of the frame embeddings (CLIP4Clip's *meanP*). It cannot
  see order: the same frames in any order give the same clip embedding.
* ``temporal: transformer`` — a small pre-norm transformer over the frames with learned
  position embeddings, pooled by the mean of its outputs or a class token (*seqTransf*).

Then a layer norm, an optional adapter and the projection into the joint space. Per-frame
work is batched across clips: a ``[B, T, C, H, W]`` batch runs the frame tower once on
``[B·T, C, H, W]``.

**More frames than positions.** Clips of ``T ≤ max_positions`` frames use the first ``T``
rows of the position table. Longer clips use the table resampled linearly to ``T`` rows,
each row read at its segment's centre (``F.interpolate(..., mode="linear",
align_corners=False)``): position keeps meaning "relative time in the clip", as
uniformly sampled frames do, and ``T == max_positions`` is the table itself.

**Sampling.** A path is read with :func:`jointspace.modalities.video_io.read_clip`:
``frames`` frames, random within equal segments while the tower trains (seeded from
torch's generator, so a run's seed reproduces it) and at segment centres in eval. A
decoded clip that kept its file's bytes (a shard member, an upload: ``Clip.data``) is
read again from them, within the bounds of its first decode, while the tower trains or
when it has another number of frames — so a clip from a shard is sampled as the same file
on disk. Another decoded clip or a uint8 array ``[T, H, W, 3]`` with ``T != frames`` is
resampled uniformly (segment centres; a shorter clip repeats frames).

**Memory.** The frame tower sees at most :data:`FRAME_CHUNK` frames a call when it is in
eval mode (indexing, embedding, evaluation, a frozen frame tower): the same embeddings,
with its activations bounded. A training frame tower takes the whole ``B·T`` batch (its
batch-norm statistics are the batch's, and backward keeps every activation anyway).

**What trains, what is cached.** The frame tower's own ``trainable`` (in ``frame_tower``)
says what of it trains; the video tower's ``trainable`` says what of the rest does (any
mode but ``all`` also locks the frame tower). With the frame backbone frozen and the
temporal module training, :meth:`VideoFramesTower.features` stops at the frozen frame
features (``[B, T·width]``) and :meth:`~VideoFramesTower.head` runs the rest, so the
trainer's feature cache keeps every clip's frozen frame features and only the temporal
module and the projection run at each step (the cached frames are the evaluation-mode
ones: random sampling is then traded for not decoding and re-encoding clips).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..config import TowerSpec, from_dict
from ..errors import ConfigError, DataError
from ..modalities.video_io import MAX_BYTES, MAX_FRAMES, read_clip
from ..progress import logger
from .base import TOWERS, Tower, build_tower
from .layers import transformer_encoder

#: the modality of the frames (the frame tower's)
FRAME_MODALITY = "image"
#: the subfolder of the tower's assets holding its frame tower's
FRAMES_ASSETS = "frames"
TEMPORAL = ("mean", "transformer")
POOLS = ("mean", "cls")
#: the most frames one frame-tower call takes outside training (32 clips of 8 frames)
FRAME_CHUNK = 256


def _default_frame_tower() -> dict[str, Any]:
    return {"name": "convnet", "options": {"image_size": 64}}


@dataclass
class VideoFramesConfig:
    #: the image tower every frame goes through: ``{name, options, trainable}`` as a
    #: model's tower spec (``trainable: none`` locks it while the temporal module trains)
    frame_tower: dict[str, Any] = field(default_factory=_default_frame_tower)
    #: frames per clip (sampled from files, resampled from decoded clips)
    frames: int = 8
    #: ``mean`` (order-blind) or ``transformer`` (learned positions)
    temporal: str = "transformer"
    #: the temporal transformer's width, layers, heads and pooling (``mean`` or ``cls``)
    width: int = 128
    layers: int = 2
    heads: int = 4
    pool: str = "mean"
    #: rows of the position table; longer clips resample it (see the module docstring)
    max_positions: int = 16
    #: set by binding through an anchor: the source model's tower (by modality) whose
    #: weights and assets the frame tower starts from (``--init-from``); "" for none
    frame_tower_from: str = ""

    def __post_init__(self) -> None:
        if self.temporal not in TEMPORAL:
            raise ConfigError(f"temporal must be one of {', '.join(TEMPORAL)}, got {self.temporal!r}")
        if self.pool not in POOLS:
            raise ConfigError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        for name in ("frames", "width", "layers", "heads", "max_positions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.frames > MAX_FRAMES:
            raise ConfigError(f"frames must be at most {MAX_FRAMES} (what a clip is read at), "
                              f"got {self.frames}")
        if self.temporal == "transformer" and self.width % self.heads:
            raise ConfigError(f"width {self.width} must be a multiple of heads {self.heads}")


def resample_indices(have: int, want: int) -> np.ndarray:
    """``want`` indices into ``have`` frames, one at each of ``want`` equal segments' centre:
    ``floor((i + 0.5) · have / want)``; the identity when ``have == want``."""
    return np.floor((np.arange(want) + 0.5) * have / want).astype(np.int64)


def clip_frames(item: Any, where: str = "") -> np.ndarray:
    """A ``Clip`` (anything with a ``frames`` array) or an array → uint8 ``[T, H, W, 3]``,
    checked; a clear :class:`DataError` otherwise."""
    frames = getattr(item, "frames", item)
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise DataError(f"expected a video path, a decoded clip or a uint8 array [T, H, W, 3], "
                        f"got {type(item).__name__}{f' ({where})' if where else ''}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise DataError(f"video frames must be uint8 RGB [T, H, W, 3] with T >= 1, got "
                        f"{frames.dtype} {tuple(frames.shape)}{f' ({where})' if where else ''}")
    return frames


class TemporalTransformer(nn.Module):
    """Frame embeddings ``[B, T, E]`` → ``[B, width]``: a linear map to ``width``, learned
    positions (resampled beyond ``max_positions``), a pre-norm encoder, mean or class-token pool."""

    def __init__(self, dim: int, config: VideoFramesConfig) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, config.width)
        self.pos = nn.Parameter(torch.randn(config.max_positions, config.width) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, config.width)) if config.pool == "cls" else None
        self.encoder = transformer_encoder(config.width, config.layers, config.heads, 4.0)

    def positions(self, t: int) -> torch.Tensor:
        """``[t, width]``: the first ``t`` rows, or the table linearly resampled to ``t`` rows."""
        if t <= len(self.pos):
            return self.pos[:t]
        return F.interpolate(self.pos.t()[None], size=t, mode="linear", align_corners=False)[0].t()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        h = self.inp(frames) + self.positions(frames.shape[1])
        if self.cls is not None:
            h = torch.cat([self.cls.expand(len(h), -1, -1), h], dim=1)
        h = self.encoder(h)
        return h[:, 0] if self.cls is not None else h.mean(dim=1)


class TemporalMean(nn.Module):
    """Frame embeddings ``[B, T, E]`` → their mean ``[B, E]`` (order-blind, no weights)."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=1)


@TOWERS.register("video_frames")
class VideoFramesTower(Tower):
    """Frames through an image tower, then mean pooling or a temporal transformer (see the
    module docstring); ``[B, T, C, H, W]`` batches of the frame tower's preprocessed frames."""

    modality = "video"
    Config = VideoFramesConfig

    def __init__(self, config: VideoFramesConfig, embed_dim: int) -> None:
        super().__init__(config, embed_dim)
        self.frame_spec = from_dict(TowerSpec, dict(config.frame_tower),
                                    where="video tower option frame_tower")
        frame_cls = TOWERS.get(self.frame_spec.name)
        if frame_cls.modality != FRAME_MODALITY:
            raise ConfigError(f"frame_tower {self.frame_spec.name!r} encodes {frame_cls.modality!r}, "
                              f"not {FRAME_MODALITY!r}: frames go through an image tower")
        if frame_cls.learns_from_data:
            raise ConfigError(f"frame_tower {self.frame_spec.name!r} learns its preprocessing from "
                              "data, which a video tower cannot give it")
        self.frame_tower = build_tower(self.frame_spec, embed_dim, FRAME_MODALITY)
        if config.temporal == "mean":
            self.temporal: nn.Module = TemporalMean()
            width = embed_dim
        else:
            self.temporal = TemporalTransformer(embed_dim, config)
            width = config.width
            if config.frames > config.max_positions:
                logger.info("video tower: %d frames, %d positions; the position table is "
                            "resampled to each clip's length", config.frames, config.max_positions)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim)

    # -- data --------------------------------------------------------------------
    def read(self, item: Any) -> np.ndarray:
        """A path (or a file's bytes) → ``frames`` frames sampled as the module docstring says;
        a decoded clip or an array → its frames resampled to ``frames``. uint8 ``[T, H, W, 3]``.
        A decoded clip that kept its file's bytes (an upload, a shard member) is read again
        from them while training (random frames) or when it has another number of frames,
        within the bounds it was decoded with: it gives the frames its file would."""
        n = self.config.frames
        data, limits = getattr(item, "data", None), {}
        if isinstance(data, bytes) and (self.training or len(clip_frames(item)) != n):
            limits = {"max_pixels": getattr(item, "max_pixels", None),
                      "max_bytes": getattr(item, "max_bytes", MAX_BYTES)}
            item = data
        if isinstance(item, (str, Path, bytes)):
            where = str(item) if not isinstance(item, bytes) else "video bytes"
            if self.training:
                rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, ())))
                clip = read_clip(item, frames=n, sampling="random", rng=rng, where=where, **limits)
            else:
                clip = read_clip(item, frames=n, sampling="uniform", where=where, **limits)
            frames = clip_frames(clip, where)
        else:
            frames = clip_frames(item)
        return frames if len(frames) == n else frames[resample_indices(len(frames), n)]

    def preprocess_one(self, item: Any) -> torch.Tensor:
        """An item (see :meth:`read`) → ``[frames, C, H, W]``: each frame through the frame
        tower's own ``preprocess_one`` (its resize, crop and dtype)."""
        frames = self.read(item)
        return self.frame_tower.collate([self.frame_tower.preprocess_one(Image.fromarray(f))
                                         for f in frames])

    # -- model -------------------------------------------------------------------
    @property
    def splits_at_frames(self) -> bool:
        """Whether :meth:`features` stops at the frozen frame features (the frame backbone
        frozen, the temporal module training): then the trainer caches those per clip."""
        return self.trainable == "all" and self.frame_tower.backbone_frozen

    @property
    def backbone_frozen(self) -> bool:
        return self.trainable != "all" or self.frame_tower.backbone_frozen

    def head_modules(self) -> list[nn.Module]:
        if self.splits_at_frames:
            return [*self.frame_tower.head_modules(), self.temporal, self.norm, self.adapter, self.proj]
        return [self.adapter, self.proj]

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, C, H, W]`` → the frame tower's features of every frame, ``[B, T·width]``:
        ``B·T`` frames at once while the frame tower trains, else in calls of at most
        :data:`FRAME_CHUNK` frames (the same features: each frame's are its own in eval)."""
        if x.ndim != 5:
            raise DataError(f"a video batch is [B, T, C, H, W], got shape {tuple(x.shape)}")
        b = x.shape[0]
        flat = x.flatten(0, 1)
        if self.frame_tower.training or len(flat) <= FRAME_CHUNK:
            return self.frame_tower.features(flat).reshape(b, -1)
        parts = [self.frame_tower.features(part) for part in flat.split(FRAME_CHUNK)]
        return torch.cat(parts).reshape(b, -1)

    def pool(self, flat: torch.Tensor) -> torch.Tensor:
        """Frame features ``[B, T·width]`` → the clip's pooled, normalised features: each frame's
        frame-tower embedding (L2-normalised) through the temporal module, then the norm."""
        b = flat.shape[0]
        frames = self.frame_tower.head(flat.reshape(-1, self._frame_width()))
        frames = F.normalize(frames.float(), dim=-1).reshape(b, -1, frames.shape[-1])
        return self.norm(self.temporal(frames))

    def _frame_width(self) -> int:
        proj = self.frame_tower.proj
        return proj.in_features if isinstance(proj, nn.Linear) else self.embed_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        flat = self.frame_features(x)
        return flat if self.splits_at_frames else self.pool(flat)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        if self.splits_at_frames:
            features = self.pool(features)
        return self.proj(self.adapter(features))

    # -- what trains -------------------------------------------------------------
    def set_trainable(self, mode: str, adapter_hidden: int = 64) -> None:
        """``mode`` for the temporal module and the head (as every tower's); the frame tower
        keeps its own ``trainable`` under ``all`` and is locked under any other mode."""
        super().set_trainable(mode, adapter_hidden)
        self.frame_tower.set_trainable(self.frame_spec.trainable if mode == "all" else "none",
                                       adapter_hidden)
        self.train(self.training)

    # -- assets and binding ------------------------------------------------------
    def prepare(self, items: Sequence[Any]) -> None:
        """The frame tower's (its checks; image towers learn nothing from data)."""
        self.frame_tower.prepare([])

    def save_assets(self, folder: Path) -> None:
        """The frame tower's assets, in the subfolder ``frames`` (none: no subfolder)."""
        sub = Path(folder) / FRAMES_ASSETS
        sub.mkdir(exist_ok=True)
        self.frame_tower.save_assets(sub)
        if not any(sub.iterdir()):
            sub.rmdir()

    def load_assets(self, folder: Path) -> None:
        sub = Path(folder) / FRAMES_ASSETS
        self.frame_tower.load_assets(sub if sub.is_dir() else folder)

    @classmethod
    def bound_spec(cls, spec: TowerSpec, anchor: str, anchor_spec: TowerSpec) -> TowerSpec:
        """The spec to bind through ``anchor`` (see :func:`jointspace.train.init.bind_config`):
        when the anchor's tower is an image tower and ``spec`` names no ``frame_tower``, the
        frames go through a locked copy of it, initialised from its weights."""
        if "frame_tower" in spec.options or TOWERS.get(anchor_spec.name).modality != FRAME_MODALITY:
            return spec
        frames = {"name": anchor_spec.name, "options": dict(anchor_spec.options), "trainable": "none"}
        return dataclasses.replace(spec, options={**spec.options, "frame_tower": frames,
                                                  "frame_tower_from": anchor})

    def adopt_from(self, source: Any, folder: Path) -> str | None:
        """Load the frame tower from ``source`` (a model) when ``frame_tower_from`` names one
        of its towers: its weights (not an adapter) and assets; returns what was taken."""
        name = self.config.frame_tower_from
        if not name:
            return None
        if name not in source.towers:
            raise ConfigError(f"frame_tower_from {name!r}: {folder} has no such tower "
                              f"(it has {', '.join(source.towers)})")
        have = source.config.towers[name]
        if (have.name, have.options) != (self.frame_spec.name, self.frame_spec.options):
            raise ConfigError(f"frame_tower_from {name!r}: its tower is {have.name} {have.options}, "
                              f"the frame tower {self.frame_spec.name} {self.frame_spec.options}")
        state = {k: v for k, v in source.towers[name].state_dict().items()
                 if not k.startswith("adapter.")}
        missing, unexpected = self.frame_tower.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("adapter.")]
        if missing or unexpected:
            raise ConfigError(f"frame_tower_from {name!r}: the weights do not fit the frame tower "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        own = Path(folder) / name
        self.frame_tower.load_assets(own if own.is_dir() else folder)
        return f"frame tower from {name}"
