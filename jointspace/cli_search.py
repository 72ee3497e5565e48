"""Deprecated: the ``index``, ``search`` and ``serve`` verbs are :mod:`jointspace.cli.index`
now. This module re-exports everything that one has (and the old ``add_verbs`` and ``run``
signatures) and warns when imported."""
from __future__ import annotations

import argparse
import warnings
from typing import Any, Callable

from .cli import index as _moved

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
warnings.warn("jointspace.cli_search is deprecated; import jointspace.cli.index instead",
              DeprecationWarning, stacklevel=2)


def add_verbs(verb: Callable[[str, str, str], argparse.ArgumentParser],
              device_options: Any = None, column_options: Any = None) -> None:
    """The verbs' subparsers; the option sets now come from :mod:`jointspace.cli.common`."""
    _moved.add_verbs(verb)


def run(args: argparse.Namespace, columns: dict[str, str] | None = None) -> None:
    """Run ``index`` (with these manifest ``columns``), ``search`` or ``serve``."""
    if args.verb == "index":
        _moved.index_with(args, columns)
    else:
        _moved.RUN[args.verb](args)
