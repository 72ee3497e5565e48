"""Deterministic, resumable batch order."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from ..errors import DataError


class StepBatchSampler(Sampler[list[int]]):
    """Yields the index batches of optimiser steps ``start_step .. max_steps-1``.

    Each epoch is a fresh permutation drawn from ``(seed, epoch)`` alone, and
    incomplete final batches are dropped (a contrastive batch needs its full
    set of negatives), so step ``s`` always sees the same items whether or not
    the run was interrupted before it. With several processes, process
    ``rank`` takes its contiguous share of each batch (rows are concatenated in
    rank order when the objective gathers them, so the contrastive batch is the
    same as a single process would see).
    """

    def __init__(self, n: int, batch_size: int, seed: int, max_steps: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1):
        if n < batch_size:
            raise DataError(f"the training set has {n} valid rows, fewer than one batch "
                            f"({batch_size}); lower train.batch_size or add data")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.max_steps, self.start_step = max_steps, start_step
        self.steps_per_epoch = n // batch_size
        self.rank, self.world_size = rank, world_size
        self.share = batch_size // world_size

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while step < self.max_steps:
            epoch, offset = divmod(step, self.steps_per_epoch)
            order = self._epoch_order(epoch)
            for b in range(offset, self.steps_per_epoch):
                if step >= self.max_steps:
                    return
                batch = order[b * self.batch_size:(b + 1) * self.batch_size]
                yield batch[self.rank * self.share:(self.rank + 1) * self.share].tolist()
                step += 1

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)
