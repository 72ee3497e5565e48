"""Progress bars and logging: the only way the library talks to a person.

Bars go to stderr and are disabled when ``JOINTSPACE_QUIET=1`` (tests) so that
CI logs stay readable; log lines use the ``jointspace`` logger.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

logger = logging.getLogger("jointspace")


def quiet() -> bool:
    return os.environ.get("JOINTSPACE_QUIET", "") not in ("", "0")


def progress(iterable: Iterable[T] | None = None, *, desc: str, total: int | None = None,
             unit: str = "it", leave: bool = True, disable: bool = False) -> Iterator[T] | tqdm:
    """A tqdm bar on stderr with jointspace's defaults; silent when quiet."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, file=sys.stderr,
                disable=disable or quiet(), dynamic_ncols=True, mininterval=0.5)


def setup_logging(level: int = logging.INFO) -> None:
    """Plain ``HH:MM:SS message`` lines on stderr (called by the CLI, not on import)."""
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
