"""Multi-process set-up for ``torchrun`` (gloo on CPU, NCCL on GPU).

Each process embeds its own share of the contrastive batch; the objectives
gather embeddings across processes (:mod:`jointspace.objectives.distributed`)
and each process computes its own rows of the loss. Parameter gradients are
then averaged with one coalesced all-reduce after backward. That is done by
hand rather than by DistributedDataParallel because the cached-negative step
runs several backward passes per step and the temperature is used outside the
towers' forward, both of which DDP's hooks handle poorly; at jointspace's
model sizes the lost overlap of communication with compute is small.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from ..towers.sync_norm import convert_sync_batchnorm

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def average_gradients(params: list[torch.Tensor]) -> None:
    """Average the gradients of ``params`` over all processes (no-op when alone)."""
    if not is_distributed() or not params:
        return
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def sync_batch_norms(model: torch.nn.Module) -> None:
    """Make every batch norm below ``model`` normalise by the statistics of the
    whole contrastive batch, not this process's share (no-op when alone).

    In place, keeping parameters, buffers and their names
    (:func:`~jointspace.towers.sync_norm.convert_sync_batchnorm`); call it once
    the towers are complete (after ``load_assets``) and before the optimiser
    is built. Layers in eval mode (a frozen backbone) never communicate.
    """
    if not is_distributed():
        return
    for name, child in model.named_children():
        model.add_module(name, convert_sync_batchnorm(child))


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Start every process from rank 0's weights and buffers."""
    if not is_distributed():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def barrier() -> None:
    """Wait for every process (no-op when alone)."""
    if is_distributed():
        dist.barrier()


def on_main_then_share(fn: Callable[[], T]) -> T:
    """Run ``fn`` on process 0 only and hand its result (or its error) to every process.

    Used for reading and validating manifests: one process decodes every file
    and all of them train on the same kept rows, even if a flaky file would
    read differently on another process.
    """
    if not is_distributed():
        return fn()
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # shared so the other processes stop too instead of hanging
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value
