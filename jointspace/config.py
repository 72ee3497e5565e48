"""Typed configs, saved as JSON next to the weights and read from YAML or JSON.

A run is described by :class:`RunConfig` (``model`` + ``train``). Unknown keys
and wrong types are :class:`~jointspace.errors.ConfigError` naming the key, so a
typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")


TRAINABLE = ("all", "head", "adapter", "none")
#: the towers of a new model when none are configured (an image–text model, as CLIP's)
#: and the anchor the default pairs start from when the model has that tower
USER_FACING_DEFAULTS = ("image", "text")


@dataclass
class TowerSpec:
    """Which registered tower encodes a modality, its options, and what of it trains.

    ``options`` are checked against that tower's own config dataclass when the
    tower is built (see :func:`jointspace.towers.build_tower`). ``trainable``:
    ``all``; ``head`` (the projection only, the backbone frozen); ``adapter``
    (a small residual adapter on the frozen backbone's features, plus the
    projection); ``none`` (nothing trains: a locked tower, as in LiT).
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    trainable: str = "all"

    def __post_init__(self) -> None:
        _require(self.trainable in TRAINABLE, "trainable", self.trainable,
                 f"must be one of {', '.join(TRAINABLE)}")


@dataclass
class ObjectiveSpec:
    """Which registered objective trains the model, and its options."""

    name: str = "infonce"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PairSpec:
    """Two fields trained against each other, with the pair's own objective, weight
    and temperature (and bias).

    A field is a modality (``"image"``), which reads the manifest column of that
    name, or ``"modality@column"`` (``"text@paraphrase"``: the text tower on the
    ``paraphrase`` column), so one tower can sit on both sides of a pair.
    ``objective`` None uses the model's ``objective``.
    """

    a: str
    b: str
    objective: ObjectiveSpec | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        _require(self.a != self.b, "pair", f"{self.a}-{self.b}", "must join two different fields")
        _require(self.weight > 0, f"pair {self.key}: weight", self.weight, "must be positive")

    @property
    def key(self) -> str:
        """The pair's name in logs and in the weights (``image-text``)."""
        return f"{self.a}-{self.b}"

    @property
    def fields(self) -> tuple[str, str]:
        return self.a, self.b


def modality_of(field_name: str) -> str:
    """``"text@paraphrase"`` → ``"text"``; ``"image"`` → ``"image"``."""
    return field_name.split("@", 1)[0]


def column_of(field_name: str) -> str:
    """The manifest column a field reads by default: ``"text@paraphrase"`` → ``"paraphrase"``."""
    return field_name.split("@", 1)[-1]


@dataclass
class ModelConfig:
    """Everything that rebuilds a joint model's architecture.

    >>> ModelConfig().towers["image"].name
    'convnet'
    """

    embed_dim: int = 128
    towers: dict[str, TowerSpec] = field(default_factory=lambda: {
        "image": TowerSpec("convnet"),
        "text": TowerSpec("transformer"),
    })
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    #: the pairs trained against each other; empty: the anchor modality (image when
    #: there is one, else the first tower) paired with every other tower
    pairs: list[PairSpec] = field(default_factory=list)
    #: nested prefix sizes trained to work on their own (Matryoshka), e.g. [64, 32, 16];
    #: the full ``embed_dim`` is always trained too. Empty: full size only.
    matryoshka_dims: list[int] = field(default_factory=list)
    #: loss weight of each size in :meth:`ModelConfig.nested_dims` order; empty = all 1.
    matryoshka_weights: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        _require(self.embed_dim >= 1, "model.embed_dim", self.embed_dim, "must be at least 1")
        _require(bool(self.towers), "model.towers", {}, "must name at least one tower")

    def resolved_pairs(self) -> list[PairSpec]:
        """:attr:`pairs`, or the anchor pairs when none are given; every field's
        modality must have a tower."""
        pairs = self.pairs
        if not pairs:
            modalities = list(self.towers)
            anchor = "image" if "image" in modalities else modalities[0]
            pairs = [PairSpec(anchor, m) for m in modalities if m != anchor]
        keys = [p.key for p in pairs]
        _require(len(set(keys)) == len(keys), "model.pairs", keys, "must not repeat a pair")
        for pair in pairs:
            for f in pair.fields:
                _require(modality_of(f) in self.towers, f"pair {pair.key}", f,
                         f"names a modality with no tower (towers: {', '.join(self.towers)})")
        return pairs

    def fields(self) -> list[str]:
        """Every field the pairs read, in order of first use."""
        return list(dict.fromkeys(f for p in self.resolved_pairs() for f in p.fields))

    def nested_dims(self) -> list[int]:
        """Every trained size, largest first (the full size included)."""
        return sorted({self.embed_dim, *self.matryoshka_dims}, reverse=True)


