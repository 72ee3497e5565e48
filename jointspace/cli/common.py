"""What several verb groups share: option sets, the manifest column flags (one per
registered modality), reading a file of lines, the version string."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from ..modalities import MODALITIES

#: OpenCLIP's manifest columns, which the column flags' help names for the modalities
#: that have them (its users' CSVs say filepath and caption)
USER_FACING_DEFAULTS = ("image", "text", "caption")
OPENCLIP_COLUMNS = {"image": "filepath", "text": "caption"}

#: ``verb(name, help, example)``: adds a verb's subparser with its example in the epilog
Verb = Callable[[str, str, str], argparse.ArgumentParser]


def bad_row_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-bad-row", choices=["skip", "fail"], default="skip",
                   help="skip: quarantine bad rows with their reason (default); fail: stop at the first")


def device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="where to embed: auto (CUDA when available, else CPU), cpu, cuda, cuda:1 …")
    p.add_argument("--batch-size", type=int, default=256, help="items embedded at once")


def column_options(p: argparse.ArgumentParser) -> None:
    """``--<name>-column NAME`` for every registered modality (its manifest column)."""
    for name in MODALITIES.names():
        m = MODALITIES.get(name)
        holding = f"{name} file paths" if m.is_file else f"the {name}"
        openclip = f"; OpenCLIP's is {OPENCLIP_COLUMNS[name]}" if name in OPENCLIP_COLUMNS else ""
        p.add_argument(f"--{name}-column", dest=f"{name}_column", metavar="NAME",
                       help=f"manifest column holding {holding} (default: {name}{openclip})")


def columns(args: argparse.Namespace) -> dict[str, str] | None:
    """The column flags given: ``{modality: column}``, or None when none was."""
    given = {m: getattr(args, f"{m}_column", None) for m in MODALITIES.names()}
    return {m: c for m, c in given.items() if c} or None


def lines(path: Path) -> list[str]:
    """The non-empty, stripped lines of a UTF-8 text file (a clear error if it is missing)."""
    from ..errors import ConfigError
    if not path.is_file():
        raise ConfigError(f"file not found: {path}")
    found = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not found:
        raise ConfigError(f"{path} has no lines")
    return found


def version() -> str:
    from .. import __version__
    return f"jointspace {__version__}"
