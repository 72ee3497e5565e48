"""Torch datasets over validated manifest records."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import torch
from torch.utils.data import Dataset

from ..config import modality_of
from .manifest import Record

if TYPE_CHECKING:
    from ..towers import Tower

#: the batch key suffix of a field's precomputed backbone features (``image#features``)
FEATURES_SUFFIX = "#features"


class PairDataset(Dataset):
    """Item ``i`` is ``{field: preprocessed tensor}`` for each of ``fields`` (by
    default one per tower, named by its modality), each preprocessed by the
    tower of the field's modality (``text@paraphrase`` → the text tower).

    >>> ds = PairDataset(manifest.records, model.towers)  # doctest: +SKIP
    """

    def __init__(self, records: Sequence[Record], towers: Mapping[str, "Tower"],
                 fields: Sequence[str] | None = None,
                 features: Mapping[str, torch.Tensor] | None = None) -> None:
        self.records = list(records)
        self.fields = list(fields) if fields is not None else list(towers)
        #: precomputed backbone features per field (row i for record i), served as
        #: ``field#features`` instead of the preprocessed input
        self.features = dict(features or {})
        self.towers = {f: towers[modality_of(f)] for f in self.fields if f not in self.features}
        self.all_towers = dict(towers)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        record = self.records[i]
        item = {f: tower.preprocess_one(record.fields[f]) for f, tower in self.towers.items()}
        item.update({f + FEATURES_SUFFIX: feats[i] for f, feats in self.features.items()})
        return item

    def collate(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Batch items that have the same keys (any :class:`PairDataset` over the same
        towers collates them, so one function serves several sources)."""
        return {k: (torch.stack([it[k] for it in items]) if k.endswith(FEATURES_SUFFIX)
                    else self.all_towers[modality_of(k)].collate([it[k] for it in items]))
                for k in items[0]}
