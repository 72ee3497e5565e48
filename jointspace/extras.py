"""Optional dependencies: which extra of ``pip install 'jointspace[...]'`` adds what.

The core package trains, evaluates (``results.json``) and embeds (one process); an
extra adds a feature's packages. A feature imports them lazily, through
:func:`require`, so ``import jointspace`` never needs them and a missing one is
reported as the ``pip install`` that adds it:

>>> require("json", "report").__name__
'json'
>>> require("no_such_module_here", "report", "report.html")
Traceback (most recent call last):
  ...
jointspace.extras.MissingExtraError: no_such_module_here is not installed (report.html needs it): pip install 'jointspace[report]'
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import JointspaceError

#: the extras named after the modality they read (tests/test_plugins.py: a modality's name
#: in code outside its plug-in is declared here): ``pip install 'jointspace[video]'``
USER_FACING_DEFAULTS = ("video",)

#: extra → (the feature it adds, the modules that feature imports); pyproject.toml's
#: [project.optional-dependencies] installs them (tests/test_extras.py checks the two agree)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ray": ("jointspace embed on Ray", ("ray", "ray.data")),  # a pool of actors, a cluster
    "index": ("the faiss store", ("faiss",)),  # a collection's default vector store
    "serve": ("jointspace serve", ("fastapi", "fastapi_offline", "python_multipart", "uvicorn")),
    "report": ("eval's report.html", ("matplotlib",)),  # its plots
    "video": ("reading video files", ("av",)),  # PyAV: FFmpeg in its wheel
}


class MissingExtraError(JointspaceError, ImportError):
    """A feature's optional package is not installed; the message names the extra that adds it."""

    def __init__(self, message: str, *, extra: str, module: str) -> None:
        super().__init__(message)
        self.extra, self.module = extra, module


def install_hint(extra: str) -> str:
    return f"pip install 'jointspace[{extra}]'"


def _absent(error: ModuleNotFoundError, module: str) -> bool:
    """Whether ``error`` says ``module`` itself (or its package) is not installed."""
    return error.name is not None and (module == error.name or module.startswith(error.name + "."))


def installed(module: str) -> bool:
    """Whether ``module`` imports (it is imported: ask only for what will be used anyway).
    A module that is there but lacks one of its own dependencies raises, as it is.

    >>> installed("json"), installed("no_such_module_here")
    (True, False)
    """
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if not _absent(e, module):
            raise
        return False
    return True


def require(module: str, extra: str, feature: str | None = None,
            instead: str | None = None) -> ModuleType:
    """``module``, imported; :class:`MissingExtraError` naming ``pip install
    'jointspace[extra]'`` if it (or a package it needs) is not installed. ``feature`` says
    what needs it (default: the extra's description), ``instead`` a way to do without."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; the extras are {', '.join(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:  # not installed; other ImportErrors (a broken build) as they are
        what = e.name if _absent(e, module) else f"{e.name or '?'} (needed by {module})"
        raise MissingExtraError(f"{what} is not installed ({feature or EXTRAS[extra][0]} needs it): "
                                f"{install_hint(extra)}" + (f", or {instead}" if instead else ""),
                                extra=extra, module=module) from e


__all__ = ["EXTRAS", "MissingExtraError", "install_hint", "installed", "require"]
