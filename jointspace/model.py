"""The joint model: towers keyed by modality, the learnable temperature (and
bias), and the config that rebuilds it.

A model folder holds ``config.json`` (the :class:`~jointspace.config.ModelConfig`),
``model.safetensors`` and each tower's assets (``tokenizer.json``);
:func:`load` rebuilds the model from the folder alone.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from PIL import Image
from torch import nn

from .config import ModelConfig, from_dict, to_dict
from .errors import ConfigError, JointspaceError
from .fileio import fsync_dir, fsync_file
from .objectives import MatryoshkaObjective, Objective, build_objective
from .progress import logger, progress
from .towers import Tower, build_tower

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def build_training_objective(config: ModelConfig) -> Objective:
    """The model's objective, summed over its nested sizes when it has Matryoshka sizes
    (``matryoshka_dims`` is the one route to nested sizes)."""
    base = build_objective(config.objective.name, **config.objective.options)
    if not config.matryoshka_dims:
        return base
    return MatryoshkaObjective(base, config.nested_dims(), config.matryoshka_weights or None)


class JointModel(nn.Module):
    """Towers mapping each modality into one space of ``embed_dim`` unit vectors.

    >>> model = JointModel(ModelConfig())
    >>> sorted(model.towers)
    ['image', 'text']
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        for k in config.matryoshka_dims:
            if not 0 < k <= config.embed_dim:
                raise ConfigError(f"matryoshka_dims entry {k} must be in 1..{config.embed_dim}")
        if config.matryoshka_weights and len(config.matryoshka_weights) != len(config.nested_dims()):
            raise ConfigError(f"matryoshka_weights has {len(config.matryoshka_weights)} entries for "
                              f"the sizes {config.nested_dims()}")
        self.towers = nn.ModuleDict({m: build_tower(spec, config.embed_dim, m)
                                     for m, spec in config.towers.items()})
        # the built objective (a Matryoshka wrapper included) says how to start and bound
        # the temperature; a class attribute would be the wrapper's default, not its base's
        objective = build_training_objective(config)
        self.logit_scale = nn.Parameter(torch.tensor(float(objective.init_logit_scale)))
        bias = objective.init_logit_bias
        self.logit_bias = nn.Parameter(torch.tensor(float(bias))) if bias is not None else None
        self.max_logit_scale = float(objective.max_logit_scale)

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Keep the log temperature scale in ``[0, max_logit_scale]`` (called after each
        optimiser step, as OpenCLIP does: a value past the bound would get no gradient)."""
        self.logit_scale.clamp_(0.0, self.max_logit_scale)

    @property
    def modalities(self) -> list[str]:
        return list(self.towers)

    def tower(self, modality: str) -> Tower:
        if modality not in self.towers:
            raise JointspaceError(f"this model has no {modality!r} tower; it has: "
                                  f"{', '.join(self.towers)}")
        return self.towers[modality]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Embed each modality present in ``batch``; returns unit vectors per modality."""
        return {m: self.towers[m](x) for m, x in batch.items() if m in self.towers}

    # -- inference -----------------------------------------------------------
    @torch.no_grad()
    def encode(self, modality: str, items: Sequence[Any], *, batch_size: int = 256,
               dim: int | None = None, show_progress: bool = False) -> np.ndarray:
        """Embed raw items of one modality → float32 ``[N, dim]`` unit vectors.

        ``dim`` returns the renormalised prefix of that size (one of the
        model's ``matryoshka_dims``, or the full ``embed_dim``);
        ``show_progress`` draws a progress bar.
        """
        tower = self.tower(modality)
        dim = self._check_dim(dim)
        was_training = self.training
        self.eval()
        device = self.logit_scale.device
        out = []
        try:
            starts = range(0, len(items), batch_size)
            for start in progress(starts, desc=f"embed {modality}", unit="batch",
                                  disable=not show_progress, leave=False):
                chunk = items[start:start + batch_size]
                x = tower.collate([tower.preprocess_one(item) for item in chunk]).to(device)
                out.append(F.normalize(tower.embed(x)[:, :dim].float(), dim=-1).cpu())
        finally:
            self.train(was_training)
        if not out:
            return np.zeros((0, dim), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def encode_text(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        """Embed strings; see :meth:`encode`."""
        if isinstance(texts, str):
            texts = [texts]
        return self.encode("text", list(texts), **kwargs)

    def encode_image(self, images: Any, **kwargs: Any) -> np.ndarray:
        """Embed image paths or PIL images (one, or a sequence); see :meth:`encode`."""
        if isinstance(images, (str, os.PathLike, Image.Image)):
            images = [images]  # one path or one PIL image, as encode_text takes one string
        return self.encode("image", list(images), **kwargs)

    def _check_dim(self, dim: int | None) -> int:
        full = self.config.embed_dim
        if dim is None or dim == full:
            return full
        if dim not in self.config.nested_dims():
            raise JointspaceError(f"dim {dim} is not one this model was trained for; choose from "
                                  f"{self.config.nested_dims()}")
        return dim

    # -- persistence ---------------------------------------------------------
    def save(self, folder: str | Path, extra: dict[str, Any] | None = None,
             weights: bool = True) -> Path:
        """Write config, tower assets and weights into ``folder``.

        Each file is written to a temporary name, flushed to disk and renamed
        over the old one, weights last, and the folder is synced after the
        renames, so a kill or power loss at any moment leaves every file whole
        and the previous weights readable. Other files in the folder (checkpoints,
        logs) are left alone. ``extra`` mappings are saved as JSON files named
        by their keys (``{"run": {...}}`` → ``run.json``). ``weights=False``
        writes everything but the weights (a run that has not finished yet).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".save-", dir=folder) as tmp_name:
            tmp = Path(tmp_name)
            (tmp / CONFIG_FILE).write_text(json.dumps(to_dict(self.config), indent=2))
            for tower in self.towers.values():
                tower.save_assets(tmp)
            for name, data in (extra or {}).items():
                (tmp / f"{name}.json").write_text(json.dumps(data, indent=2))
            if weights:
                state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
                save_file(state, str(tmp / WEIGHTS_FILE))
            names = sorted(p.name for p in tmp.iterdir() if p.name != WEIGHTS_FILE)
            names += [WEIGHTS_FILE] if weights else []
            for name in names:
                fsync_file(tmp / name)
            for name in names:
                os.replace(tmp / name, folder / name)
            fsync_dir(folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "JointModel":
        """Rebuild a model from a folder written by :meth:`save`."""
        folder = Path(folder)
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise JointspaceError(f"not a model folder (no {CONFIG_FILE}): {folder}")
        config = from_dict(ModelConfig, _migrate(json.loads(config_path.read_text()), config_path),
                           where=str(config_path))
        model = cls(config)
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise JointspaceError(f"model folder {folder} lacks {WEIGHTS_FILE} (a training run "
                                  "that has not finished? resume it with --resume)")
        missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
        if missing or unexpected:
            raise JointspaceError(f"{weights} does not match {config_path}: missing "
                                  f"{missing[:3]}, unexpected {unexpected[:3]}")
        for tower in model.towers.values():
            tower.load_assets(folder)
        return model.eval()


def _migrate(data: dict[str, Any], where: Path) -> dict[str, Any]:
    """Read configs written before ``matryoshka`` stopped being an objective name:
    ``objective: {name: matryoshka, options: {base, dims, weights}}`` becomes the base
    objective plus ``matryoshka_dims`` / ``matryoshka_weights`` (the same loss)."""
    objective = data.get("objective") or {}
    if objective.get("name") != "matryoshka":
        return data
    options = dict(objective.get("options") or {})
    base = options.pop("base", "infonce")
    dims = [int(k) for k in options.pop("dims", [])]
    weights = options.pop("weights", None)
    embed_dim = int(data.get("embed_dim", ModelConfig.embed_dim))
    if embed_dim not in dims:
        if weights:
            raise JointspaceError(f"{where}: cannot convert the 'matryoshka' objective, whose dims "
                                  f"{dims} lack the full size {embed_dim}; edit it to use "
                                  "model.matryoshka_dims")
        dims.append(embed_dim)
    order = sorted(range(len(dims)), key=lambda i: -dims[i])
    logger.info("%s: converting objective 'matryoshka' to %r with matryoshka_dims %s", where, base, dims)
    return {**data, "objective": {"name": base, "options": options},
            "matryoshka_dims": [dims[i] for i in order if dims[i] != embed_dim],
            "matryoshka_weights": [float(weights[i]) for i in order] if weights else []}


def resolve_device(name: str | None) -> torch.device:
    """``None`` or ``"auto"`` → the first CUDA device when there is one, else the CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"device {name!r} is not a device name ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but no CUDA device is available")
    return device


def load(folder: str | Path) -> JointModel:
    """Load a trained model folder: ``model = jointspace.load("runs/demo/model")``."""
    return JointModel.load(folder)
