"""Training from shard streams: what a stream feeds, its loader, its resume state.

A stream is read lazily (:mod:`jointspace.data.stream`): nothing is validated
up front, bad samples are quarantined as they come, and the checkpoint keeps
each slot's position so that ``--resume`` neither repeats nor skips a sample.
Frozen towers run every step on streamed data (the feature cache needs the
whole dataset up front, which a stream does not have).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch.distributed as dist
from torch.utils.data import DataLoader

from ..config import RunConfig, modality_of
from ..data.manifest import Manifest, Record
from ..data.pairs import PairDataset
from ..data.shards import ShardError, list_shards, read_shard
from ..data.stream import ShardStream, collate_stream, stream_summary
from ..errors import ConfigError, DataError
from ..model import JointModel
from ..progress import logger
from .distributed import DistInfo, is_distributed, on_main_then_share
from .interrupt import ignore_stop_signals

PREPARE_SAMPLES = 20_000  # texts a from-scratch tokenizer learns from, taken from the stream's start
PEEK_SAMPLES = 64
VAL_QUARANTINE = "quarantine-val-stream"  # apart from training's, which the run summary counts


@dataclass
class StreamSource:
    """Shards a run streams from and the fields they feed."""

    spec: str
    shards: list[str]
    fields: list[str]


def _samples(shards: list[str]) -> Iterator[Any]:
    for shard in shards:
        try:
            yield from read_shard(shard)
        except ShardError as e:
            logger.warning("shard skipped: %s", e)


def _peek(shards: list[str], limit: int) -> list[Any]:
    return list(itertools.islice(_samples(shards), limit))


def open_stream(spec: str | Path, run: RunConfig) -> StreamSource:
    """List the shards and find the fields they feed from their first samples."""
    def look() -> StreamSource:
        shards = list_shards(spec)
        samples = _peek(shards, PEEK_SAMPLES)
        if not samples:
            raise DataError(f"no readable sample in the first shards of {spec}")
        have = {m for s in samples for m in s.items}
        pairs = [p for p in run.model.resolved_pairs()
                 if modality_of(p.a) in have and modality_of(p.b) in have and "@" not in p.a + p.b]
        if not pairs:
            raise DataError(f"the shards of {spec} hold {', '.join(sorted(have)) or 'nothing'}; no "
                            f"pair of the model ({', '.join(p.key for p in run.model.resolved_pairs())}) "
                            "can train on them")
        fields = [f for f in run.model.fields() if any(f in p.fields for p in pairs)]
        logger.info("streaming %d shard(s) of %s: fields %s", len(shards), spec, ", ".join(fields))
        return StreamSource(str(spec), shards, fields)
    return on_main_then_share(look)


def prepare_items(source: StreamSource, field: str, limit: int = PREPARE_SAMPLES) -> list[Any]:
    """The first ``limit`` items of a field (a from-scratch tokenizer learns from them)."""
    modality = modality_of(field)  # one item per sample kept, not the whole samples
    return list(itertools.islice((s.items[modality] for s in _samples(source.shards)
                                  if modality in s.items), limit))


def read_all(spec: str | Path, fields: list[str], run: RunConfig, out: Path) -> Manifest:
    """A small shard source (validation) read whole into records, bad samples quarantined."""
    stream = ShardStream(list_shards(spec), fields, epochs=1, quarantine_dir=out,
                         max_text_chars=run.train.max_text_chars, quarantine_prefix=VAL_QUARANTINE)
    records = []
    for i, item in enumerate(stream):
        sample = item["sample"]
        records.append(Record(sample.key, i + 1, sample.fields, sample.label, sample.group))
    bad, skipped = stream_summary(out, VAL_QUARANTINE)
    if bad or skipped:
        logger.warning("%s: %d valid sample(s); %d bad sample(s) and %d unreadable shard(s) "
                       "quarantined to %s/%s-0.jsonl", spec, len(records), bad, skipped, out,
                       VAL_QUARANTINE)
    if not records:
        raise DataError(f"no valid sample in {spec}")
    return Manifest(Path(str(spec)), records)


def stream_loader(model: JointModel, source: StreamSource, run: RunConfig, out: Path,
                  info: DistInfo, start: Mapping[str, Any] | None, steps: int) -> Any:
    """The loader of ``steps`` batches of this process's share, continuing from ``start``."""
    cfg = run.train
    workers = cfg.num_workers
    positions = None
    if start:
        if (start["world_size"], start["workers"]) != (info.world_size, workers):
            raise ConfigError(
                f"this run streamed with {start['world_size']} process(es) × {start['workers']} "
                f"loader worker(s); resume it with the same (now {info.world_size} × {workers}), "
                "or every sample's place in the stream would change")
        positions = {int(k): tuple(v) for k, v in start["positions"].items()}
    stream = ShardStream(source.shards, source.fields, seed=cfg.seed, towers=model.towers,
                         rank=info.rank, world_size=info.world_size, start=positions,
                         block_shards=cfg.stream_block_shards,
                         quarantine_dir=out, max_text_chars=cfg.max_text_chars,
                         rotation=(cfg.max_steps - steps) % max(1, workers))  # steps done so far
    collate = collate_stream(PairDataset([], model.towers, source.fields).collate)
    loader = DataLoader(stream, batch_size=cfg.batch_size // info.world_size, collate_fn=collate,
                        num_workers=workers, pin_memory=next(model.parameters()).is_cuda,
                        worker_init_fn=ignore_stop_signals if workers else None)
    return itertools.islice(loader, max(0, steps))


def gather_positions(local: Mapping[int, tuple], info: DistInfo, workers: int) -> dict[str, Any]:
    """Every process's slot positions, for the checkpoint (which process 0 writes)."""
    merged = dict(local)
    if is_distributed():
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, dict(local))
        for part in parts:
            merged.update(part)
    return {"world_size": info.world_size, "workers": workers,
            "positions": {str(k): list(v) for k, v in sorted(merged.items())}}


__all__ = ["StreamSource", "gather_positions", "open_stream", "prepare_items", "read_all",
           "stream_loader"]
