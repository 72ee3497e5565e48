"""What a report says about the model: its name, where it came from, its towers with
their parameter counts, the steps it trained here, and its date, read from the model
folder without building the model (or from a model object given instead)."""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model_io import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, read_config

if TYPE_CHECKING:
    from ...model import JointModel

LOG_FILE = "log.jsonl"  # the training log (:mod:`jointspace.train.trainer`)
IMPORTED_FILE = "imported.json"  # what ``jointspace import`` records of its source


@dataclass
class Tower:
    modality: str
    kind: str          # the registered tower's name (convnet, hf_vision …)
    trainable: str     # what of it trained: all, head, adapter, none
    parameters: int | None


@dataclass
class ModelInfo:
    """The model as the first screen of a report describes it."""

    name: str
    source: str                    # trained here, imported from …, or given as an object
    towers: list[Tower]
    embed_dim: int
    steps: int | None = None       # training steps logged in the folder (None: not trained here)
    date: str | None = None        # when the weights were written
    log: list[dict[str, Any]] = field(default_factory=list)  # log.jsonl's rows
    imported: bool = False

    @property
    def parameters(self) -> int | None:
        counts = [t.parameters for t in self.towers]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]


def read_log(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``log.jsonl`` (none if there is no log; a truncated last line
    of a killed run is skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _weight_counts(weights: Path, modalities: list[str]) -> dict[str, int | None]:
    """Values per tower in the weights file's header (no tensor is read): its parameters
    and buffers, for a folder whose card does not count them."""
    counts: dict[str, int | None] = {m: 0 for m in modalities}
    try:
        from safetensors import safe_open
        with safe_open(str(weights), "np") as f:
            for key in f.keys():
                parts = key.split(".")
                if len(parts) > 2 and parts[0] == "towers" and parts[1] in counts:
                    size = 1
                    for d in f.get_slice(key).get_shape():
                        size *= d
                    counts[parts[1]] = (counts[parts[1]] or 0) + size
    except Exception:  # noqa: BLE001  (unreadable or absent weights: counts unknown)
        return {m: None for m in modalities}
    return counts


def _card_counts(card: Path) -> dict[str, int]:
    """Parameters per tower from the card's tower table (its columns named ``… params`` or
    ``parameters`` summed): the model's own count, buffers left out."""
    if not card.is_file():
        return {}
    counts: dict[str, int] = {}
    columns: list[int] = []
    for line in card.read_text(encoding="utf-8", errors="replace").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells and cells[0] == "tower":
            columns = [i for i, c in enumerate(cells) if "param" in c]
        elif not cells:
            columns = []
        elif columns and all(cells[i].replace(",", "").isdigit() for i in columns if i < len(cells)):
            counts[cells[0]] = sum(int(cells[i].replace(",", "")) for i in columns if i < len(cells))
    return counts


def _card_source(card: Path) -> str | None:
    """The source sentence of an imported model's card (folders imported before
    ``imported.json`` existed)."""
    if not card.is_file():
        return None
    found = re.search(r"^Imported from the Hugging Face folder `([^`]+)`(?: \(([^)]*)\))?",
                      card.read_text(encoding="utf-8", errors="replace"), re.M)
    if not found:
        return None
    return f"imported from {found.group(1)}" + (f" ({found.group(2)})" if found.group(2) else "")


def _date(path: Path) -> str | None:
    try:
        return dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    except OSError:
        return None


def describe_folder(folder: str | Path) -> ModelInfo:
    """:class:`ModelInfo` of a model folder."""
    folder = Path(folder)
    config = read_config(folder)
    counts = {**_weight_counts(folder / WEIGHTS_FILE, list(config.towers)),
              **_card_counts(folder / CARD_FILE)}
    towers = [Tower(m, spec.name, spec.trainable, counts[m]) for m, spec in config.towers.items()]
    log = read_log(folder / LOG_FILE)
    steps = [r["step"] for r in log if isinstance(r.get("step"), int)]
    imported = folder / IMPORTED_FILE
    source = None
    if imported.is_file():
        try:
            meta = json.loads(imported.read_text(encoding="utf-8"))
            source = (f"imported from {meta['source']}"
                      + (f" ({meta['family']}" + (f"; {meta['origin']}" if meta.get("origin") else "")
                         + ")" if meta.get("family") else ""))
        except (ValueError, KeyError, TypeError):
            source = None
    source = source or _card_source(folder / CARD_FILE)
    is_imported = source is not None
    if source is None:
        source = "trained with jointspace" if steps else "a jointspace model folder (no training log)"
    if is_imported and steps:
        source += f", then trained {max(steps):,} steps here"
    return ModelInfo(folder.resolve().name, source, towers, config.embed_dim,
                     steps=max(steps) if steps else None,
                     date=_date(folder / WEIGHTS_FILE) or _date(folder / CONFIG_FILE),
                     log=log, imported=is_imported)


def describe_model(model: "JointModel") -> ModelInfo:
    """:class:`ModelInfo` of a model object (no folder: no log, no date)."""
    counts = model.parameter_counts()
    towers = [Tower(m, spec.name, spec.trainable, counts[m]["trainable"] + counts[m]["frozen"])
              for m, spec in model.config.towers.items()]
    return ModelInfo("(a model object)", "given to evaluate() as an object, not a folder", towers,
                     model.config.embed_dim)
