"""The model folder: atomic save, load, and reading folders of older versions.

A folder holds ``config.json`` (the :class:`~jointspace.config.ModelConfig`),
``model.safetensors`` (every parameter and buffer), one subfolder per tower
for its assets (``text/tokenizer.json``), ``README.md`` (a model card) and
whatever extras a caller adds (``run.json``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from .config import ModelConfig, from_dict, to_dict
from .errors import ConfigError, JointspaceError
from .fileio import fsync_dir, fsync_file
from .progress import logger

if TYPE_CHECKING:
    from .model import JointModel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"


def save_model(model: "JointModel", folder: str | Path, extra: dict[str, Any] | None = None,
               weights: bool = True, card: str | None = None) -> Path:
    """Write config, tower assets (one subfolder per tower), card and weights into ``folder``.

    Everything is written into a temporary folder, flushed to disk, then
    renamed into place, weights last, and the folder is synced, so a kill or
    power loss at any moment leaves every file whole and the previous weights
    readable. Other files in the folder (checkpoints, logs) are left alone.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".save-", dir=folder) as tmp_name:
        tmp = Path(tmp_name)
        (tmp / CONFIG_FILE).write_text(json.dumps(to_dict(model.config), indent=2))
        for modality, tower in model.towers.items():
            (tmp / modality).mkdir()
            tower.save_assets(tmp / modality)
            if not any((tmp / modality).iterdir()):
                (tmp / modality).rmdir()  # a tower with no assets gets no folder
        for name, data in (extra or {}).items():
            (tmp / f"{name}.json").write_text(json.dumps(data, indent=2))
        if card is not None:
            (tmp / CARD_FILE).write_text(card)
        if weights:
            state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE))
        names = sorted(p.name for p in tmp.iterdir() if p.name != WEIGHTS_FILE)
        names += [WEIGHTS_FILE] if weights else []
        for name in names:
            for path in [tmp / name, *(tmp / name).rglob("*")]:
                if path.is_file():
                    fsync_file(path)
        for name in names:
            if (tmp / name).is_dir() and (folder / name).is_dir():
                _replace_dir(tmp / name, folder / name)
            else:
                os.replace(tmp / name, folder / name)
        fsync_dir(folder)
    return folder


def _replace_dir(new: Path, old: Path) -> None:
    """Swap a tower's asset folder: rename the old one aside, the new one in, drop the old."""
    aside = old.with_name(f".{old.name}.old")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(old, aside)
    os.replace(new, old)
    shutil.rmtree(aside, ignore_errors=True)


def read_config(folder: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` of a model folder (older layouts converted)."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise JointspaceError(f"not a model folder (no {CONFIG_FILE}): {folder}")
    raw = json.loads(path.read_text())
    if isinstance(raw, dict) and "towers" not in raw and ("architectures" in raw or "model_type" in raw):
        raise JointspaceError(f"{folder} is a Hugging Face folder ({raw.get('model_type', '?')}), not a "
                              f"jointspace model: `jointspace import {folder} --out DIR` makes one "
                              "of a CLIP or SigLIP folder; a text or vision encoder opens as a tower "
                              "(hf, hf_vision)")
    return from_dict(ModelConfig, migrate_config(raw, path), where=str(path))


def load_weights(model: "JointModel", folder: str | Path) -> None:
    """Load ``model.safetensors`` (older parameter names converted) and the towers' assets."""
    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise JointspaceError(f"model folder {folder} lacks {WEIGHTS_FILE} (a training run "
                              "that has not finished? resume it with --resume)")
    state = migrate_state(load_file(str(weights)), model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise JointspaceError(f"{weights} does not match {folder / CONFIG_FILE}: missing "
                              f"{missing[:3]}, unexpected {unexpected[:3]}")
    load_assets(model, folder)


def load_assets(model: "JointModel", folder: str | Path) -> None:
    """Each tower reads its subfolder (or, for folders written before subfolders, the folder)."""
    folder = Path(folder)
    for modality, tower in model.towers.items():
        own = folder / modality
        tower.load_assets(own if own.is_dir() else folder)


def migrate_state(state: dict[str, torch.Tensor], model: "JointModel") -> dict[str, torch.Tensor]:
    """Weights saved before pairs had their own temperature hold one ``logit_scale``
    (and ``logit_bias``): they belong to the model's single pair."""
    if "logit_scale" not in state:
        return state
    pairs = model.config.resolved_pairs()
    if len(pairs) != 1:
        raise JointspaceError("these weights have one temperature, but the config names "
                              f"{len(pairs)} pairs; retrain or keep one pair")
    state = dict(state)
    key = pairs[0].key
    state[f"logit_scales.{key}"] = state.pop("logit_scale")
    if "logit_bias" in state:
        state[f"logit_biases.{key}"] = state.pop("logit_bias")
    return state


def migrate_config(data: dict[str, Any], where: Path) -> dict[str, Any]:
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


def model_fingerprint(model: "JointModel") -> str:
    """A hash of everything that decides a model's embeddings: its config, every
    weight (buffers included) and every tower's assets (tokenizers …). Two models
    with the same fingerprint embed every input identically."""
    import hashlib

    h = hashlib.sha256(json.dumps(to_dict(model.config), sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    with tempfile.TemporaryDirectory() as tmp:
        for modality, tower in sorted(model.towers.items()):
            folder = Path(tmp) / modality
            folder.mkdir()
            tower.save_assets(folder)
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                h.update(f"{modality}/{path.relative_to(folder)}".encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:24]


def folder_fingerprint(folder: str | Path) -> str:
    """A hash of what decides a saved model's embeddings, read from its folder without
    building the model: ``config.json``, the weights, each tower's asset subfolder, and
    the top-level ``tokenizer.json`` of older layouts. Other files (logs, evaluations
    written into the folder) do not count."""
    import hashlib

    folder = Path(folder)
    config = read_config(folder)
    if not (folder / WEIGHTS_FILE).is_file():
        raise JointspaceError(f"model folder {folder} lacks {WEIGHTS_FILE}")
    files = [folder / CONFIG_FILE, folder / WEIGHTS_FILE, folder / "tokenizer.json"]
    for modality in config.towers:
        if (folder / modality).is_dir():
            files += sorted(p for p in (folder / modality).rglob("*") if p.is_file())
    h = hashlib.sha256(b"folder-v1")
    for path in (p for p in files if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:24]
