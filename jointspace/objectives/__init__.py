"""Contrastive objectives, registered by name (``OBJECTIVES.get("infonce")``)."""
from .base import OBJECTIVES, Objective
from . import infonce  # noqa: F401  (registers "infonce")


def build_objective(name: str, **kwargs) -> Objective:
    """Build a registered objective by name with its keyword options."""
    return OBJECTIVES.get(name)(**kwargs)


__all__ = ["OBJECTIVES", "Objective", "build_objective"]
