"""Deprecated: the demo moved to :mod:`jointspace.demos.shapes`. This module re-exports
everything that one has and warns when imported."""
from __future__ import annotations

import warnings

from .demos import shapes as _moved

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__") or k == "__all__"})
warnings.warn("jointspace.demo is deprecated; import jointspace.demos.shapes instead",
              DeprecationWarning, stacklevel=2)
