"""The objective interface shared by every contrastive loss."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..registry import Registry


class Objective(nn.Module):
    """A loss over a batch of paired, L2-normalised embeddings.

    ``forward(a, b, logit_scale, logit_bias)`` takes this process's rows
    ``a[i] ↔ b[i]`` (shape ``[B_local, d]``), the *log* of the temperature
    scale and, for objectives that use one, a bias; it returns a scalar loss.
    The learnable ``logit_scale`` / ``logit_bias`` live in the joint model;
    each objective says how to initialise them.
    """

    #: initial value of the log scale (CLIP: log(1/0.07)).
    init_logit_scale: float = math.log(1 / 0.07)
    #: initial bias, or None when the objective uses no bias.
    init_logit_bias: float | None = None
    #: the log scale is clamped to this maximum (CLIP: log(100)).
    max_logit_scale: float = math.log(100.0)

    def forward(self, a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


OBJECTIVES: Registry[type[Objective]] = Registry("objective")
