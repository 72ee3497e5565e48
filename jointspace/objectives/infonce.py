"""Symmetric InfoNCE (CLIP / ALIGN), computed in row stripes without the B × B matrix.

Math (``N`` global rows, logits ``Z = s·A Bᵀ``, label smoothing ``ε``)::

    L = 1/(2N) [Σ_i lse_row(Z)_i + Σ_j lse_col(Z)_j] − (1−ε)/N Σ_i Z_ii − ε/N² Σ_ij Z_ij
    ∂L/∂Z = (softmax_row(Z) + softmax_col(Z)) / (2N) − (1−ε)/N · I − ε/N² · 1 1ᵀ

``Σ_ij Z_ij = s (Σ_i a_i)·(Σ_j b_j)`` and the identity / all-ones parts of the
gradient are rank-one or diagonal, so only ``P = softmax_row + softmax_col``
needs the stripes. Forward: one pass over row stripes computes each stripe's
logits, its (complete) row log-sum-exp and an online (running max, rescaled
sum) column log-sum-exp. Backward: a second pass recomputes the stripe, forms
``P`` in place and does the two products ``P B`` and ``Pᵀ A``. That is four
``N × N × d`` products in all and ``O(N · block + N · d)`` memory.

Two numerically exact variants of each pass: when the logits' range allows
(always at CLIP's initial scale, and at scale 100 whenever every positive
cosine is above about −0.3, see :func:`_shift_for`) one fixed shift ``c``
serves every row and column, so pass 1 is ``exp`` plus two sums and pass 2
is ``P = exp(Z − c) ∘ (u 1ᵀ + 1 vᵀ)``; otherwise the passes track row and
column maxima (the online log-sum-exp), costing a few more elementwise sweeps.

Several processes: each rank holds its own rows of ``A`` and ``B``. It gathers
``B`` and computes *its rows* of the global ``Z``; the column statistics
(``N`` maxima and sums) are all-reduced, so the b→a direction sees every
rank's ``a`` without gathering ``A``. See :class:`InfoNCE` for the convention.
"""
from __future__ import annotations

import math

import torch

from .base import OBJECTIVES, Objective
from .blocks import check_pair, compute_dtype, no_autocast, resolve_block, stripes
from .distributed import Group, all_reduce_, check_group, gather_rows, reduce_scatter_rows, world

__all__ = ["InfoNCE", "blockwise_infonce"]


def _shift_for(a: torch.Tensor, b_pos: torch.Tensor, b_all: torch.Tensor, s: torch.Tensor,
               group: Group) -> torch.Tensor | None:
    """One shift ``c`` that keeps ``exp(Z − c)`` exact over the whole matrix, or None.

    ``U = s·max‖a‖·max‖b‖`` bounds every logit, and every row and column holds
    a positive ``Z_ii ≥ D = min_i Z_ii``. With ``c = U − H``, ``H = 86 − ln N``,
    no sum of ``N`` terms overflows float32, and terms lost to underflow weigh
    at most ``N² e^{U − D − 173}`` relative to the row's / column's positive, so
    ``U − D ≤ 150 − 2 ln N`` (at scale 100: every positive cosine ≥ −0.3)
    keeps that below 1e-10 while skipping every max / rescale pass. Otherwise
    (or in float64) the caller takes the max-tracking path. The bounds are
    all-reduced over ``group`` so every rank takes the same path.
    """
    if a.dtype != torch.float32 or a.shape[0] == 0:
        return None
    pos = torch.bmm(a.unsqueeze(1), b_pos.unsqueeze(2)).min()
    stats = torch.stack([a.norm(dim=1).max(), b_all.norm(dim=1).max(), -pos])
    all_reduce_(stats, torch.distributed.ReduceOp.MAX, group=group)
    a_max, b_max, neg_pos = stats.tolist()
    sv = float(s)
    log_n = math.log(max(b_all.shape[0], 2))
    upper, lower = sv * a_max * b_max, -sv * neg_pos
    if not math.isfinite(upper) or upper - lower > 150 - 2 * log_n:
        return None
    return s.new_tensor(upper - (86 - log_n))


def _augmented(b_all: torch.Tensor) -> torch.Tensor:
    """``[b, 1]``: a product with ``[s·a_i, −c]`` gives ``Z_ij − c`` with no extra pass."""
    out = b_all.new_empty(b_all.shape[0], b_all.shape[1] + 1)
    out[:, :-1] = b_all
    out[:, -1] = 1
    return out


