"""Streaming shards into training: decoding, checking, sharding, shuffling and resuming.

**Who reads what.** The shards are split among *slots*, one per (process rank,
DataLoader worker): ``slot = rank × workers + worker``. Each epoch, the shard
list is permuted by ``(seed, epoch)`` and slot ``s`` of ``S`` takes shards
``s, s+S, s+2S …``; with fewer shards than slots, every slot reads every
shard and keeps samples ``r, r+S …`` of the epoch's sequence instead, with
``r = (s + epoch) mod S`` (so over S epochs each slot meets every sample). Either
way each slot's epoch holds every one of its samples once, and the slots'
epochs together hold the dataset once. Slots advance independently: where
they hold unequal numbers of samples (shards that do not divide evenly among
them, or shards of unequal sizes), a slot that finishes its share starts its
next epoch while the others finish theirs (a warning says so when the shard
count is not a multiple of the slots).

**Shuffling** is deterministic and in blocks: a slot reads ``block_shards``
of its shards at a time (memory holds one block, never the dataset), and
yields the block's samples in a permutation drawn from
``(seed, epoch, slot, block)``. A slot's stream is an endless sequence of
epochs, so every rank can run the same number of steps.

**Resuming.** Each yielded sample carries its position ``(epoch, block, i)``;
the trainer keeps the last position of each slot and saves it in the
checkpoint. A resumed stream re-reads that block, redraws the same
permutation and continues after ``i``: no sample is repeated or skipped. The
DataLoader takes batches from its workers in turn; ``rotation`` (steps done
modulo workers) maps its first worker to the slot whose batch comes next, so
the resumed run sees the very batches, in the very order, of an
uninterrupted one.

**Bad samples** (a missing or undecodable field, text too long, a broken tar
member) are quarantined with their shard and key, to
``quarantine-stream-<slot>.jsonl`` in the run folder (once per process, however
many epochs meet it), and the stream goes on; a shard that cannot be read is
reported once and skipped. A slot stops with an error only when it has read
every shard of the source without one valid sample.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from torch.utils.data import IterableDataset, get_worker_info

from ..config import modality_of
from ..errors import DataError
from ..modalities import MODALITIES, decode_with_limits
from ..progress import logger
from .shards import RawSample, ShardError, read_shard

Position = tuple[int, int, int]  # (epoch, block, index of the next sample in the block)
POSITION_KEY = "_stream_position"


@dataclass
class DecodedSample:
    key: str
    shard: str
    fields: dict[str, Any]  # field → the item a tower's preprocess_one takes (its plug-in's decode)
    label: str | None = None
    group: str | None = None


def decode_sample(sample: RawSample, fields: Sequence[str], max_text_chars: int = 1000,
                  image_size: int | None = None) -> DecodedSample:
    """Decode and check the items a run needs with their modality plug-ins' ``decode``, as
    the manifest reader checks files. The bounds go to the plug-ins whose ``decode`` takes
    them: ``max_text_chars`` as ``max_chars`` (a text's length), ``image_size`` as
    ``min_size`` (a picture decoded no smaller than a tower needs).
    Raises :class:`DataError` naming the field, what is wrong, and the shard and key."""
    where = f"{Path(sample.shard).name}:{sample.key}"
    if sample.problem:
        raise DataError(f"{sample.problem} ({where})")
    out: dict[str, Any] = {}
    for f in fields:
        modality = modality_of(f)
        value = sample.items.get(modality)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"empty {f!r} ({where})")
        if modality not in MODALITIES:
            raise DataError(f"no plug-in for {modality!r} (registered: "
                            f"{', '.join(MODALITIES.names())}) ({where})")
        plugin = MODALITIES.get(modality)
        # a path names itself in the plug-in's message; bytes and values by their field
        name = value if plugin.is_file and isinstance(value, str) else repr(f)
        try:
            out[f] = decode_with_limits(plugin, value, where=name, max_chars=max_text_chars,
                                        min_size=image_size)
        except DataError as e:
            raise DataError(f"{e} ({where})") from None
    return DecodedSample(sample.key, sample.shard, out, sample.label, sample.group)


def _permutation(n: int, *seed: int) -> list[int]:
    order = list(range(n))
    random.Random(_mix(*seed)).shuffle(order)
    return order


def _mix(*values: int) -> int:
    """A seed from several integers, the same in every process (unlike ``hash``)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v + 0x632BE59BD9B4E019 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
    return h


class ShardStream(IterableDataset):
    """An endless, deterministic, resumable stream of preprocessed samples from shards.

    ``towers`` maps a modality to the tower whose ``preprocess_one`` makes its
    tensors (omit it to get :class:`DecodedSample` s). ``start`` maps a slot
    to the position to continue from. ``epochs`` bounds the stream (tests, eval).
    """

    def __init__(self, shards: Sequence[str], fields: Sequence[str], *, seed: int = 0,
                 towers: Mapping[str, Any] | None = None, rank: int = 0, world_size: int = 1,
                 block_shards: int = 4, start: Mapping[int, Position] | None = None,
                 epochs: int | None = None, quarantine_dir: str | Path | None = None,
                 max_text_chars: int = 1000, rotation: int = 0,
                 quarantine_prefix: str = "quarantine-stream") -> None:
        if not shards:
            raise DataError("a stream needs at least one shard")
        self.shards, self.fields, self.seed = list(shards), list(fields), seed
        self.towers = dict(towers) if towers is not None else None
        self.rank, self.world_size, self.block_shards = rank, world_size, max(1, block_shards)
        self.start = {int(k): tuple(v) for k, v in (start or {}).items()}
        self.epochs, self.max_text_chars = epochs, max_text_chars
        # a DataLoader takes batches from its workers in turn, starting with worker 0; a run
        # resumed after s batches must start with the slot that batch s would have come from
        self.rotation = rotation
        self.quarantine_dir = Path(quarantine_dir) if quarantine_dir else None
        self.quarantine_prefix = quarantine_prefix
        self._reported: set[tuple[str, str]] = set()  # (shard, key) quarantined by this process
        self._read: set[str] = set()  # shards this slot has read

    # -- which shards and samples a slot reads -----------------------------------
    def slot(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + (worker + self.rotation) % workers, self.world_size * workers

    def blocks(self, epoch: int, slot: int, slots: int) -> list[tuple[list[str], int, int]]:
        """This slot's blocks of one epoch: ``(shards, keep-every, keep-offset)``."""
        order = [self.shards[i] for i in _permutation(len(self.shards), self.seed, epoch)]
        if len(order) >= slots:
            mine = order[slot::slots]
            return [(mine[i:i + self.block_shards], 1, 0) for i in range(0, len(mine), self.block_shards)]
        # fewer shards than slots: everyone reads everything and keeps its share of samples,
        # a different share each epoch (a share that happens to be all bad is not the end)
        return [(order[i:i + self.block_shards], slots, (slot + epoch) % slots)
                for i in range(0, len(order), self.block_shards)]

    def _read_block(self, shards: list[str], every: int, offset: int, counter: list[int],
                    slot: int) -> list[RawSample]:
        samples = []
        for shard in shards:
            self._read.add(shard)
            try:
                for sample in read_shard(shard):
                    if counter[0] % every == offset:
                        samples.append(sample)
                    counter[0] += 1
            except ShardError as e:
                self._quarantine(slot, shard, "*", str(e))
        return samples

    # -- the stream ---------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        slot, slots = self.slot()
        if slot == 0 and slots < len(self.shards) and len(self.shards) % slots:
            logger.warning("%d shards split unevenly over %d readers (processes × loader workers): "
                           "some read one shard more per epoch, so some samples come round again "
                           "before others have come once; use a multiple of %d shards for exact "
                           "epochs", len(self.shards), slots, slots)
        epoch, first_block, first_index = self.start.get(slot, (0, 0, 0))
        partial = slot in self.start  # a resumed epoch may rightly have nothing left
        barren = 0  # whole epochs in a row with no valid sample
        found_any = False
        while self.epochs is None or epoch < self.epochs:
            counter = [0]  # the epoch's running sample count (for the fewer-shards split)
            yielded = 0
            for b, (shards, every, offset) in enumerate(self.blocks(epoch, slot, slots)):
                if b < first_block and every == 1:
                    continue  # whole shards of blocks done before a resume are not even opened
                raw = self._read_block(shards, every, offset, counter, slot)
                if b < first_block:
                    continue
                order = _permutation(len(raw), self.seed, epoch, slot, b)
                for i in range(first_index if b == first_block else 0, len(order)):
                    sample = raw[order[i]]
                    try:
                        item = self._prepare(decode_sample(sample, self.fields, self.max_text_chars))
                    except DataError as e:
                        self._quarantine(slot, sample.shard, sample.key, str(e))
                        continue
                    item[POSITION_KEY] = (slot, epoch, b, i + 1)
                    yielded += 1
                    found_any = True
                    yield item
                first_index = 0
            barren = 0 if yielded or partial else barren + 1
            shares = slots if len(self.shards) < slots else 1  # epochs to meet every sample
            if barren >= shares and not found_any and self._read >= set(self.shards):
                # every sample met and none was valid: an endless stream would spin
                raise DataError(f"none of the {len(self.shards)} shard(s) gave slot {slot} a valid "
                                f"sample; see the {self.quarantine_prefix} files")
            first_block, partial = 0, False
            epoch += 1

    def _prepare(self, sample: DecodedSample) -> Any:
        if self.towers is None:
            return {"sample": sample}
        return {f: self.towers[modality_of(f)].preprocess_one(v) for f, v in sample.fields.items()}

    def _quarantine(self, slot: int, shard: str, key: str, reason: str) -> None:
        if (shard, key) in self._reported:  # met again in a later epoch
            return
        self._reported.add((shard, key))
        if key == "*":
            logger.warning("shard skipped: %s", reason)
        if self.quarantine_dir is None:
            return
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        path = self.quarantine_dir / f"{self.quarantine_prefix}-{slot}.jsonl"
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"shard": shard, "key": key, "reason": reason}) + "\n")


