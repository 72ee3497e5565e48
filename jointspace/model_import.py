"""A local CLIP or SigLIP folder as a jointspace model (``jointspace import``).

:func:`import_model` reads a Hugging Face ``CLIPModel`` / ``SiglipModel`` folder
(offline; ``Siglip2Model`` folders are refused: :data:`NOT_YET`) and writes a model folder that
:func:`jointspace.load` rebuilds with no access to the source: the image tower
``hf_vision`` and the text tower ``hf_clip_text``, both with the family's own
preprocessing and projection (``head: pretrained``), ``embed_dim`` the projection
size, the learned ``logit_scale`` (and SigLIP's ``logit_bias``) as the pair's
temperature, the family's objective (CLIP ``infonce``, SigLIP ``sigmoid``), a
``run.json`` to fine-tune from, ``imported.json`` (the source folder, family and Hub
origin) and a model card naming the source.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig, ObjectiveSpec, RunConfig, TowerSpec, TrainConfig, to_dict
from .errors import ConfigError
from .model import CONFIG_FILE, WEIGHTS_FILE, JointModel
from .progress import logger
from .towers.hf_loading import quiet_transformers, transformers_module

#: a CLIP or SigLIP folder holds, by definition, an image tower and a text tower
USER_FACING_DEFAULTS = ("image", "text")
#: how far a stored logit_scale may pass the bound and still be at it: float32's rounding
#: (CLIP's ln 100 is stored as 4.6051702499…, math.log(100) is 4.6051701859…)
SCALE_TOLERANCE = 1e-6
#: the training settings ``run.json`` offers for fine-tuning a pretrained pair
FINE_TUNE = TrainConfig(lr=1e-5, warmup_steps=50, weight_decay=0.1)


@dataclass(frozen=True)
class Family:
    """How one family of whole models becomes a jointspace model."""

    name: str  # for people: "CLIP"
    objective: str
    has_bias: bool  # a learned logit_bias (SigLIP)


FAMILIES = {"clip": Family("CLIP", "infonce", False),
            "siglip": Family("SigLIP", "sigmoid", True)}
#: whole models import refuses, and why (before anything is loaded)
NOT_YET = {"siglip2": "SigLIP 2 folders are not imported yet: their text half opens as the "
                      "hf_clip_text tower; their image half (NaFlex) is not an hf_vision family yet"}


def import_model(folder: str | Path, out: str | Path) -> Path:
    """Write the jointspace model folder ``out`` for the CLIP / SigLIP folder ``folder``.

    Nothing is trained or downloaded. ``out`` must not already hold a model. Returns ``out``;
    ``jointspace.load(out)`` then embeds as ``get_text_features`` / ``get_image_features``
    do (L2-normalised), and ``exp(model.logit_scale)·cos (+ model.logit_bias)`` are
    the model's ``logits_per_image``.

    >>> import_model("models/clip-vit-base-patch32", "runs/clip")  # doctest: +SKIP
    >>> jointspace.load("runs/clip").encode_text("a photo of a cat").shape  # doctest: +SKIP
    (1, 512)
    """
    source = Path(folder).expanduser().resolve()
    out = Path(out)
    if (out / CONFIG_FILE).exists() or (out / WEIGHTS_FILE).exists():
        raise ConfigError(f"{out} already holds a model; remove it or choose another --out")
    hf = _read_hf_config(source)
    family = FAMILIES[hf["model_type"]]
    config = model_config(source, family, _projection_size(hf, source))
    model = JointModel(config)  # each tower loads its half (and its preprocessing) from source
    for modality, tower in model.towers.items():
        if getattr(tower, "unavailable", None):
            raise ConfigError(f"{source}: the {modality} tower cannot open it: {tower.unavailable}")
    scale, bias = read_temperature(source, family)
    key = model.pairs[0].key
    with torch.no_grad():
        model.logit_scales[key].copy_(scale)
        if bias is not None:
            model.logit_biases[key].copy_(bias)
    if float(scale) > model.max_logit_scales[key] + SCALE_TOLERANCE:
        logger.warning("%s: its temperature exp(logit_scale) = %.1f is above jointspace's bound "
                       "%.0f; embedding and search use it as is, training clamps it", source,
                       math.exp(float(scale)), math.exp(model.max_logit_scales[key]))
    # the model folder holds everything: the saved towers never read ``source`` again
    model.config = replace(config, towers={m: replace(s, options={**s.options, "path": ""})
                                           for m, s in config.towers.items()})
    run = RunConfig(model=model.config, train=FINE_TUNE)
    # ``imported.json``: where the weights came from, for the reports (the card says it in words)
    imported = {"source": str(source), "family": family.name, "origin": _hub_origin(source) or None,
                "architectures": hf.get("architectures") or []}
    model.save(out, extra={"run": to_dict(run), "imported": imported},
               card=model_card(model, source, hf, family, out))
    logger.info("imported %s (%s) into %s", source, family.name, out)
    return out


def model_config(source: Path, family: Family, embed_dim: int) -> ModelConfig:
    """Both towers on ``source`` with the family's own projection, and its objective."""
    return ModelConfig(
        embed_dim=embed_dim,
        towers={"image": TowerSpec("hf_vision", {"path": str(source), "head": "pretrained"}),
                "text": TowerSpec("hf_clip_text", {"path": str(source), "head": "pretrained"})},
        objective=ObjectiveSpec(family.objective))