def _pass1_exact(a, b_pos, b_all, s, block):
    """Row lse, column (max, sum) and Σ a_i·b_i, tracking maxima (any range)."""
    n_loc, n = a.shape[0], b_all.shape[0]
    b_t = b_all.t()
    z_buf, e_buf = a.new_empty(block, n), a.new_empty(block, n)
    lse_r = a.new_empty(n_loc)
    cmax, csum, pos = a.new_full((n,), float("-inf")), a.new_zeros(n), a.new_zeros(())
    for i0, i1 in stripes(n_loc, block):
        z, e = z_buf[: i1 - i0], e_buf[: i1 - i0]
        torch.mm(a[i0:i1] * s, b_t, out=z)
        m = z.amax(dim=1, keepdim=True)
        torch.sub(z, m, out=e)
        lse_r[i0:i1] = e.exp_().sum(dim=1).log_().add_(m.squeeze(1))
        new_max = torch.maximum(cmax, z.amax(dim=0))
        csum.mul_((cmax - new_max).exp_())
        csum.add_(z.sub_(new_max).exp_().sum(dim=0))
        cmax = new_max
        pos += (a[i0:i1] * b_pos[i0:i1]).sum()
    return lse_r, cmax, csum, pos


def _pass1_shifted(a, b_pos, b_all, s, c, block):
    """As :func:`_pass1_exact` with the fixed shift ``c``: one exp, two sums per stripe."""
    n_loc, dim = a.shape
    n = b_all.shape[0]
    b_aug_t = _augmented(b_all).t()
    z_buf = a.new_empty(block, n)
    a_aug = a.new_empty(block, dim + 1)
    a_aug[:, dim] = -c
    lse_r, csum, pos = a.new_empty(n_loc), a.new_zeros(n), a.new_zeros(())
    for i0, i1 in stripes(n_loc, block):
        k = i1 - i0
        z = z_buf[:k]
        torch.mul(a[i0:i1], s, out=a_aug[:k, :dim])
        torch.mm(a_aug[:k], b_aug_t, out=z)
        z.exp_()
        torch.sum(z, dim=1, out=lse_r[i0:i1])
        csum += z.sum(dim=0)
        pos += (a[i0:i1] * b_pos[i0:i1]).sum()
    lse_r.log_().add_(c)
    return lse_r, c.expand(n), csum, pos


def _pass2_exact(a, b_pos, b_all, s, lse_r, lse_c, block, need_b, need_s):
    """``P B``, ``Pᵀ A`` (P = softmax_row + softmax_col), Σ a_i·(P B)_i, Σ a_i·b_i."""
    n_loc, dim = a.shape
    n = b_all.shape[0]
    b_t = b_all.t()
    z_buf, e_buf = a.new_empty(block, n), a.new_empty(block, n)
    pa = a.new_empty(n_loc, dim)
    pb = a.new_zeros(n, dim) if need_b else None
    a_pa, pos = a.new_zeros(()), a.new_zeros(())
    for i0, i1 in stripes(n_loc, block):
        z, e = z_buf[: i1 - i0], e_buf[: i1 - i0]
        torch.mm(a[i0:i1] * s, b_t, out=z)
        torch.sub(z, lse_c, out=e)
        z.sub_(lse_r[i0:i1, None]).exp_().add_(e.exp_())
        _products(z, a, b_pos, b_all, pa, pb, i0, i1, need_s, a_pa, pos)
    return pa, pb, a_pa, pos


def _pass2_shifted(a, b_pos, b_all, s, c, lse_r, lse_c, block, need_b, need_s):
    """As :func:`_pass2_exact` with ``P = exp(Z − c) ∘ (e^{c − lse_r} 1ᵀ + 1 e^{c − lse_c}ᵀ)``."""
    n_loc, dim = a.shape
    n = b_all.shape[0]
    b_aug_t = _augmented(b_all).t()
    z_buf, e_buf = a.new_empty(block, n), a.new_empty(block, n)
    a_aug = a.new_empty(block, dim + 1)
    a_aug[:, dim] = -c
    u, v = (c - lse_r).exp_(), (c - lse_c).exp_()
    pa = a.new_empty(n_loc, dim)
    pb = a.new_zeros(n, dim) if need_b else None
    a_pa, pos = a.new_zeros(()), a.new_zeros(())
    for i0, i1 in stripes(n_loc, block):
        k = i1 - i0
        z, e = z_buf[:k], e_buf[:k]
        torch.mul(a[i0:i1], s, out=a_aug[:k, :dim])
        torch.mm(a_aug[:k], b_aug_t, out=z)
        torch.add(u[i0:i1, None], v, out=e)
        z.exp_().mul_(e)
        _products(z, a, b_pos, b_all, pa, pb, i0, i1, need_s, a_pa, pos)
    return pa, pb, a_pa, pos


