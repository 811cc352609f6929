"""Command-line entry points: user errors become one line and exit status 2."""
from __future__ import annotations

import sys
from typing import Callable

from trainerlib.errors import TrainerlibError

USER_ERRORS = (TrainerlibError, OSError, ImportError)
"""Errors caused by input (config, data, files, missing optional packages)."""
EXIT_USER_ERROR = 2


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_cli(run: Callable[[], int], debug: bool = False) -> int:
    """Call ``run()``; a user error prints ``error: …`` to stderr and returns 2.

    With ``debug`` the error propagates with its traceback instead.
    """
    try:
        return run()
    except USER_ERRORS as e:
        if debug:
            raise
        print(f'error: {first_line(e)}', file=sys.stderr)
        return EXIT_USER_ERROR
