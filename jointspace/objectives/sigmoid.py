"""Pairwise sigmoid loss (SigLIP), computed in row stripes without the B × B matrix.

Math (``N`` global rows, logits ``Z = s·A Bᵀ + t``, labels ``+1`` on the
diagonal and ``−1`` elsewhere)::

    L = −1/N Σ_ij log σ(y_ij Z_ij) = 1/N [Σ_ij softplus(Z_ij) − Σ_i Z_ii]
    ∂L/∂Z = (σ(Z) − I) / N

Everything is elementwise, so one pass over row stripes computes the loss
*and* the gradient (``σ(Z) B`` and ``σ(Z)ᵀ A``, three ``N × N × d`` products in
all) whenever a gradient will be needed; backward only scales the stored
gradients by the incoming one. Memory is ``O(N · block + N · d)``.

Several processes: each rank gathers ``B`` and owns the pairs
``(its rows of A, every column)``, so every pair is counted exactly once.
"""
from __future__ import annotations

import math

import torch

from .base import OBJECTIVES, Objective
from .blocks import check_pair, compute_dtype, no_autocast, resolve_block, stripes
from .distributed import Group, all_reduce_, check_group, gather_rows, reduce_scatter_rows, world

__all__ = ["SigmoidLoss", "blockwise_sigmoid"]

_softplus_out = getattr(torch._C._nn, "softplus", None)


