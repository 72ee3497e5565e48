"""``python -m jointspace.cli …`` (how ``torchrun`` starts the command): the ``jointspace`` command."""
import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
