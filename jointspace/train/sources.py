"""A run's data: one manifest or several, each read once, its frozen features cached.

Several manifests can feed one run (image–text pairs from one file,
audio–image pairs from another): each source trains the pairs whose two
fields it has, and each step draws its batch from one source, chosen with the
given weights (:class:`~jointspace.train.sampler.MultiSourceBatchSampler`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch.utils.data import ConcatDataset

from ..config import ModelConfig, RunConfig, column_of, modality_of
from ..data.manifest import Manifest, OnBadRow, column_advice, manifest_columns, read_manifest
from ..data.pairs import PairDataset
from ..errors import DataError
from ..model import JointModel
from ..progress import logger
from ..towers import MODALITIES
from .distributed import DistInfo, barrier, on_main_then_share
from .feature_cache import FeatureCache, default_cache_dir, tower_fingerprint


@dataclass
class Source:
    """One manifest of a run and the fields it feeds."""

    path: Path
    fields: list[str]
    manifest: Manifest


def source_fields(path: Path, config: ModelConfig, columns: Mapping[str, str] | None) -> list[str]:
    """The model's fields this manifest can feed: those of every pair whose two
    fields both have a column in it."""
    present = set(manifest_columns(path))
    have = {f for f in config.fields() if (columns or {}).get(f, column_of(f)) in present}
    pairs = [p for p in config.resolved_pairs() if p.a in have and p.b in have]
    if not pairs:
        needs = "; ".join(f"{p.key} needs columns {(columns or {}).get(p.a, column_of(p.a))!r} and "
                          f"{(columns or {}).get(p.b, column_of(p.b))!r}" for p in config.resolved_pairs())
        wanted = {f: (columns or {}).get(f, column_of(f)) for p in config.resolved_pairs() for f in p.fields}
        raise DataError(f"manifest {path} has no pair's columns (found: {', '.join(sorted(present))}); "
                        f"{needs} — {column_advice(path, sorted(present), wanted)}")
    return [f for f in config.fields() if any(f in p.fields for p in pairs)]


def read_sources(paths: Sequence[str | Path], run: RunConfig, out: Path, on_bad_row: OnBadRow,
                 columns: Mapping[str, str] | None) -> list[Source]:
    """Read and validate each manifest once (process 0; the others receive its rows)."""
    sources = []
    for path in map(Path, paths):
        fields = on_main_then_share(lambda: source_fields(path, run.model, columns))
        manifest = on_main_then_share(lambda: read_manifest(
            path, required=tuple(fields), on_bad_row=on_bad_row, quarantine_dir=out,
            max_text_chars=run.train.max_text_chars, columns=columns))
        sources.append(Source(path, fields, manifest))
    return sources


def frozen_features(model: JointModel, run: RunConfig, out: Path, sources: Sequence[Source],
                    info: DistInfo) -> list[dict[str, torch.Tensor]]:
    """For each source, the cached backbone features of its fields whose tower's
    backbone is frozen (empty when ``train.cache_features`` is off)."""
    result: list[dict[str, torch.Tensor]] = [{} for _ in sources]
    if not run.train.cache_features:
        return result
    root = Path(run.train.feature_cache_dir) if run.train.feature_cache_dir else default_cache_dir()
    caches: dict[str, FeatureCache] = {}
    for turn in ("main", "others"):  # process 0 fills the disk cache; the others then read it
        if (turn == "main") != info.is_main:
            barrier()
            continue
        for source, features in zip(sources, result):
            for f in source.fields:
                m = modality_of(f)
                tower = model.towers[m]
                if not tower.backbone_frozen:
                    continue
                if m not in caches:
                    fingerprint = tower_fingerprint(tower, run.model.towers[m], out / m)
                    caches[m] = FeatureCache(tower, fingerprint, root, MODALITIES.get(m).is_file)
                features[f] = caches[m].lookup([r.fields[f] for r in source.manifest.records],
                                               desc=f"features {f} of {source.path.name} (frozen)")
        barrier()
    if any(result):
        logger.info("frozen backbone features cached in %s", root)
    return result


def datasets(model: JointModel, sources: Sequence[Source],
             features: Sequence[Mapping[str, torch.Tensor]]) -> ConcatDataset | PairDataset:
    """One :class:`PairDataset` per source (laid end to end when there are several)."""
    parts = [PairDataset(s.manifest.records, model.towers, s.fields, f)
             for s, f in zip(sources, features)]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)