def _softplus_sum(z: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    if _softplus_out is not None:
        return _softplus_out(z, 1, 20, out=buf).sum()
    return torch.nn.functional.softplus(z).sum()  # pragma: no cover - older builds


class _BlockwiseSigmoid(torch.autograd.Function):
    """``(a, b, scale, bias) → loss``; ``scale`` is the exponentiated temperature."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor,  # type: ignore[override]
                bias: torch.Tensor, block_size: int | None, need_grad: bool,
                group: Group) -> torch.Tensor:
        with no_autocast(a.device):
            rank, size = world(group)
            dt = compute_dtype(a)
            a_c, b_c, s, t = a.to(dt), b.to(dt), scale.to(dt), bias.to(dt)
            b_all = gather_rows(b_c, group=group)
            n_loc, dim = a_c.shape
            n = b_all.shape[0]
            block = resolve_block(block_size, n_loc, n, dim)
            a_s, b_t = a_c * s, b_all.t()
            z_buf, e_buf = a_c.new_empty(block, n), a_c.new_empty(block, n)
            sp, pos, sig, a_pa = (a_c.new_zeros(()) for _ in range(4))
            pa = a_c.new_empty(n_loc, dim) if need_grad else None  # σ(Z) B
            pb = a_c.new_zeros(n, dim) if need_grad else None  # σ(Z)ᵀ A
            for i0, i1 in stripes(n_loc, block):
                z, e = z_buf[: i1 - i0], e_buf[: i1 - i0]
                torch.mm(a_s[i0:i1], b_t, out=z)
                z.add_(t)
                sp += _softplus_sum(z, e)
                pos += (a_c[i0:i1] * b_c[i0:i1]).sum()
                if need_grad:
                    sig += z.sigmoid_().sum()
                    torch.mm(z, b_all, out=pa[i0:i1])
                    a_pa += (a_c[i0:i1] * pa[i0:i1]).sum()
                    pb.addmm_(z.t(), a_c[i0:i1])
            del z_buf, e_buf
            loss = (sp - s * pos - n_loc * t) / n  # this rank's share of the global loss
            if size > 1:
                loss = all_reduce_(loss.clone(), group=group)
            if need_grad:
                # gradients of the global loss wrt this rank's inputs (pb: wrt all of B)
                lo = rank * n_loc
                pa.sub_(b_c).mul_(s / n)
                pb[lo:lo + n_loc].sub_(a_c)
                pb.mul_(s / n)
                grad_s = (a_pa - pos) / n  # this rank's rows' share
                grad_t = (sig - n_loc) / n
                ctx.grads = [pa, pb, grad_s, grad_t]
        ctx.conf = (size, a.dtype, b.dtype, scale.dtype, bias.dtype, group)
        return loss

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        grads = getattr(ctx, "grads", None)
        if grads is None:
            raise RuntimeError("blockwise sigmoid loss: gradients were not prepared in forward "
                               "(called under no_grad?) or backward ran twice on the same graph")
        ctx.grads = None
        size, a_dtype, b_dtype, s_dtype, t_dtype, group = ctx.conf
        pa, pb, grad_s, grad_t = grads
        c = grad_out.to(pa.dtype) * size  # gradients of Σ_ranks loss = size × global loss
        need_a, need_b, need_s, need_t = ctx.needs_input_grad[:4]
        grad_a = pa.mul_(c).to(a_dtype) if need_a else None
        grad_b = reduce_scatter_rows(pb.mul_(c), group=group).to(b_dtype) if need_b else None
        return (grad_a, grad_b, (grad_s * c).to(s_dtype) if need_s else None,
                (grad_t * c).to(t_dtype) if need_t else None, None, None, None)


def blockwise_sigmoid(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float,
                      bias: torch.Tensor | float, *, block_size: int | None = None,
                      group: Group = None) -> torch.Tensor:
    """SigLIP loss of paired rows ``a[i] ↔ b[i]`` with logits ``scale · a bᵀ + bias``.

    ``scale`` is the *exponentiated* scale. Returns ``−Σ_ij log σ(y_ij z_ij) / B``
    (OpenCLIP ``SigLipLoss`` normalisation), equal in value and gradients to the
    full-matrix computation without forming it. When autograd will need
    gradients they are computed during this call (one pass) and stored, so
    backward may run only once per call. bf16 / fp16 inputs are upcast to
    float32. ``group``: the process group whose ranks each pass their own rows
    (``None``: the default group if initialised; :data:`~jointspace.objectives.LOCAL`:
    this process alone); see :class:`SigmoidLoss`.
    """
    check_pair(a, b)
    scale = torch.as_tensor(scale, device=a.device)
    bias = torch.as_tensor(bias, device=a.device)
    scale = (scale if scale.is_floating_point() else scale.float()).reshape(())
    bias = (bias if bias.is_floating_point() else bias.float()).reshape(())
    need_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (a, b, scale, bias))
    return _BlockwiseSigmoid.apply(a, b, scale, bias, block_size, need_grad, check_group(group))


@OBJECTIVES.register("sigmoid")
class SigmoidLoss(Objective):
    """Pairwise sigmoid loss of SigLIP: every pair is an independent binary task.

    Expects ``a``, ``b``: ``[B, d]`` unit vectors, row ``i`` of each a positive
    pair; ``logit_scale`` (log scale, clamped to ``max_logit_scale`` before
    ``exp``) and ``logit_bias`` (``None`` means 0). Returns
    ``−1/B Σ_ij log σ(z_ij · (s a_i·b_j + t))`` with ``z_ij = +1`` on the
    diagonal and ``−1`` elsewhere, the normalisation of the SigLIP paper and
    OpenCLIP's ``SigLipLoss``. Initialise ``log s = log 10`` and ``t = −10``
    (:attr:`init_logit_scale`, :attr:`init_logit_bias`). Memory is
    ``O(B·block + B·d)``; ``block_size`` defaults to
    :func:`~jointspace.objectives.blocks.choose_block_size`.

    Several processes: ``group`` is ``None`` (the default process group when
    ``torch.distributed`` is initialised, else this process alone), a
    ``ProcessGroup``, or :data:`~jointspace.objectives.LOCAL` (this process's
    rows alone, no communication). The global batch is every rank's rows
    concatenated in group-rank order; each rank owns the pairs (its rows, all
    columns). Every rank
    returns the global loss, and gradients are those of ``W × loss`` (``W``
    ranks): ``W ×`` the single-process gradient on each rank's own ``a``/``b``
    rows, ``W ×`` its rows' share for ``logit_scale``/``logit_bias`` — so DDP's
    gradient averaging reproduces single-process training exactly.

    Reference: Zhai et al., "Sigmoid Loss for Language Image Pre-Training"
    (SigLIP), ICCV 2023.

    >>> import torch.nn.functional as F
    >>> a = F.normalize(torch.randn(8, 16), dim=-1); b = F.normalize(torch.randn(8, 16), dim=-1)
    >>> loss = SigmoidLoss()(a, b, torch.tensor(math.log(10)), torch.tensor(-10.0))
    >>> bool(loss > 0)
    True
    """

    init_logit_scale = math.log(10.0)
    init_logit_bias = -10.0

    def __init__(self, block_size: int | None = None, group: Group = None) -> None:
        super().__init__(group)
        self.block_size = block_size

    def forward(self, a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float,
                logit_bias: torch.Tensor | float | None = None) -> torch.Tensor:
        if not torch.is_tensor(logit_scale):
            logit_scale = torch.tensor(float(logit_scale), device=a.device)
        scale = logit_scale.clamp(max=self.max_logit_scale).exp()
        bias = 0.0 if logit_bias is None else logit_bias
        return blockwise_sigmoid(a, b, scale, bias, block_size=self.block_size, group=self.group)

    def extra_repr(self) -> str:
        group = "" if self.group is None else f", group={self.group!r}"
        return f"block_size={self.block_size}{group}"
