"""Torch datasets over validated manifest records."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch.utils.data import Dataset

from ..config import modality_of
from ..towers import Tower
from .manifest import Record


class PairDataset(Dataset):
    """Item ``i`` is ``{field: preprocessed tensor}`` for each of ``fields`` (by
    default one per tower, named by its modality), each preprocessed by the
    tower of the field's modality (``text@paraphrase`` → the text tower).

    >>> ds = PairDataset(manifest.records, model.towers)  # doctest: +SKIP
    """

    def __init__(self, records: Sequence[Record], towers: Mapping[str, Tower],
                 fields: Sequence[str] | None = None) -> None:
        self.records = list(records)
        self.fields = list(fields) if fields is not None else list(towers)
        self.towers = {f: towers[modality_of(f)] for f in self.fields}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        record = self.records[i]
        return {f: tower.preprocess_one(record.fields[f]) for f, tower in self.towers.items()}

    def collate(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {f: tower.collate([it[f] for it in items]) for f, tower in self.towers.items()}
