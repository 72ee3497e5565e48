"""Contrastive objectives, registered by name (``OBJECTIVES.get("infonce")``).

* ``"infonce"`` — :class:`InfoNCE`, CLIP's symmetric cross-entropy.
* ``"sigmoid"`` — :class:`SigmoidLoss`, SigLIP's pairwise sigmoid loss.

:class:`MatryoshkaObjective` sums any of them over nested prefixes; it is not a
registered name — configs reach it through ``model.matryoshka_dims``.

Both base losses run in row stripes (memory ``O(B·block + B·d)``). Every
objective takes ``group=``: ``None`` spans the default process group when
``torch.distributed`` is initialised (else this process alone), :data:`LOCAL`
uses this process's rows only with no communication, or pass a
``ProcessGroup``; ``objective.with_group(group)`` returns a copy bound to
another group.
"""
from ..errors import ConfigError
from .base import OBJECTIVES, Objective
from .blocks import choose_block_size
from .distributed import LOCAL, all_gather_with_grad
from .infonce import InfoNCE, blockwise_infonce
from .matryoshka import MatryoshkaObjective, truncate_normalise
from .sigmoid import SigmoidLoss, blockwise_sigmoid

#: names that are deliberately not objectives, with where to go instead
_NOT_OBJECTIVES = {
    "matryoshka": "nested sizes are not an objective: keep a base objective here and set "
                  "model.matryoshka_dims (and optionally model.matryoshka_weights)",
}


def build_objective(name: str, **kwargs) -> Objective:
    """Build a registered objective by name with its keyword options."""
    try:
        cls = OBJECTIVES.get(name)
    except ConfigError as e:
        hint = _NOT_OBJECTIVES.get(name)
        if hint is None:
            raise
        raise ConfigError(f"{e}; {hint}") from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # unknown or out-of-range option
        raise ConfigError(f"objective {name!r}: {e}") from None


__all__ = ["OBJECTIVES", "Objective", "build_objective", "InfoNCE", "SigmoidLoss",
           "MatryoshkaObjective", "truncate_normalise", "blockwise_infonce",
           "blockwise_sigmoid", "choose_block_size", "all_gather_with_grad", "LOCAL"]
