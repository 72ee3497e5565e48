"""Deprecated: the ``embed`` verb is :mod:`jointspace.cli.embed` now. This module
re-exports everything that one has (and the old ``EXAMPLE``, ``add_verb`` and ``run``)
and warns when imported."""
from __future__ import annotations

import warnings

from .cli import embed as _moved

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
EXAMPLE = _moved.EXAMPLES["embed"]
add_verb = _moved.add_verbs
run = _moved.run_embed
warnings.warn("jointspace.cli_embed is deprecated; import jointspace.cli.embed instead",
              DeprecationWarning, stacklevel=2)
