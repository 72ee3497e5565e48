"""The tower interface and the tower registry.

A tower turns one modality's raw items (paths, PIL images, strings …) into
unit vectors in the joint space, in three stages: ``preprocess_one`` (CPU,
one raw item → tensor, used by data loaders and ``encode``), ``features``
(the backbone: batch tensor → ``[B, width]``) and the head (an optional
residual adapter, then the projection ``proj`` to ``embed_dim``), after
which ``forward`` L2-normalises. A tower whose preprocessing is learned from
data (a tokenizer) does it in ``prepare`` and keeps it with ``save_assets`` /
``load_assets`` in its own subfolder of the model folder.

What an item of a modality is, and how it is read and checked, is its
plug-in's business (:mod:`jointspace.modalities`); ``MODALITIES`` and
``Modality`` are re-exported here for code written against earlier versions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TowerSpec, from_dict
from ..errors import ConfigError
from ..modalities import MODALITIES, Modality  # noqa: F401 (re-exported: the registry moved)
from ..registry import Registry




class Adapter(nn.Module):
    """A residual bottleneck MLP on frozen features (``x + up(gelu(down(norm(x))))``),
    initialised to the identity so training starts from the frozen tower's output."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.down = nn.Linear(width, hidden)
        self.up = nn.Linear(hidden, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.gelu(self.down(self.norm(x))))


class Tower(nn.Module):
    """Base class: subclasses set ``Config`` (a dataclass) and ``modality``,
    implement ``preprocess_one`` and ``features``, and own a ``proj`` layer."""

    Config: type = object
    modality: str = ""
    #: whether the backbone's weights come from elsewhere (a package, a local folder);
    #: such a tower built from a model folder needs no access to where they came from
    pretrained: bool = False
    #: whether :meth:`prepare` learns from the training items (a from-scratch tokenizer):
    #: a streamed run reads items for it only then
    learns_from_data: bool = False
    proj: nn.Module

    def __init__(self, config: Any, embed_dim: int) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = embed_dim
        self.adapter: nn.Module = nn.Identity()
        self.trainable = "all"

    # -- data ------------------------------------------------------------------
    def preprocess_one(self, item: Any) -> torch.Tensor:
        raise NotImplementedError

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(items))

    def sort_key(self, item: Any) -> int | None:
        """A length proxy for grouping similar items into batches (None: keep the order)."""
        return None

    # -- model -----------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled output ``[B, width]`` (before adapter and projection)."""
        raise NotImplementedError

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Adapter (if any) and projection: features → unnormalised ``[B, embed_dim]``."""
        return self.proj(self.adapter(features))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised embedding ``[B, embed_dim]``; ``forward`` normalises it."""
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(x), dim=-1)

    # -- what trains -----------------------------------------------------------
    @property
    def backbone_frozen(self) -> bool:
        return self.trainable != "all"

    def head_modules(self) -> list[nn.Module]:
        return [self.adapter, self.proj]

    def set_trainable(self, mode: str, adapter_hidden: int = 64) -> None:
        """Freeze what ``mode`` (``all``, ``head``, ``adapter``, ``none``) does not train.

        ``adapter`` adds an identity-initialised :class:`Adapter` on the features.
        Frozen parts stay in eval mode (see :meth:`train`)."""
        if mode not in ("all", "head", "adapter", "none"):
            raise ConfigError(f"trainable must be all, head, adapter or none, got {mode!r}")
        if mode == "adapter" and isinstance(self.adapter, nn.Identity):
            width = self.proj.in_features if isinstance(self.proj, nn.Linear) else None
            if width is None:
                raise ConfigError(f"tower {type(self).__name__} has no linear projection to adapt")
            self.adapter = Adapter(width, adapter_hidden).to(next(self.proj.parameters()).device)
        self.trainable = mode
        head = {id(p) for m in self.head_modules() for p in m.parameters()}
        for p in self.parameters():
            p.requires_grad_(mode == "all" or (mode != "none" and id(p) in head))
        self.train(self.training)

    def train(self, mode: bool = True) -> "Tower":
        """As ``nn.Module.train``, but a frozen backbone stays in eval mode (no dropout,
        no batch-norm statistics updates), as LiT's locked tower does."""
        super().train(mode)
        if mode and self.backbone_frozen:
            head = {id(m) for h in self.head_modules() for m in h.modules()}
            for m in self.modules():
                if m is not self and id(m) not in head:
                    m.training = False
            if self.trainable == "none":
                for h in self.head_modules():
                    h.train(False)
        return self

    def parameter_counts(self) -> dict[str, int]:
        """Trainable and frozen parameter counts (for the log and the model card)."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return {"trainable": trainable, "frozen": total - trainable}

    # -- assets ----------------------------------------------------------------
    def prepare(self, items: Sequence[Any]) -> None:
        """Fit data-dependent preprocessing (e.g. a tokenizer) on training items."""

    def save_assets(self, folder: Path) -> None:
        """Write preprocessing state that is not a tensor (e.g. ``tokenizer.json``)
        into ``folder``, this tower's own subfolder of the model folder."""

    def load_assets(self, folder: Path) -> None:
        """Read what :meth:`save_assets` wrote."""


TOWERS: Registry[type[Tower]] = Registry("tower")


def build_tower(spec: TowerSpec, embed_dim: int, modality: str) -> Tower:
    """Build a registered tower from its spec, checking options against its config."""
    cls = TOWERS.get(spec.name)
    if cls.modality != modality:
        raise ConfigError(f"tower {spec.name!r} encodes {cls.modality!r}, not {modality!r}")
    config = from_dict(cls.Config, dict(spec.options), where=f"towers.{modality}.options")
    tower = cls(config, embed_dim)
    if spec.trainable != "all":
        tower.set_trainable(spec.trainable)
    return tower
