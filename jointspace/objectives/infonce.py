"""Symmetric InfoNCE (CLIP / ALIGN)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import OBJECTIVES, Objective


@OBJECTIVES.register("infonce")
class InfoNCE(Objective):
    """Symmetric cross-entropy over the scaled cosine-similarity matrix.

    Expects ``a``, ``b``: ``[B, d]`` unit vectors where row ``i`` of each is a
    positive pair; ``logit_scale`` is the log temperature scale, clamped to
    ``max_logit_scale``. Returns the mean of the a→b and b→a losses.

    Reference: Radford et al., "Learning Transferable Visual Models From
    Natural Language Supervision" (CLIP), 2021.

    >>> a = F.normalize(torch.randn(8, 16), dim=-1); b = F.normalize(torch.randn(8, 16), dim=-1)
    >>> float(InfoNCE()(a, b, torch.tensor(2.0))) > 0
    True
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, a, b, logit_scale, logit_bias=None):
        scale = logit_scale.clamp(max=self.max_logit_scale).exp()
        logits = scale * a @ b.T
        labels = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
                      + F.cross_entropy(logits.T, labels, label_smoothing=self.label_smoothing))
