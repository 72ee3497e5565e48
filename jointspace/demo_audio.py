"""Deprecated: the audio demo moved to :mod:`jointspace.demos.audio`. This module
re-exports everything that one has and warns when imported."""
from __future__ import annotations

import warnings

from .demos import audio as _moved

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__") or k == "__all__"})
warnings.warn("jointspace.demo_audio is deprecated; import jointspace.demos.audio instead",
              DeprecationWarning, stacklevel=2)
