"""Torch datasets over validated manifest records."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch.utils.data import Dataset

from ..towers import Tower
from .manifest import Record


class PairDataset(Dataset):
    """Item ``i`` is ``{modality: preprocessed tensor}`` for every modality a
    tower is given for and the record has (``image`` → path, ``text`` → string).

    >>> ds = PairDataset(manifest.records, model.towers)  # doctest: +SKIP
    """

    def __init__(self, records: Sequence[Record], towers: Mapping[str, Tower]) -> None:
        self.records = list(records)
        self.towers = dict(towers)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        record = self.records[i]
        return {m: tower.preprocess_one(getattr(record, m)) for m, tower in self.towers.items()}

    def collate(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {m: tower.collate([it[m] for it in items]) for m, tower in self.towers.items()}
