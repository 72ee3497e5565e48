"""Matryoshka representation learning: one loss over nested embedding prefixes."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F  # noqa: F401 (used by the doctest below)

from ..vectors import prefix_normalise as truncate_normalise
from .base import OBJECTIVES, Objective
from .distributed import Group

__all__ = ["MatryoshkaObjective", "truncate_normalise"]


class MatryoshkaObjective(Objective):
    """Weighted sum of a base objective over renormalised nested prefixes.

    Not a registered objective name: in a config, ``model.matryoshka_dims``
    (and ``model.matryoshka_weights``) wrap the configured objective in this
    class; in Python, construct it directly.

    ``loss = Σ_k w_k · base(truncate_normalise(a, k), truncate_normalise(b, k),
    logit_scale, logit_bias)`` for each ``k`` in ``dims``. ``base`` is an
    :class:`Objective` or a registered name (built with ``base_kwargs``);
    ``weights`` default to 1 for every size, as in the paper. A ``k`` equal
    to the embedding width uses the full (renormalised) embedding; ``k``
    larger than the width raises an error.

    The temperature initialisation and clamp (the instance attributes
    ``init_logit_scale``, ``init_logit_bias``, ``max_logit_scale``) are the
    base objective's. ``group`` is passed to the base: a base given by name is
    built with it; a base instance is rebound with
    :meth:`~Objective.with_group` unless ``group`` is ``None``, which keeps
    the instance's own group. :attr:`group` is always the base's group.

    Reference: Kusupati et al., "Matryoshka Representation Learning",
    NeurIPS 2022.

    >>> obj = MatryoshkaObjective("infonce", dims=[4, 8])
    >>> a = F.normalize(torch.randn(6, 8), dim=-1); b = F.normalize(torch.randn(6, 8), dim=-1)
    >>> obj(a, b, torch.tensor(2.0)).shape
    torch.Size([])
    """

    def __init__(self, base: Objective | str, dims: Sequence[int],
                 weights: Sequence[float] | None = None, group: Group = None,
                 **base_kwargs) -> None:
        if isinstance(base, str):
            base = OBJECTIVES.get(base)(group=group, **base_kwargs)
        elif base_kwargs:
            raise TypeError("base_kwargs are only used when base is given by name")
        elif not isinstance(base, Objective):
            raise TypeError(f"base must be an Objective or a registered name, got {base!r}")
        elif group is not None:
            base = base.with_group(group)
        super().__init__(base.group)
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

    def _bind(self, group: Group) -> None:
        self.group = group
        self.base = self.base.with_group(group)

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
