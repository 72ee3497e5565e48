"""Contrastive objectives, registered by name (``OBJECTIVES.get("infonce")``).

* ``"infonce"`` — :class:`InfoNCE`, CLIP's symmetric cross-entropy.
* ``"sigmoid"`` — :class:`SigmoidLoss`, SigLIP's pairwise sigmoid loss.
* ``"matryoshka"`` — :class:`MatryoshkaObjective`, any of them over nested prefixes.

Both base losses run in row stripes (memory ``O(B·block + B·d)``) and span
every process of an initialised ``torch.distributed`` group by default.
"""
from ..errors import ConfigError
from .base import OBJECTIVES, Objective
from .blocks import choose_block_size
from .distributed import all_gather_with_grad
from .infonce import InfoNCE, blockwise_infonce
from .matryoshka import MatryoshkaObjective, truncate_normalise
from .sigmoid import SigmoidLoss, blockwise_sigmoid


def build_objective(name: str, **kwargs) -> Objective:
    """Build a registered objective by name with its keyword options."""
    cls = OBJECTIVES.get(name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # unknown or out-of-range option
        raise ConfigError(f"objective {name!r}: {e}") from None


__all__ = ["OBJECTIVES", "Objective", "build_objective", "InfoNCE", "SigmoidLoss",
           "MatryoshkaObjective", "truncate_normalise", "blockwise_infonce",
           "blockwise_sigmoid", "choose_block_size", "all_gather_with_grad"]
