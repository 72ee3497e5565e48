"""Deterministic, resumable batch order, over one data source or several."""
from __future__ import annotations

import random
from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from ..errors import ConfigError, DataError


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

    def batch(self, k: int) -> list[int]:
        """This process's share of the ``k``-th batch drawn from this source."""
        epoch, b = divmod(k, self.steps_per_epoch)
        order = self._epoch_order(epoch)
        rows = order[b * self.batch_size:(b + 1) * self.batch_size]
        return rows[self.rank * self.share:(self.rank + 1) * self.share].tolist()

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


class MultiSourceBatchSampler(Sampler[list[int]]):
    """Each step draws its whole batch from one source, chosen with the given weights.

    Indices are global over the sources laid end to end (``ConcatDataset``
    order). The source of step ``s`` depends on ``(seed, s)`` alone, and each
    source walks its own epochs as :class:`StepBatchSampler` does, so a resumed
    run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], batch_size: int, seed: int,
                 max_steps: int, start_step: int = 0, rank: int = 0, world_size: int = 1):
        if len(weights) != len(sizes) or any(w < 0 for w in weights) or not sum(weights):
            raise ConfigError(f"data weights {list(weights)} must be one non-negative number per "
                              f"source ({len(sizes)}), not all zero")
        self.sources = [StepBatchSampler(n, batch_size, seed + 7919 * i, max_steps, 0, rank, world_size)
                        for i, n in enumerate(sizes)]
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.weights, self.seed = list(weights), seed
        self.max_steps, self.start_step = max_steps, start_step

    def source_of(self, step: int) -> int:
        return random.Random(self.seed * 1_000_003 + step).choices(
            range(len(self.weights)), self.weights)[0]

    def __iter__(self) -> Iterator[list[int]]:
        drawn = [0] * len(self.sources)
        for step in range(self.start_step):  # how far each source got before a resume
            drawn[self.source_of(step)] += 1
        for step in range(self.start_step, self.max_steps):
            i = self.source_of(step)
            yield [self.offsets[i] + j for j in self.sources[i].batch(drawn[i])]
            drawn[i] += 1

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)