def _products(p, a, b_pos, b_all, pa, pb, i0, i1, need_s, a_pa, pos):
    torch.mm(p, b_all, out=pa[i0:i1])
    if pb is not None:
        pb.addmm_(p.t(), a[i0:i1])
    if need_s:
        a_pa += (a[i0:i1] * pa[i0:i1]).sum()
        pos += (a[i0:i1] * b_pos[i0:i1]).sum()


class _BlockwiseInfoNCE(torch.autograd.Function):
    """``(a, b, scale) → loss``; ``scale`` is the exponentiated temperature."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor,  # type: ignore[override]
                label_smoothing: float, block_size: int | None, group: Group) -> torch.Tensor:
        with no_autocast(a.device):
            rank, size = world(group)
            dt = compute_dtype(a)
            a_c, b_c, s = a.to(dt), b.to(dt), scale.to(dt)
            b_all = gather_rows(b_c, group=group)
            n_loc, dim = a_c.shape
            n = b_all.shape[0]
            block = resolve_block(block_size, n_loc, n, dim)
            c = _shift_for(a_c, b_c, b_all, s, group)
            if c is None:
                lse_r, cmax, csum, pos = _pass1_exact(a_c, b_c, b_all, s, block)
            else:
                lse_r, cmax, csum, pos = _pass1_shifted(a_c, b_c, b_all, s, c, block)
            a_sum, b_sum = a_c.sum(dim=0), b_all.sum(dim=0)
            lse_r_sum = lse_r.sum()
            if size > 1:
                gmax = all_reduce_(cmax.clone(), torch.distributed.ReduceOp.MAX, group=group)
                csum.mul_((cmax - gmax).exp_())
                packed = all_reduce_(torch.cat([csum, lse_r_sum[None], pos[None], a_sum]),
                                     group=group)
                csum, lse_r_sum, pos, a_sum_all = packed[:n], packed[n], packed[n + 1], packed[n + 2:]
                cmax = gmax
            else:
                a_sum_all = a_sum
            lse_c = csum.log_().add_(cmax)
            eps = label_smoothing
            loss = ((lse_r_sum + lse_c.sum()) / (2 * n) - (1 - eps) / n * s * pos
                    - eps / n ** 2 * s * torch.dot(a_sum_all, b_sum))
        shift = a_c.new_full((), float("nan")) if c is None else c
        ctx.save_for_backward(a, b_all, s, lse_r, lse_c, a_sum_all, shift)
        ctx.conf = (rank, size, eps, block, b.dtype, scale.dtype, c is not None, group)
        return loss

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        a, b_all, s, lse_r, lse_c, a_sum_all, shift = ctx.saved_tensors
        rank, size, eps, block, b_dtype, s_dtype, shifted, group = ctx.conf
        need_a, need_b, need_s = ctx.needs_input_grad[:3]
        with no_autocast(a.device):
            dt = b_all.dtype
            a_c = a.to(dt)
            n_loc, dim = a_c.shape
            n = b_all.shape[0]
            b_pos = b_all[rank * n_loc:(rank + 1) * n_loc]
            if shifted:
                pa, pb, a_pa, pos = _pass2_shifted(a_c, b_pos, b_all, s, shift, lse_r, lse_c,
                                                   block, need_b, need_s)
            else:
                pa, pb, a_pa, pos = _pass2_exact(a_c, b_pos, b_all, s, lse_r, lse_c,
                                                 block, need_b, need_s)
            c = grad_out.to(dt) * size  # gradients of Σ_ranks loss = size × global loss
            b_sum = b_all.sum(dim=0)
            grad_a = grad_b = grad_s = None
            if need_s:
                share = (a_pa / (2 * n) - (1 - eps) / n * pos
                         - eps / n ** 2 * torch.dot(a_c.sum(dim=0), b_sum))
                grad_s = (c * share).to(s_dtype)
            if need_a:  # s [P B/(2N) − (1−ε)/N b_i − ε/N² Σb]
                grad_a = pa.mul_(c * s / (2 * n))
                grad_a.addcmul_(b_pos, c * s * (1 - eps) / n, value=-1)
                grad_a.sub_((c * s * eps / n ** 2) * b_sum)
                grad_a = grad_a.to(a.dtype)
            del pa
            if need_b:
                grad_b = reduce_scatter_rows(pb.mul_(c * s / (2 * n)), group=group)
                grad_b.addcmul_(a_c, c * s * (1 - eps) / n, value=-1)
                grad_b.sub_((c * s * eps / n ** 2) * a_sum_all)
                grad_b = grad_b.to(b_dtype)
        return grad_a, grad_b, grad_s, None, None, None


def blockwise_infonce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float, *,
                      label_smoothing: float = 0.0, block_size: int | None = None,
                      group: Group = None) -> torch.Tensor:
    """Symmetric InfoNCE of paired rows ``a[i] ↔ b[i]`` at temperature scale ``scale``.

    ``scale`` is the *exponentiated* scale (``logit_scale.exp()``). Equal in
    value and gradients to the full-matrix loss (mean of the a→b and b→a
    cross-entropies, ``F.cross_entropy(..., label_smoothing=...)``) but never
    forms the ``B × B`` matrix. bf16 / fp16 inputs are upcast to float32;
    gradients come back in the input dtypes. ``group`` is the process group
    whose ranks each pass their own rows (``None``: the default group if
    initialised; :data:`~jointspace.objectives.LOCAL`: this process alone); see
    :class:`InfoNCE` for the scaling convention.
    """
    check_pair(a, b)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    scale = torch.as_tensor(scale, device=a.device)
    if not scale.is_floating_point():
        scale = scale.float()
    return _BlockwiseInfoNCE.apply(a, b, scale.reshape(()), float(label_smoothing), block_size,
                                   check_group(group))


@OBJECTIVES.register("infonce")
class InfoNCE(Objective):
    """Symmetric cross-entropy over the scaled cosine-similarity matrix (CLIP).

    Expects ``a``, ``b``: ``[B, d]`` unit vectors where row ``i`` of each is a
    positive pair; ``logit_scale`` is the log temperature scale, clamped to
    ``max_logit_scale`` (log 100) before ``exp``; ``logit_bias`` is ignored
    (a bias cancels in a softmax). Returns the scalar mean of the a→b and b→a
    cross-entropies, optionally label-smoothed. Memory is ``O(B·block + B·d)``
    (see :mod:`jointspace.objectives.infonce`); ``block_size`` (rows per
    stripe) defaults to :func:`~jointspace.objectives.blocks.choose_block_size`.

    Several processes: ``group`` is ``None`` (the default process group when
    ``torch.distributed`` is initialised, else this process alone), a
    ``ProcessGroup`` of ``W`` ranks, or :data:`~jointspace.objectives.LOCAL`
    (this process's rows alone, no communication). Each rank of the group
    passes its own ``B_local`` rows (same on every rank); the loss is taken
    over the global batch of ``W · B_local`` rows, concatenated in group-rank
    order, so every positive meets every rank's negatives. Every rank returns
    the global loss (so the mean over ranks equals the single-process loss on
    the concatenated batch), and the gradients are those of ``W × loss``: the
    gradient on a rank's ``a``/``b`` is ``W ×`` the single-process gradient of
    its rows, and its ``logit_scale`` gradient is ``W ×`` its rows' share of
    the single-process gradient. After DDP averages gradients over ranks they
    equal the single-process gradients exactly. Backward must be called on
    every rank (it runs one collective).

    Reference: Radford et al., "Learning Transferable Visual Models From
    Natural Language Supervision" (CLIP), ICML 2021; van den Oord et al.,
    "Representation Learning with Contrastive Predictive Coding", 2018.

    >>> import torch.nn.functional as F
    >>> a = F.normalize(torch.randn(8, 16), dim=-1); b = F.normalize(torch.randn(8, 16), dim=-1)
    >>> float(InfoNCE(block_size=3)(a, b, torch.tensor(2.0))) > 0
    True
    """

    def __init__(self, label_smoothing: float = 0.0, block_size: int | None = None,
                 group: Group = None) -> None:
        super().__init__(group)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.block_size = block_size

    def forward(self, a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float,
                logit_bias: torch.Tensor | None = None) -> torch.Tensor:
        logit_scale = torch.as_tensor(logit_scale, dtype=torch.float32, device=a.device) \
            if not torch.is_tensor(logit_scale) else logit_scale
        scale = logit_scale.clamp(max=self.max_logit_scale).exp()
        return blockwise_infonce(a, b, scale, label_smoothing=self.label_smoothing,
                                 block_size=self.block_size, group=self.group)

    def extra_repr(self) -> str:
        return (f"label_smoothing={self.label_smoothing}, block_size={self.block_size}"
                + ("" if self.group is None else f", group={self.group!r}"))
