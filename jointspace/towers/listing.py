"""What can be loaded: every registered tower, whether its pretrained weights are on
this machine, its size, and the local Hugging Face folders that open as towers or
whole models (``jointspace towers``; as ``open_clip.list_pretrained()`` does)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import ConfigError
from .base import TOWERS, Tower

#: the embedding size the listing builds towers at (the projection's share of the count)
LISTING_EMBED_DIM = 128


@dataclass(frozen=True)
class TowerInfo:
    """One registered tower as the listing shows it."""

    name: str
    modality: str
    #: "from scratch", "pretrained (present)", "pretrained (needs options.path)", …
    weights: str
    #: parameters at the default options and ``LISTING_EMBED_DIM`` (None: not buildable so)
    parameters: int | None
    summary: str


@dataclass(frozen=True)
class FolderInfo:
    """A local model folder and what opens it."""

    path: Path
    architecture: str
    opens_as: str
    #: parameters in the folder's safetensors files (read from their headers), if any
    parameters: int | None = None


def list_towers(names: Iterable[str] | None = None) -> list[TowerInfo]:
    """Build each registered tower at its default options and say what it is.

    A pretrained tower whose weights ship in an installed package (``minilm``)
    is built from them: ``weights`` says "present" and the count is real. One
    that needs a local folder (``hf``) says so.

    >>> [t.name for t in list_towers(["convnet"])]
    ['convnet']
    """
    out = []
    for name in names or TOWERS.names():
        cls = TOWERS.get(name)
        doc = " ".join((cls.__doc__ or "").split("\n\n")[0].split()).split(". ")[0].rstrip(".")
        try:
            tower: Tower | None = cls(cls.Config(), LISTING_EMBED_DIM)
            reason = getattr(tower, "unavailable", None)
        except (ConfigError, TypeError) as e:  # a required option without a default
            tower, reason = None, str(e)
        if not cls.pretrained:
            weights = "from scratch"
        elif reason:
            weights = "pretrained: needs options.path (a local folder)"
        else:
            weights = "pretrained: present"
        usable = tower is not None and not reason
        count = sum(p.numel() for p in tower.parameters()) if usable else None
        out.append(TowerInfo(name, cls.modality, weights, count, doc))
    return out


def hf_cache_folders() -> list[Path]:
    """The snapshot folders of the local Hugging Face hub cache (``HF_HUB_CACHE``,
    ``HF_HOME/hub`` or ``~/.cache/huggingface/hub``); never any network."""
    root = Path(os.environ.get("HF_HUB_CACHE")
                or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    return sorted(root.glob("models--*/snapshots/*")) if root.is_dir() else []


def scan_folders(roots: Iterable[str | Path], max_depth: int = 3) -> list[FolderInfo]:
    """Model folders under ``roots`` (a Hugging Face ``config.json`` naming its
    ``architectures`` or ``model_type``, or a jointspace model's), and what opens each."""
    found, seen = [], set()
    for folder in _walk(roots, max_depth):
        if folder.resolve() in seen:  # a root given twice, or inside another
            continue
        seen.add(folder.resolve())
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(config, dict):
            continue
        if "towers" in config:  # a jointspace model folder
            found.append(FolderInfo(folder, "jointspace model", "jointspace.load / every verb",
                                    safetensors_parameters(folder)))
            continue
        if not config.get("architectures") and not config.get("model_type"):
            continue
        arch = ", ".join(config.get("architectures") or []) or str(config.get("model_type", "?"))
        found.append(FolderInfo(folder, arch, opens_as(config), safetensors_parameters(folder)))
    return found


def safetensors_parameters(folder: Path) -> int | None:
    """The parameter count of the ``*.safetensors`` files in ``folder``, from their JSON
    headers alone (no tensor is read); None when there are none or one is unreadable."""
    total, files = 0, sorted(folder.glob("*.safetensors"))
    for path in files:
        try:
            with open(path, "rb") as f:
                size = int.from_bytes(f.read(8), "little")
                if not 0 < size <= 100_000_000:
                    return None
                header = json.loads(f.read(size))
        except (OSError, ValueError):
            return None
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry.get("shape", []):
                    count *= int(dim)
                total += count
    return total if files else None


#: model types the ``hf`` text tower is tested on (encoder-only text transformers)
_TEXT_ENCODERS = {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "deberta",
                  "deberta-v2", "camembert", "albert", "e5", "nomic_bert", "modernbert"}


def opens_as(config: dict) -> str:
    """What in jointspace opens a folder with this ``config.json``."""
    model_type = str(config.get("model_type", ""))
    if model_type in {"clip", "siglip"}:
        return "jointspace import (a whole model); its vision half: tower hf_vision"
    if model_type == "siglip2":
        return "tower hf_clip_text (its text half; the image half is not supported yet)"
    if model_type in {"clip_vision_model", "siglip_vision_model", "vit", "dinov2", "convnext"}:
        return "tower hf_vision"
    if model_type in _TEXT_ENCODERS:
        return "tower hf (text)"
    return "not supported (no tower for this family yet)"


def _walk(roots: Iterable[str | Path], max_depth: int) -> Iterator[Path]:
    for root in roots:
        root = Path(root).expanduser()
        if not root.is_dir():
            continue
        stack = [(root, 0)]
        while stack:
            folder, depth = stack.pop()
            if (folder / "config.json").is_file():
                yield folder
                continue
            if depth < max_depth:
                try:
                    children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
                except OSError:
                    continue
                stack.extend((child, depth + 1) for child in reversed(children))
