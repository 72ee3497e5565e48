"""The joint model: towers keyed by modality, one learnable temperature (and
bias) per trained pair, and the config that rebuilds it.

The folder format (save, load, older layouts) lives in :mod:`jointspace.model_io`;
:func:`load` rebuilds a model from its folder alone.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .config import ModelConfig, PairSpec, modality_of
from .errors import ConfigError, JointspaceError
from .model_io import (CONFIG_FILE, WEIGHTS_FILE, load_assets, load_weights, read_config,
                       resolve_device, save_model)
from .objectives import MatryoshkaObjective, Objective, build_objective
from .progress import progress
from .towers import Tower, build_tower
from .vectors import prefix_normalise

#: a batch key ``"text#features"`` carries precomputed backbone features of field ``text``
from .data.pairs import FEATURES_SUFFIX  # noqa: E402 (re-exported)

#: the convenience methods ``encode_text``, ``encode_image`` and ``encode_audio`` of the
#: public API (each is ``encode(<name>, …)``): their names are documented to users
USER_FACING_DEFAULTS = ("text", "image", "audio")

__all__ = ["FEATURES_SUFFIX", "JointModel", "as_items", "load", "build_pair_objectives",
           "build_training_objective", "resolve_device", "CONFIG_FILE", "WEIGHTS_FILE"]


def _objective(config: ModelConfig, pair: PairSpec | None) -> Objective:
    spec = (pair.objective if pair is not None else None) or config.objective
    base = build_objective(spec.name, **spec.options)
    if not config.matryoshka_dims:
        return base
    return MatryoshkaObjective(base, config.nested_dims(), config.matryoshka_weights or None)


def build_pair_objectives(config: ModelConfig) -> dict[str, Objective]:
    """Each pair's objective (its own, or the model's), summed over the nested sizes
    when the model has Matryoshka sizes (``matryoshka_dims`` is the one route to them)."""
    return {pair.key: _objective(config, pair) for pair in config.resolved_pairs()}


def build_training_objective(config: ModelConfig) -> Objective:
    """The objective of the model's first pair (for single-pair code and benchmarks)."""
    return _objective(config, config.resolved_pairs()[0])


def as_items(items: Any) -> list[Any]:
    """``items`` as a list of items, one item given alone becoming a list of one: a
    string or path (never its characters), bytes, a PIL image, or a 1-D array of numbers
    (one audio clip's samples); anything else is iterated (a list, a generator …)."""
    if isinstance(items, (str, bytes, os.PathLike, Image.Image)):
        return [items]
    if isinstance(items, (np.ndarray, torch.Tensor)) and items.ndim <= 1 \
            and (isinstance(items, torch.Tensor) or items.dtype.kind in "biuf"):
        return [items]
    try:
        return list(items)
    except TypeError:
        raise JointspaceError(f"expected an item or a sequence of items, got "
                              f"{type(items).__name__}") from None


