"""The tower interface and registry.

A tower turns one modality's raw items (paths, PIL images, strings …) into
unit vectors in the joint space, in two stages: ``preprocess_one`` (CPU, one
raw item → tensor, used by data loaders and ``encode``) and ``forward``
(batch tensor → L2-normalised ``[B, embed_dim]``). A tower whose preprocessing
is learned from data (a tokenizer) does it in ``prepare`` and keeps it with
``save_assets`` / ``load_assets`` beside the weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TowerSpec, from_dict
from ..registry import Registry


class Tower(nn.Module):
    """Base class: subclasses set ``Config`` (a dataclass) and ``modality``."""

    Config: type = object
    modality: str = ""

    def __init__(self, config: Any, embed_dim: int) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = embed_dim

    def preprocess_one(self, item: Any) -> torch.Tensor:
        raise NotImplementedError

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(items))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised embedding ``[B, embed_dim]``; ``forward`` normalises it."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(x), dim=-1)

    def prepare(self, items: Sequence[Any]) -> None:
        """Fit data-dependent preprocessing (e.g. a tokenizer) on training items."""

    def save_assets(self, folder: Path) -> None:
        """Write preprocessing state that is not a tensor (e.g. ``tokenizer.json``)."""

    def load_assets(self, folder: Path) -> None:
        """Read what :meth:`save_assets` wrote."""


TOWERS: Registry[type[Tower]] = Registry("tower")


def build_tower(spec: TowerSpec, embed_dim: int, modality: str) -> Tower:
    """Build a registered tower from its spec, checking options against its config."""
    cls = TOWERS.get(spec.name)
    if cls.modality != modality:
        from ..errors import ConfigError
        raise ConfigError(f"tower {spec.name!r} encodes {cls.modality!r}, not {modality!r}")
    config = from_dict(cls.Config, dict(spec.options), where=f"towers.{modality}.options")
    return cls(config, embed_dim)