def collate_stream(collate: Any) -> Any:
    """Wrap a tower collate so that each batch also carries its samples' last position
    per slot (``batch[POSITION_KEY] = {slot: (epoch, block, index)}``)."""
    def wrapped(items: list[dict[str, Any]]) -> dict[str, Any]:
        positions: dict[int, Position] = {}
        for item in items:
            slot, *pos = item.pop(POSITION_KEY)
            positions[slot] = tuple(pos)
        batch = collate(items)
        batch[POSITION_KEY] = positions
        return batch
    return wrapped


def stream_summary(folder: str | Path, prefix: str = "quarantine-stream") -> tuple[int, int]:
    """``(bad samples, skipped shards)`` in a run folder's stream quarantine files, each
    counted once (several loader workers, or a resumed run, may each have reported it)."""
    samples: set[tuple[str, str]] = set()
    shards: set[str] = set()
    for path in Path(folder).glob(f"{prefix}-*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut by a kill
                continue
            if entry.get("key") == "*":
                shards.add(entry.get("shard"))
            else:
                samples.add((entry.get("shard"), entry.get("key")))
    return len(samples), len(shards)


__all__ = ["DecodedSample", "POSITION_KEY", "Position", "ShardStream", "collate_stream",
           "decode_sample", "stream_summary"]
