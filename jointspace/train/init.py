"""Starting a run from an existing model folder (``--init-from``), and the model card.

``init_from_model`` copies, for every modality the new model and the source
folder both have, the source tower's weights and assets into the new tower
(LiT, MAPL: bind an existing encoder, train a little around it). The new
config's ``trainable`` then decides what of each tower trains.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import ConfigError
from ..model import JointModel
from ..progress import logger


def init_from_model(model: JointModel, folder: str | Path) -> list[str]:
    """Copy matching towers (weights and assets) from the model in ``folder``;
    returns the modalities taken. A tower of a different kind is an error."""
    folder = Path(folder)
    source = JointModel.load(folder)
    taken = []
    for modality, tower in model.towers.items():
        if modality not in source.towers:
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
    logger.info("initialised %s from %s", ", ".join(taken), folder)
    return taken


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
