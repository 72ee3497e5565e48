"""The objective interface shared by every contrastive loss."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..registry import Registry
from .distributed import Group, check_group


class Objective(nn.Module):
    """A loss over a batch of paired, L2-normalised embeddings.

    ``forward(a, b, logit_scale, logit_bias)`` takes this process's rows
    ``a[i] ↔ b[i]`` (shape ``[B_local, d]``), the *log* of the temperature
    scale and, for objectives that use one, a bias; it returns a scalar loss.
    The learnable ``logit_scale`` / ``logit_bias`` live in the joint model;
    each objective says how to initialise them through three *instance*
    attributes (set in ``__init__`` from the class defaults below, so a wrapper
    can report its base's values): :attr:`init_logit_scale`,
    :attr:`init_logit_bias` and :attr:`max_logit_scale`.

    ``group`` says which processes share the batch: ``None`` (the default
    process group when ``torch.distributed`` is initialised, else this process
    alone), :data:`~jointspace.objectives.LOCAL` (this process's rows only, no
    communication) or a ``torch.distributed.ProcessGroup``.
    :meth:`with_group` returns a copy bound to another group.
    """

    #: class default of the initial log scale (CLIP: log(1/0.07)).
    init_logit_scale: float = math.log(1 / 0.07)
    #: class default of the initial bias, or None when the objective uses no bias.
    init_logit_bias: float | None = None
    #: class default of the clamp on the log scale (CLIP: log(100)).
    max_logit_scale: float = math.log(100.0)

    def __init__(self, group: Group = None) -> None:
        super().__init__()
        self.group = check_group(group)
        cls = type(self)
        self.init_logit_scale = float(cls.init_logit_scale)
        self.init_logit_bias = None if cls.init_logit_bias is None else float(cls.init_logit_bias)
        self.max_logit_scale = float(cls.max_logit_scale)

    def with_group(self, group: Group) -> "Objective":
        """A shallow copy of this objective bound to ``group`` (this one is unchanged).

        >>> from jointspace.objectives import LOCAL, InfoNCE
        >>> obj = InfoNCE()
        >>> obj.with_group(LOCAL).group, obj.group
        (LOCAL, None)
        """
        group = check_group(group)
        new = copy.copy(self)
        for key in ("_parameters", "_buffers", "_modules"):  # don't share the containers
            new.__dict__[key] = self.__dict__[key].copy()
        new._bind(group)
        return new

    def _bind(self, group: Group) -> None:
        """Point this (freshly copied) objective at ``group``; wrappers rebind their parts."""
        self.group = group

    def forward(self, a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


OBJECTIVES: Registry[type[Objective]] = Registry("objective")
