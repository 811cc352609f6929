"""``python -m trainerlib …``: the ``trainerlib`` command (see :mod:`trainerlib.commands`)."""
import sys

from trainerlib.commands.main import main

if __name__ == '__main__':
    sys.exit(main())