class JointModel(nn.Module):
    """Towers mapping each modality into one space of ``embed_dim`` unit vectors.

    >>> model = JointModel(ModelConfig())
    >>> sorted(model.towers), list(model.logit_scales)
    (['image', 'text'], ['image-text'])
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
        self.pairs = config.resolved_pairs()
        used = {modality_of(f) for p in self.pairs for f in p.fields}
        # a locked tower may ride along in no pair (the text tower of a model that binds
        # audio to images only); anything that trains must be trained by some pair
        unused = [m for m, spec in config.towers.items() if m not in used and spec.trainable != "none"]
        if unused:
            raise ConfigError(f"tower(s) {', '.join(unused)} are in no pair; add a pair to "
                              "model.pairs, lock the tower (trainable: none) or remove it")
        self.towers = nn.ModuleDict({m: build_tower(spec, config.embed_dim, m)
                                     for m, spec in config.towers.items()})
        # each pair's built objective (a Matryoshka wrapper included) says how to start
        # and bound its temperature; a class attribute would be the wrapper's, not its base's
        objectives = build_pair_objectives(config)
        self.logit_scales = nn.ParameterDict({
            k: nn.Parameter(torch.tensor(float(o.init_logit_scale))) for k, o in objectives.items()})
        self.logit_biases = nn.ParameterDict({
            k: nn.Parameter(torch.tensor(float(o.init_logit_bias)))
            for k, o in objectives.items() if o.init_logit_bias is not None})
        self.max_logit_scales = {k: float(o.max_logit_scale) for k, o in objectives.items()}

    # -- temperatures ------------------------------------------------------------
    def logit_scale_for(self, pair: str) -> nn.Parameter:
        return self.logit_scales[pair]

    def logit_bias_for(self, pair: str) -> nn.Parameter | None:
        return self.logit_biases[pair] if pair in self.logit_biases else None

    @property
    def logit_scale(self) -> nn.Parameter:
        """The first pair's log temperature scale (the only one of an image–text model)."""
        return self.logit_scales[self.pairs[0].key]

    @property
    def logit_bias(self) -> nn.Parameter | None:
        return self.logit_bias_for(self.pairs[0].key)

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Keep each log temperature scale in ``[0, max_logit_scale]`` (called after each
        optimiser step, as OpenCLIP does: a value past the bound would get no gradient)."""
        for key, scale in self.logit_scales.items():
            scale.clamp_(0.0, self.max_logit_scales[key])

    # -- towers ----------------------------------------------------------------
    @property
    def modalities(self) -> list[str]:
        return list(self.towers)

    def tower(self, modality: str) -> Tower:
        if modality not in self.towers:
            raise JointspaceError(f"this model has no {modality!r} tower; it has: "
                                  f"{', '.join(self.towers)}")
        return self.towers[modality]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Embed each field of ``batch`` (``image``, ``text@paraphrase`` …) with its
        modality's tower; returns unit vectors per field. A key ``field#features``
        holds a frozen backbone's cached features: only the tower's head runs."""
        out = {}
        for key, x in batch.items():
            if key.endswith(FEATURES_SUFFIX):
                f = key[:-len(FEATURES_SUFFIX)]
                out[f] = F.normalize(self.towers[modality_of(f)].head(x), dim=-1)
            else:
                out[key] = self.towers[modality_of(key)](x)
        return out

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        """Trainable and frozen parameters per tower (temperatures under ``pairs``)."""
        counts = {m: t.parameter_counts() for m, t in self.towers.items()}
        temps = [*self.logit_scales.values(), *self.logit_biases.values()]
        counts["pairs"] = {"trainable": sum(p.numel() for p in temps if p.requires_grad),
                           "frozen": sum(p.numel() for p in temps if not p.requires_grad)}
        return counts

    # -- inference -------------------------------------------------------------
    @torch.no_grad()
    def encode(self, modality: str, items: Sequence[Any] | Any, *, batch_size: int = 256,
               dim: int | None = None, show_progress: bool = False) -> np.ndarray:
        """Embed raw items of one modality → float32 ``[N, dim]`` unit vectors.

        One item given alone (a string, a path, a PIL image, one clip's samples) is one
        item: ``encode("text", "red")`` is ``[1, dim]``, as ``encode("text", ["red"])``.

        ``dim`` returns the renormalised prefix of that size (one of the
        model's ``matryoshka_dims``, or the full ``embed_dim``);
        ``show_progress`` draws a progress bar. Items are batched in order of
        the tower's :meth:`~jointspace.towers.Tower.sort_key` (less padding)
        and returned in the order given.
        """
        tower = self.tower(modality)
        dim = self._check_dim(dim)
        items = as_items(items)
        keys = [tower.sort_key(item) for item in items]
        order = (sorted(range(len(items)), key=keys.__getitem__)
                 if items and None not in keys else list(range(len(items))))
        # a model already in eval mode is never toggled, so threads may share it
        was_training = self.training
        if was_training:
            self.eval()
        device = next(self.parameters()).device
        out = []
        try:
            starts = range(0, len(items), batch_size)
            for start in progress(starts, desc=f"embed {modality}", unit="batch",
                                  disable=not show_progress, leave=False):
                chunk = [items[i] for i in order[start:start + batch_size]]
                x = tower.collate([tower.preprocess_one(item) for item in chunk]).to(device)
                out.append(prefix_normalise(tower.embed(x).float(), dim).cpu())
        finally:
            if was_training:
                self.train(True)
        if not out:
            return np.zeros((0, dim), dtype=np.float32)
        result = np.empty((len(items), dim), dtype=np.float32)
        result[order] = torch.cat(out).numpy()
        return result

    def encode_text(self, texts: Sequence[str] | str, **kwargs: Any) -> np.ndarray:
        """Embed strings (one, or a sequence); see :meth:`encode`."""
        return self.encode("text", texts, **kwargs)

    def encode_image(self, images: Any, **kwargs: Any) -> np.ndarray:
        """Embed image paths or PIL images (one, or a sequence); see :meth:`encode`."""
        return self.encode("image", images, **kwargs)

    def encode_audio(self, clips: Any, **kwargs: Any) -> np.ndarray:
        """Embed audio files or mono sample arrays (one, or a sequence); see :meth:`encode`."""
        return self.encode("audio", clips, **kwargs)

    def _check_dim(self, dim: int | None) -> int:
        full = self.config.embed_dim
        if dim is None or dim == full:
            return full
        if dim not in self.config.nested_dims():
            raise JointspaceError(f"dim {dim} is not one this model was trained for; choose from "
                                  f"{self.config.nested_dims()}")
        return dim

    # -- persistence -----------------------------------------------------------
    def save(self, folder: str | Path, extra: dict[str, Any] | None = None,
             weights: bool = True, card: str | None = None) -> Path:
        """Write the model folder atomically (see :func:`jointspace.model_io.save_model`).
        ``extra`` mappings are saved as JSON files named by their keys (``{"run": {...}}``
        → ``run.json``); ``weights=False`` writes everything but the weights (a run that
        has not finished yet); ``card`` is written as the folder's ``README.md``."""
        return save_model(self, folder, extra, weights, card)

    def load_assets(self, folder: str | Path) -> None:
        """Read every tower's assets from a model folder (weights untouched)."""
        load_assets(self, folder)

    @classmethod
    def load(cls, folder: str | Path) -> "JointModel":
        """Rebuild a model from a folder written by :meth:`save`."""
        model = cls(read_config(folder))
        load_weights(model, folder)
        return model.eval()


def load(folder: str | Path) -> JointModel:
    """Load a trained model folder: ``model = jointspace.load("runs/demo/model")``."""
    return JointModel.load(folder)
