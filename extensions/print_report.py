"""PrintReport: print LogReport entries as a fixed-width table."""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Dict, List, Sequence, TextIO, Union

from tqdm import tqdm
from trainerlib.extension import PRIORITY_READER

from extensions.log_reader import LogEntryTrigger, LogReader
from extensions.log_report import LogReport


_no_bar = contextlib.nullcontext()


def _cell(value: Any, width: int) -> str:
    try:
        return f'{value:<{width}g}  '
    except (TypeError, ValueError):  # not a number: print it as text
        return f'{value!s:<{width}}  '


class PrintReport(LogReader):
    """Prints a header once, then one row per new entry of a :class:`LogReport`.

    Columns are ``max(10, len(key))`` characters wide, separated by two spaces,
    numbers in ``g`` format; a key missing from an entry leaves its cell blank
    (Chainer's layout). Its trigger, a :class:`~extensions.log_reader.LogEntryTrigger`,
    calls it only where its LogReport can have emitted an entry; a call that finds no
    new entry costs one ``len(log)`` comparison.
    On a terminal, rows are written through ``tqdm.external_write_mode``, so a
    progress bar on it is cleared and redrawn below them.

    The number of rows already printed is saved, so a resumed run prints only
    the new rows (and the header again, once, in the new process).

    Args:
        entries: keys of the log entries to print, e.g.
            ``['epoch', 'main/loss', 'validation/main/accuracy', 'elapsed_time']``.
        log_report: name of the registered LogReport (default ``'LogReport'``),
            or a LogReport object that this extension then owns: it calls it
            every iteration and saves its state.
        out: text stream to write to (default ``sys.stdout``).
    """

    priority = PRIORITY_READER
    rank0_only = True

    def __init__(self, entries: Sequence[str], log_report: Union[str, LogReport] = 'LogReport',
                 out: TextIO = sys.stdout) -> None:
        super().__init__(log_report)
        self.trigger = LogEntryTrigger(self)
        self._entries = list(entries)
        self._widths = [max(10, len(key)) for key in self._entries]
        self._out = out
        # a progress bar is cleared and redrawn around the rows only on a terminal
        self._tty = bool(getattr(out, 'isatty', lambda: False)())
        self._printed = 0           # log entries already printed (saved)
        self._header_done = False   # per process: not saved

    @property
    def header(self) -> str:
        """The header line (with its newline)."""
        return '  '.join(f'{key:{w}}' for key, w in zip(self._entries, self._widths)) + '\n'

    def format_row(self, entry: Dict[str, Any]) -> str:
        """One table row (with its newline) for a log entry."""
        return ''.join(_cell(entry[key], w) if key in entry else ' ' * (w + 2)
                       for key, w in zip(self._entries, self._widths)) + '\n'

    def __call__(self, trainer) -> None:
        resolved = self._resolved   # the common case, a registered LogReport, without a call
        log = resolved.log if resolved is not None and not self._owns else self.read_log(trainer)
        if self._header_done and len(log) == self._printed:
            return
        self._print_new(log)

    def finalize(self, trainer=None) -> None:
        """Print the entries emitted after this extension's last call, if any."""
        super().finalize(trainer)
        if trainer is not None and self._header_done:
            log = self.log_report(trainer).log
            if len(log) > self._printed:
                self._print_new(log)

    def _print_new(self, log: List[Dict[str, Any]]) -> None:
        text = '' if self._header_done else self.header
        text += ''.join(self.format_row(entry) for entry in log[self._printed:])
        self._header_done = True
        self._printed = max(self._printed, len(log))
        out = self._out
        with tqdm.external_write_mode(file=out) if self._tty else _no_bar:
            out.write(text)
            if hasattr(out, 'flush'):
                out.flush()

    def state_dict(self) -> dict:
        return {**super().state_dict(), 'printed': self._printed}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._printed = state['printed']
