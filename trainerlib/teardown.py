"""How a run ends: the loop's exception message, ``on_error`` hooks, finalization."""
from __future__ import annotations

import sys
import traceback
from typing import Any, List

from trainerlib.errors import TrainerlibError
from trainerlib.extension import Extension
from trainerlib.extension_entry import Entry


def show_loop_exception(exc: BaseException) -> None:
    """Print Chainer's message for an exception raised by the training loop, before the
    extensions are finalized (a finalize that hangs would otherwise hide it).

    User errors (:class:`~trainerlib.errors.TrainerlibError`) are not printed: their
    one-line message is what command-line entry points print.
    """
    if not isinstance(exc, Exception) or isinstance(exc, TrainerlibError):
        return
    f = sys.stderr
    f.write(f'Exception in main training loop: {exc}\n')
    f.write('Traceback (most recent call last):\n')
    traceback.print_tb(exc.__traceback__, file=f)
    f.write('Will finalize trainer extensions and updater before reraising the exception.\n')


def call_on_error(trainer: Any, entries: List[Entry], exc: BaseException) -> None:
    """Every extension's ``on_error``; their own errors are printed, never raised."""
    tb = exc.__traceback__
    comm = trainer.comm
    if comm.size > 1:
        # a rank may fail alone (its peers then fail in their next collective):
        # whether all failed at one point cannot be known, so no extension that
        # calls collectives, and no snapshot_on_error (a set written by some
        # ranks would be a snapshot of a half-done iteration), is asked
        skipped = [e for e in entries if getattr(e.extension, 'collective', False)
                   or getattr(e.extension, 'snapshot_on_error', False)]
        named = [e for e in skipped                     # those that do something there
                 if getattr(type(e.extension), 'on_error', None) is not Extension.on_error]
        if named:
            sys.stderr.write(
                f'trainerlib: rank {comm.rank} of {comm.size} failed; on_error '
                f'of {", ".join(repr(e.extension.name) for e in named)} skipped '
                '(collective, or snapshot_on_error: not written under several ranks)\n')
        entries = [e for e in entries if e not in skipped]
    for entry in entries:
        try:
            entry.extension.on_error(trainer, exc, tb)
        except Exception:
            sys.stderr.write(f'Error in on_error of extension {entry.extension.name!r} '
                             '(ignored, the original error follows):\n')
            traceback.print_exc()


def finalize_all(trainer: Any, entries: List[Entry], failed: bool) -> None:
    """Finalize every extension and the updater, even when one of them fails.

    The first error is raised (unless training already failed); the others,
    which cannot be raised too, are printed with their tracebacks.
    """
    errors = []
    calls = [(f'extension {e.extension.name!r}', e.finalize) for e in entries]
    for what, fn in calls + [('the updater', lambda _: trainer.updater.finalize())]:
        try:
            fn(trainer)
        except Exception as e:  # finalize the others, then report
            errors.append((what, e))
    for what, error in errors[0 if failed else 1:]:
        sys.stderr.write(f'Error in finalize of {what}:\n')
        traceback.print_exception(type(error), error, error.__traceback__)
    if errors and not failed:
        raise errors[0][1]
