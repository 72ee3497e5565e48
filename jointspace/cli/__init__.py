"""The ``jointspace`` command: one verb per library call, no logic of its own.

One module per verb group (:mod:`.data`, :mod:`.train`, :mod:`.eval` with ``compare``,
:mod:`.models` with ``import`` and ``towers``, :mod:`.index` with ``search`` and
``serve``, :mod:`.embed`, :mod:`.demo`), each with its ``EXAMPLES``, an
``add_verbs(verb)`` that adds its subparsers and ``RUN``, verb → handler; the options
several share (the manifest column flags, one per registered modality) are in
:mod:`.common`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import data, demo, embed, index, models, train
from . import eval as eval_verbs
from .common import version

#: the verb groups, in the order ``jointspace --help`` lists their verbs
GROUPS = (data, train, eval_verbs, models, index, embed, demo)
#: every verb's example, shown under its ``--help``
EXAMPLES = {name: example for group in GROUPS for name, example in group.EXAMPLES.items()}
#: verb → the function that runs it
RUN = {name: handler for group in GROUPS for name, handler in group.RUN.items()}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jointspace", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=version())
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_: str, example: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_,
                              epilog=f"example:\n  {example or EXAMPLES[name]}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    for group in GROUPS:
        group.add_verbs(verb)
    return p


def run(args: argparse.Namespace) -> None:
    RUN[args.verb](args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ..errors import JointspaceError
    from ..progress import setup_logging
    setup_logging()
    try:
        run(args)
    except JointspaceError as e:
        print(f"jointspace {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jointspace {args.verb}: interrupted", file=sys.stderr)
        return 130
    return 0