def _read_hf_config(source: Path) -> dict[str, Any]:
    path = source / "config.json"
    if not path.is_file():
        raise ConfigError(f"{source} is not a Hugging Face model folder (no config.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type in NOT_YET:
        raise ConfigError(f"{source}: {NOT_YET[model_type]}")
    if model_type not in FAMILIES:
        raise ConfigError(f"{source} holds a {model_type or 'model of unknown type'!r}; jointspace "
                          f"import opens whole {', '.join(FAMILIES)} models (a vision or text model "
                          "alone opens as a tower: hf_vision, hf)")
    return data


def _projection_size(hf: dict[str, Any], source: Path) -> int:
    """CLIP's ``projection_dim``; SigLIP's text head size, which its image side must match."""
    with quiet_transformers():
        try:
            config = transformers_module().AutoConfig.from_pretrained(str(source), local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"cannot read {source / 'config.json'}: {str(e).splitlines()[0]}") from None
    if hf["model_type"] == "clip":
        return int(config.projection_dim)
    text = int(config.text_config.projection_size)
    vision = int(config.vision_config.hidden_size)
    if text != vision:
        raise ConfigError(f"{source}: text head gives {text}-d vectors, the image side {vision}-d")
    return text


def read_temperature(source: Path, family: Family) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``logit_scale`` (and ``logit_bias``) as 0-d float32 tensors, read from the folder's
    weights (``model.safetensors`` or ``pytorch_model.bin``, either sharded with its
    ``.index.json``)."""
    names = ["logit_scale"] + (["logit_bias"] if family.has_bias else [])
    found = _read_tensors(source, names)
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(f"{source}: its weights hold no {', '.join(missing)}")
    values = [found[n].float().reshape(()) for n in names]
    return values[0], (values[1] if family.has_bias else None)


#: a folder's weights as transformers looks for them: (sharded index, single file), safetensors first
WEIGHT_LAYOUTS = (("model.safetensors.index.json", "model.safetensors"),
                  ("pytorch_model.bin.index.json", "pytorch_model.bin"))


def _read_tensors(source: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The tensors ``names`` (those the weights hold) from the folder's weight files; an
    unreadable file is a :class:`ConfigError` naming it."""
    for index_name, single in WEIGHT_LAYOUTS:
        index = source / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                files = {n: source / weight_map[n] for n in names if n in weight_map}
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"cannot read {index}: {e}") from None
        elif (source / single).is_file():
            files = {n: source / single for n in names}
        else:
            continue
        out: dict[str, torch.Tensor] = {}
        for path in set(files.values()):
            wanted = [n for n, p in files.items() if p == path]
            out.update(_read_file(path, wanted))
        return out
    raise ConfigError(f"{source} has no weights (model.safetensors or pytorch_model.bin, or "
                      "their sharded .index.json)")


def _read_file(path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """``names`` from one safetensors or ``torch.save`` file (memory-mapped where its
    format allows, as transformers reads it: pre-zipfile .bin files cannot be)."""
    import pickle
    import zipfile

    from safetensors import SafetensorError, safe_open

    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                return {n: f.get_tensor(n) for n in names if n in f.keys()}
        mmap = zipfile.is_zipfile(path)
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        return {n: state[n] for n in names if n in state}
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"cannot read the weights in {path}: {detail}") from None


def _hub_origin(source: Path) -> str:
    """``org/name at revision`` when ``source`` is a snapshot of the Hugging Face cache."""
    parts = source.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return f"{parts[-3][len('models--'):].replace('--', '/')} at revision {parts[-1]}"
    return ""


def model_card(model: JointModel, source: Path, hf: dict[str, Any], family: Family, out: Path) -> str:
    """The ``README.md`` of an imported model: where it came from, what it holds, how to use it."""
    from .version import __version__

    transformers = transformers_module()

    key = model.pairs[0].key
    scale = float(model.logit_scales[key].detach())
    bias = model.logit_bias_for(key)
    arch = ", ".join(hf.get("architectures") or [family.name])
    origin = _hub_origin(source)
    counts = model.parameter_counts()
    lines = [f"# jointspace model: {family.name} imported from {source.name}", "",
             f"Imported from the Hugging Face folder `{source}` ({arch}"
             + (f"; {origin}" if origin else "") + f") by jointspace {__version__} with transformers "
             f"{transformers.__version__}. Nothing was trained: the towers are the folder's own "
             "encoders with their own preprocessing and projections, and this folder holds "
             "everything (`jointspace.load` never reads the source again).", "",
             f"Embedding size {model.config.embed_dim}; temperature exp(logit_scale) = "
             f"{math.exp(scale):.4g} (logit_scale {scale:.4f})"
             + (f", logit_bias {float(bias.detach()):.4f}" if bias is not None else "")
             + f"; objective {model.config.objective.name} ({family.name}'s).", "",
             "| tower | kind | parameters |", "|---|---|---|"]
    for modality, spec in model.config.towers.items():
        c = counts[modality]
        lines.append(f"| {modality} | {spec.name} | {c['trainable'] + c['frozen']:,} |")
    lines += ["", "```python", "import jointspace", f'model = jointspace.load("{out}")',
              'model.encode("text", ["a photo of a cat"])', "```", "",
              "Lock the image side and tune the text side (LiT), or bind audio to its images:", "",
              "```bash",
              f"jointspace train --data train.csv --out runs/lit --init-from {out} --config {out}/run.json "
              "--set model.towers.image.trainable=none",
              f"jointspace train --data audio.csv --out runs/bound --init-from {out} --bind audio:image",
              "```", ""]
    return "\n".join(lines)
