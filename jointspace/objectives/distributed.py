"""Collectives used by the objectives when a batch is split across processes.

Every helper is a no-op (returns its input) when ``torch.distributed`` is not
initialised or the world has one process, so single-process code pays nothing.

Convention shared by all objectives (see :mod:`jointspace.objectives.infonce`):
each rank passes its own rows; rows are concatenated in rank order to form the
global batch; every rank must pass the same number of rows.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.distributed as dist

__all__ = ["single_process", "world", "gather_rows", "reduce_scatter_rows", "all_reduce_", "all_gather_with_grad"]


_local_only = False


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Within this block the objectives ignore the process group and use only
    this process's rows (e.g. validation that runs on process 0 alone)."""
    global _local_only
    previous, _local_only = _local_only, True
    try:
        yield
    finally:
        _local_only = previous


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if not _local_only and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` along dim 0 in rank order (no autograd)."""
    _, size = world()
    if size == 1:
        return x
    x = x.contiguous()
    out = x.new_empty((size * x.shape[0],) + tuple(x.shape[1:]))
    try:
        dist.all_gather_into_tensor(out, x)
    except (RuntimeError, NotImplementedError, ValueError):  # backends without the fused op
        dist.all_gather(list(out.chunk(size)), x)
    return out


def reduce_scatter_rows(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` (``[world * n, ...]``) over ranks and return this rank's ``n`` rows."""
    rank, size = world()
    if size == 1:
        return x
    x = x.contiguous()
    n = x.shape[0] // size
    if dist.get_backend() != "gloo":  # gloo has no reduce_scatter
        out = x.new_empty((n,) + tuple(x.shape[1:]))
        try:
            dist.reduce_scatter_tensor(out, x)
            return out
        except (RuntimeError, NotImplementedError, ValueError):
            pass
    dist.all_reduce(x)
    return x[rank * n:(rank + 1) * n].clone()


def all_reduce_(x: torch.Tensor, op: "dist.ReduceOp.RedOpType" = None) -> torch.Tensor:
    """In-place all-reduce (default: sum); returns ``x``."""
    if world()[1] > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM if op is None else op)
    return x


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return gather_rows(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return reduce_scatter_rows(grad.clone() if world()[1] > 1 else grad)


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Differentiable all-gather of rows: ``[n, ...] → [world * n, ...]``.

    The backward sums the gradient of the gathered tensor over ranks and hands
    each rank the slice of its own rows, so the gradient on a rank's input is
    the derivative of the *sum* of all ranks' losses with respect to it.

    >>> all_gather_with_grad(torch.ones(2, 3)).shape  # single process: identity
    torch.Size([2, 3])
    """
    if world()[1] == 1:
        return x
    return _AllGather.apply(x)
