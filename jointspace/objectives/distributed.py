"""Collectives used by the objectives when a batch is split across processes.

Every helper takes the process group explicitly (``group=``):

* ``None`` — the default process group when ``torch.distributed`` is
  initialised, otherwise this process alone;
* :data:`LOCAL` — this process's rows only, no communication (e.g. validation
  that runs on one process while the others do something else);
* a ``torch.distributed.ProcessGroup`` — that group (this process must be a
  member; ranks are the group's ranks).

With one process in the group every helper is a no-op (returns its input).

Which collective runs is decided up front from the group's backend, never by
retrying another collective after an error: a rank that fell back after a
failure would run a different collective from its peers and hang them. NCCL
uses the fused ``all_gather_into_tensor`` / ``reduce_scatter_tensor``; gloo
and every other backend use ``all_gather`` into a list and ``all_reduce``
(available everywhere). Errors propagate.

Convention shared by all objectives (see :mod:`jointspace.objectives.infonce`):
each rank passes its own rows; rows are concatenated in group-rank order to
form the global batch; every rank must pass the same number of rows.
"""
from __future__ import annotations

from typing import Any, Union

import torch
import torch.distributed as dist

__all__ = ["LOCAL", "Group", "check_group", "world", "gather_rows", "reduce_scatter_rows",
           "all_reduce_", "all_gather_with_grad"]


class _Local:
    """The type of :data:`LOCAL` (a singleton that survives copy and pickle)."""

    _instance: "_Local | None" = None

    def __new__(cls) -> "_Local":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "LOCAL"

    def __reduce__(self) -> str:
        return "LOCAL"  # pickled by reference to the module-level name

    def __copy__(self) -> "_Local":
        return self

    def __deepcopy__(self, memo: dict) -> "_Local":
        return self


#: Process-group value meaning "this process's rows only, no communication".
LOCAL = _Local()

#: What ``group=`` accepts: None (default group), :data:`LOCAL` or a process group.
Group = Union[None, _Local, "dist.ProcessGroup"]

#: backends whose fused tensor collectives are used (they are their native form)
FUSED_BACKENDS = frozenset({"nccl"})


def check_group(group: Any) -> Group:
    """Return ``group`` if it is a valid ``group=`` value, else raise ``TypeError``."""
    if group is None or group is LOCAL:
        return group
    if dist.is_available():
        if isinstance(group, dist.ProcessGroup):
            return group
        if group is dist.GroupMember.NON_GROUP_MEMBER:  # new_group() on a non-member
            return group
    raise TypeError(f"group must be None, LOCAL or a torch.distributed.ProcessGroup, "
                    f"got {group!r}")


def world(group: Group) -> tuple[int, int]:
    """``(rank, size)`` of this process in ``group``; ``(0, 1)`` for :data:`LOCAL`
    and for ``None`` without an initialised default group."""
    if group is LOCAL:
        return 0, 1
    if not (dist.is_available() and dist.is_initialized()):
        if group is None:
            return 0, 1
        raise RuntimeError(f"process group {group!r} given but torch.distributed is not "
                           "initialised")
    if group is dist.GroupMember.NON_GROUP_MEMBER:
        raise ValueError("this process is not a member of the objective's process group")
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    if rank < 0:
        raise ValueError("this process is not a member of the objective's process group")
    return rank, size


def _backend(group: Group, device: torch.device) -> str:
    """The backend that runs ``group``'s collectives on ``device`` (lower case)."""
    name = str(dist.get_backend(group)).lower()
    if ":" in name:  # several backends, e.g. "cpu:gloo,cuda:nccl"
        per_device = dict(part.split(":", 1) for part in name.split(","))
        name = per_device.get(device.type, name)
    return name


def gather_rows(x: torch.Tensor, *, group: Group) -> torch.Tensor:
    """Concatenate every rank's ``x`` along dim 0 in rank order (no autograd)."""
    _, size = world(group)
    if size == 1:
        return x
    x = x.contiguous()
    out = x.new_empty((size * x.shape[0],) + tuple(x.shape[1:]))
    if _backend(group, x.device) in FUSED_BACKENDS:
        dist.all_gather_into_tensor(out, x, group=group)
    else:
        dist.all_gather(list(out.chunk(size)), x, group=group)
    return out


def reduce_scatter_rows(x: torch.Tensor, *, group: Group) -> torch.Tensor:
    """Sum ``x`` (``[size * n, ...]``) over ranks and return this rank's ``n`` rows."""
    rank, size = world(group)
    if size == 1:
        return x
    x = x.contiguous()
    n = x.shape[0] // size
    if _backend(group, x.device) in FUSED_BACKENDS:
        out = x.new_empty((n,) + tuple(x.shape[1:]))
        dist.reduce_scatter_tensor(out, x, group=group)
        return out
    dist.all_reduce(x, group=group)  # gloo has no reduce_scatter: reduce all, keep ours
    return x[rank * n:(rank + 1) * n].clone()


def all_reduce_(x: torch.Tensor, op: "dist.ReduceOp.RedOpType | None" = None, *,
                group: Group) -> torch.Tensor:
    """In-place all-reduce over ``group`` (default op: sum); returns ``x``."""
    if world(group)[1] > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM if op is None else op, group=group)
    return x


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group: Group) -> torch.Tensor:  # type: ignore[override]
        ctx.group = group
        return gather_rows(x, group=group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return reduce_scatter_rows(grad.clone(), group=ctx.group), None


def all_gather_with_grad(x: torch.Tensor, group: Group = None) -> torch.Tensor:
    """Differentiable all-gather of rows over ``group``: ``[n, ...] → [size * n, ...]``.

    The backward sums the gradient of the gathered tensor over ranks and hands
    each rank the slice of its own rows, so the gradient on a rank's input is
    the derivative of the *sum* of all ranks' losses with respect to it.

    >>> all_gather_with_grad(torch.ones(2, 3)).shape  # single process: identity
    torch.Size([2, 3])
    >>> all_gather_with_grad(torch.ones(2, 3), group=LOCAL).shape  # never communicates
    torch.Size([2, 3])
    """
    check_group(group)
    if world(group)[1] == 1:
        return x
    return _AllGather.apply(x, group)
