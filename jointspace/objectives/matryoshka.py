"""Matryoshka representation learning: one loss over nested embedding prefixes."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .base import OBJECTIVES, Objective

__all__ = ["MatryoshkaObjective", "truncate_normalise"]


def truncate_normalise(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The first ``dim`` features of each row of ``x``, L2-renormalised.

    This is what a Matryoshka-trained model serves at a smaller size.

    >>> truncate_normalise(torch.tensor([[3.0, 4.0, 12.0]]), 2)
    tensor([[0.6000, 0.8000]])
    """
    if not 0 < dim <= x.shape[-1]:
        raise ValueError(f"cannot truncate {x.shape[-1]}-dim embeddings to {dim}")
    return F.normalize(x[..., :dim], dim=-1)


@OBJECTIVES.register("matryoshka")
class MatryoshkaObjective(Objective):
    """Weighted sum of a base objective over renormalised nested prefixes.

    ``loss = Σ_k w_k · base(truncate_normalise(a, k), truncate_normalise(b, k),
    logit_scale, logit_bias)`` for each ``k`` in ``dims``. ``base`` is an
    :class:`Objective` or a registered name (built with ``base_kwargs``);
    ``weights`` default to 1 for every size, as in the paper. The temperature
    initialisation and clamp are the base objective's. A ``k`` equal to the
    embedding width uses the full (renormalised) embedding; ``k`` larger than
    the width raises an error.

    Reference: Kusupati et al., "Matryoshka Representation Learning",
    NeurIPS 2022.

    >>> obj = MatryoshkaObjective("infonce", dims=[4, 8])
    >>> a = F.normalize(torch.randn(6, 8), dim=-1); b = F.normalize(torch.randn(6, 8), dim=-1)
    >>> obj(a, b, torch.tensor(2.0)).shape
    torch.Size([])
    """

    def __init__(self, base: Objective | str, dims: Sequence[int],
                 weights: Sequence[float] | None = None, **base_kwargs) -> None:
        super().__init__()
        if isinstance(base, str):
            base = OBJECTIVES.get(base)(**base_kwargs)
        elif base_kwargs:
            raise TypeError("base_kwargs are only used when base is given by name")
        dims = [int(k) for k in dims]
        if not dims or any(k <= 0 for k in dims):
            raise ValueError(f"dims must be a non-empty list of positive sizes, got {dims}")
        weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
        if len(weights) != len(dims):
            raise ValueError(f"{len(weights)} weights for {len(dims)} dims")
        self.base = base
        self.dims = dims
        self.weights = weights
        self.init_logit_scale = base.init_logit_scale
        self.init_logit_bias = base.init_logit_bias
        self.max_logit_scale = base.max_logit_scale

    def forward(self, a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None) -> torch.Tensor:
        total = None
        for k, w in zip(self.dims, self.weights):
            term = w * self.base(truncate_normalise(a, k), truncate_normalise(b, k),
                                 logit_scale, logit_bias)
            total = term if total is None else total + term
        return total

    def extra_repr(self) -> str:
        return f"dims={self.dims}, weights={self.weights}"
