"""Batch norm whose training statistics span every process of a ``torch.distributed``
run, on CPU (gloo) as on GPU (NCCL).

``torch.nn.SyncBatchNorm`` runs on CUDA tensors only, so a CPU ``torchrun``
would normalise each process's share of the batch by its own statistics and
train a different model than one process does. :class:`SyncBatchNorm` sums
the per-channel count, sum and sum of squares over processes with one
all-reduce (whose backward all-reduces their gradients, so every process's
input gradient includes what its rows did to the others' statistics),
normalises with the global mean and biased variance, and updates the running
statistics with the unbiased global variance as ``nn.BatchNorm`` does.
Outside a process group of two or more, and in eval mode, it *is*
``nn.BatchNorm`` (its ``forward`` is called). :func:`convert_sync_batchnorm`
swaps it in for every batch norm of a model, keeping parameters, buffers,
their names and the train/eval mode of each layer.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.lazy import LazyModuleMixin


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of each process's input is the sum of
    every process's output gradient (each output depends on every input)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def _world_size(group: Any) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


class SyncBatchNorm(_BatchNorm):
    """Batch norm over channel dimension 1 of an input of any rank ≥ 2, with batch
    statistics gathered from every process of ``process_group`` (default: all)
    in training mode. Every process must call it in the same order, as with any
    collective."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group: Any = None, device: Any = None, dtype: Any = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or _world_size(self.process_group) <= 1:
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        view = [1, c] + [1] * (input.dim() - 2)
        dtype = torch.promote_types(input.dtype, torch.float32)  # bf16/fp16 → float32
        x = input.to(dtype)
        # Sums are taken about the running mean (the same on every process: broadcast at
        # the start, then updated from the same all-reduced numbers), which keeps
        # E[x²] − E[x]² from cancelling when the mean is large next to the spread.
        shift = None
        if self.running_mean is not None:
            shift = self.running_mean.detach().to(dtype)
            x = x - shift.view(view)
        count = x.new_full((1,), input.numel() // c)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])
        stats = _AllReduceSum.apply(stats, self.process_group)
        total, squares, n = stats[:c], stats[c:2 * c], stats[2 * c]
        if n.device.type == "cpu" and float(n) <= 1:  # (not checked on a GPU: .item() would sync)
            raise ValueError(f"Expected more than 1 value per channel when training, "
                             f"got {int(n)} over all processes")
        mean = total / n
        var = (squares / n - mean * mean).clamp_min(0.0)  # biased, as the normalisation uses
        y = (x - mean.view(view)) * torch.rsqrt(var + self.eps).view(view)
        if self.weight is not None:
            y = y * self.weight.to(dtype).view(view)
        if self.bias is not None:
            y = y + self.bias.to(dtype).view(view)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                global_mean = mean + shift if shift is not None else mean
                unbiased = var * (n / (n - 1))
                self.running_mean.mul_(1 - factor).add_(global_mean.to(self.running_mean.dtype),
                                                        alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype),
                                                       alpha=factor)
        return y.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, process_group: Any = None) -> nn.Module:
    """``module`` with every batch norm (1d/2d/3d, ``torch.nn.SyncBatchNorm``
    included; lazy ones not yet materialised are left alone) replaced by a
    :class:`SyncBatchNorm` that shares its parameters and buffers and keeps
    its train/eval mode, so ``state_dict`` keys and values are unchanged.
    Children are replaced in place; returns ``module`` or, if it is itself a
    batch norm, its replacement."""
    out = module
    if (isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm)
            and not isinstance(module, LazyModuleMixin)):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group, device="meta")
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child, process_group)
        if converted is not child:
            out.add_module(name, converted)
    return out