@dataclass
class TrainConfig:
    """Optimisation settings. ``max_steps`` counts optimiser steps.

    ``batch_size`` is the *contrastive* batch: the pairs that meet as negatives
    in one loss, over all processes together. ``accum_steps`` splits it into
    sub-batches of ``batch_size // (accum_steps · processes)`` that go through
    the towers one at a time (cached-negative accumulation), to fit memory
    without shrinking the contrastive batch.
    """

    batch_size: int = 128
    accum_steps: int = 1
    precision: str = "fp32"  # "bf16" (autocast; the loss stays float32) or "auto" (bf16 where native)
    device: str = "auto"  # "auto": CUDA when available, else CPU
    max_steps: int = 600
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 100
    checkpoint_every: int = 100
    log_every: int = 10
    num_workers: int = 0
    max_text_chars: int = 1000
    #: compute a frozen backbone's features once per distinct input and reuse them
    #: (on disk, across runs); false: run the frozen backbone at every step
    cache_features: bool = True
    #: where cached features live; "": $JOINTSPACE_CACHE or ~/.cache/jointspace
    feature_cache_dir: str = ""
    #: shards a streaming reader holds and shuffles at once (more: a wider shuffle, more memory)
    stream_block_shards: int = 4

    def __post_init__(self) -> None:
        # nonsense values fail here, with the key, not later as a traceback
        for name in ("batch_size", "accum_steps", "max_steps", "eval_every", "checkpoint_every",
                     "log_every", "max_text_chars", "stream_block_shards"):
            _require(getattr(self, name) >= 1, f"train.{name}", getattr(self, name), "must be at least 1")
        for name in ("weight_decay", "warmup_steps", "grad_clip", "num_workers"):
            _require(getattr(self, name) >= 0, f"train.{name}", getattr(self, name), "must not be negative")
        _require(self.lr > 0 and self.lr == self.lr and self.lr != float("inf"), "train.lr", self.lr,
                 "must be a positive finite number")


def _require(ok: bool, key: str, value: Any, what: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {what}, got {value!r}")


@dataclass
class RunConfig:
    """A whole training run: architecture plus optimisation."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from plain data, rejecting unknown keys and wrong types."""
    if dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r} in {where}; "
                              f"known keys: {', '.join(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
        return cls(**kwargs)
    return _convert(cls, data, where)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return origin(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, where)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)  # 1e4 in a config file means 10000 steps
    if tp in (int, float, str, bool) and not (isinstance(value, tp)
                                               and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def to_dict(obj: Any) -> Any:
    """Plain JSON-able data from a config dataclass."""
    return dataclasses.asdict(obj)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, but reading ``1e-3`` and ``1E4`` as numbers.

    YAML 1.1 (PyYAML's dialect) needs a dot and a signed exponent (``1.0e-3``)
    to call something a float, so ``lr: 1e-3`` would arrive as a string. YAML
    1.2 and every user expect a number.
    """


_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """YAML with scientific notation read as numbers (see :class:`_Loader`).

    >>> parse_yaml("lr: 1e-3")
    {'lr': 0.001}
    """
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML or JSON file into a mapping, with a clear error if it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = parse_yaml(p.read_text()) if p.suffix in (".yaml", ".yml") else json.loads(p.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot parse config file {p}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to nested plain data.

    ``model.towers.text=null`` removes that modality's tower.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        value = parse_yaml(raw)
        if value is None and parts[-2:-1] == ["towers"]:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return data


def load_run_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """The default run config, updated from a file and ``key=value`` overrides."""
    data = to_dict(RunConfig())
    if path is not None:
        _merge(data, read_config_file(path), where=str(path))
    apply_overrides(data, list(overrides))
    return from_dict(RunConfig, data)


def _merge(base: dict[str, Any], update: dict[str, Any], where: str) -> None:
    for key, value in update.items():
        if key not in base:
            raise ConfigError(f"unknown key {key!r} in {where}; known keys: {', '.join(base)}")
        if key == "towers" and isinstance(value, dict):
            for modality, spec in value.items():  # a tower spec is replaced whole; null removes it
                if spec is None:
                    base[key].pop(modality, None)
                else:
                    base[key][modality] = spec
        elif isinstance(base[key], dict) and isinstance(value, dict) and key != "options":
            _merge(base[key], value, f"{where}:{key}")
        else:
            base[key] = value
