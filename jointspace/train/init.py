"""Starting a run from an existing model folder (``--init-from``), and the model card.

``init_from_model`` copies, for every modality the new model and the source
folder both have, the source tower's weights and assets into the new tower
(LiT, MAPL: bind an existing encoder, train a little around it). The new
config's ``trainable`` then decides what of each tower trains.

``bind_config`` writes the config for binding a new modality through one
anchor (ImageBind): every tower of the source model locked, the new tower
trained against the anchor alone.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..config import PairSpec, RunConfig, TowerSpec
from ..errors import ConfigError
from ..model import JointModel
from ..model_io import read_config
from ..progress import logger
from ..modalities import MODALITIES
from ..towers import TOWERS

#: ``--bind audio`` binds through the image tower unless ``--bind audio:<anchor>`` says
#: otherwise: ImageBind's anchor, the documented default of the CLI and of bind_config
USER_FACING_DEFAULTS = ("image",)


def init_from_model(model: JointModel, folder: str | Path) -> list[str]:
    """Copy matching towers (weights and assets) from the model in ``folder``;
    returns the modalities taken. A tower of a different kind is an error."""
    folder = Path(folder)
    source = JointModel.load(folder)
    taken = []
    for modality, tower in model.towers.items():
        if modality not in source.towers:
            # a new tower may take a part of itself from one of the source's (a video
            # tower's frame tower from the anchor's image tower, when bound through it)
            adopt = getattr(tower, "adopt_from", None)
            part = adopt(source, folder) if adopt is not None else None
            if part:
                logger.info("initialised the %s tower's %s of %s", modality, part, folder)
            continue
        want, have = model.config.towers[modality], source.config.towers[modality]
        if (want.name, want.options) != (have.name, have.options):
            raise ConfigError(
                f"--init-from {folder}: its {modality!r} tower is {have.name} {have.options}, "
                f"but this run's is {want.name} {want.options}; make them the same or drop "
                f"the {modality!r} tower from one of them")
        # the adapter is new in this run; everything else must match
        state = {k: v for k, v in source.towers[modality].state_dict().items()
                 if not k.startswith("adapter.")}
        missing, unexpected = tower.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("adapter.")]
        if missing or unexpected:
            raise ConfigError(f"--init-from {folder}: the {modality!r} weights do not fit "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        own = folder / modality
        tower.load_assets(own if own.is_dir() else folder)
        taken.append(modality)
    if not taken:
        raise ConfigError(f"--init-from {folder}: it has towers {', '.join(source.towers)}, "
                          f"none of this run's ({', '.join(model.towers)})")
    pairs = _copy_temperatures(model, source)
    logger.info("initialised %s from %s%s", ", ".join(taken), folder,
                f" (and the temperature of {', '.join(pairs)})" if pairs else "")
    return taken


@torch.no_grad()
def _copy_temperatures(model: JointModel, source: JointModel) -> list[str]:
    """The learned temperature (and bias) of each pair both models train with the same
    kind of objective (a bias on both sides or on neither), so fine-tuning an imported
    CLIP or SigLIP starts from its own scale; clamped to this run's bound."""
    copied = []
    for key, scale in model.logit_scales.items():
        if key not in source.logit_scales or (key in model.logit_biases) != (key in source.logit_biases):
            continue
        scale.copy_(source.logit_scales[key].clamp(0.0, model.max_logit_scales[key]))
        if key in model.logit_biases:
            model.logit_biases[key].copy_(source.logit_biases[key])
        copied.append(key)
    return copied


def bind_config(run: RunConfig, source: str | Path, modality: str, anchor: str = "image") -> RunConfig:
    """``run`` changed to bind ``modality`` to the model in ``source`` through ``anchor``.

    The new model has every tower of the source, locked (``trainable: none``),
    plus a tower for ``modality`` (``run``'s own spec for it when it has one,
    else the modality's default tower), and one pair, ``modality``–``anchor``:
    the new tower learns to meet the anchor's embeddings and nothing else moves,
    so whatever the anchor was aligned with (text) becomes reachable from the
    new modality without a single pair of the two. Embedding size and
    Matryoshka sizes are the source's. Train it with ``init_from=source``.

    A tower class with a ``bound_spec(spec, anchor, anchor_spec)`` classmethod adjusts
    its spec to the anchor (a video tower whose frames go through a locked copy of the
    anchor's image tower), and one with ``adopt_from(source, folder)`` takes that part's
    weights in :func:`init_from_model`.

    >>> run = bind_config(load_run_config(), "runs/image_text", "audio")  # doctest: +SKIP
    >>> train(run, "shapes/train.csv", "runs/bound", init_from="runs/image_text")  # doctest: +SKIP
    """
    have = read_config(source)
    if modality in have.towers:
        raise ConfigError(f"--bind {modality}:{anchor}: {source} already has a {modality!r} tower")
    if anchor not in have.towers:
        raise ConfigError(f"--bind {modality}:{anchor}: {source} has no {anchor!r} tower to bind to "
                          f"(it has {', '.join(have.towers)})")
    towers = {m: replace(spec, trainable="none") for m, spec in have.towers.items()}
    spec = run.model.towers.get(modality) or TowerSpec(MODALITIES.get(modality).default_tower)
    # a tower may build on the anchor's (a video tower's frames through the image tower)
    bound = getattr(TOWERS.get(spec.name), "bound_spec", None)
    towers[modality] = bound(spec, anchor, have.towers[anchor]) if bound is not None else spec
    model = replace(run.model, embed_dim=have.embed_dim, towers=towers, pairs=[PairSpec(modality, anchor)],
                    matryoshka_dims=list(have.matryoshka_dims),
                    matryoshka_weights=list(have.matryoshka_weights))
    return replace(run, model=model)


def model_card(model: JointModel, run: RunConfig, validation: dict[str, Any] | None = None) -> str:
    """A short ``README.md`` for the model folder: towers, what trained, pairs, how to load."""
    lines = ["# jointspace model", "",
             f"Embedding size {model.config.embed_dim}"
             + (f", nested sizes {model.config.nested_dims()}" if model.config.matryoshka_dims else "")
             + ".", "", "| tower | kind | trainable | trainable params | frozen params |",
             "|---|---|---|---|---|"]
    counts = model.parameter_counts()
    for modality, spec in model.config.towers.items():
        c = counts[modality]
        lines.append(f"| {modality} | {spec.name} | {spec.trainable} | {c['trainable']:,} | "
                     f"{c['frozen']:,} |")
    lines += ["", "| pair | objective | weight |", "|---|---|---|"]
    for pair in model.pairs:
        objective = (pair.objective or model.config.objective).name
        lines.append(f"| {pair.key} | {objective} | {pair.weight:g} |")
    lines += ["", f"Trained for {run.train.max_steps} steps of {run.train.batch_size} pairs "
              f"(lr {run.train.lr:g}, seed {run.train.seed}); the full config is in `run.json`."]
    if validation:
        lines += ["", "Last validation: " + ", ".join(f"{k} {v:.3f}" for k, v in validation.items())
                  + "."]
    lines += ["", "```python", "import jointspace", 'model = jointspace.load("path/to/this/folder")',
              'model.encode("text", ["a red circle"])', "```", ""]
    return "\n".join(lines)
