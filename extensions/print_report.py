"""PrintReport: print LogReport entries as a fixed-width table."""
from __future__ import annotations

import contextlib
import difflib
import sys
import warnings
from typing import Any, Dict, List, Sequence, TextIO, Union

from tqdm import tqdm
from trainerlib.extension import PRIORITY_READER

from trainerlib.extensions.log_reader import LogEntryTrigger, LogReader
from trainerlib.extensions.log_report import LogReport


_no_bar = contextlib.nullcontext()
_ALWAYS_LOGGED = ('epoch', 'iteration', 'elapsed_time')   # in every LogReport entry


def _never_logged(entries: Sequence[str], log: List[Dict[str, Any]]) -> str:
    """A one-line message naming the keys of ``entries`` that no entry of ``log`` has
    (with close matches among the logged keys), or '' when every key appeared."""
    seen = set(_ALWAYS_LOGGED)
    for entry in log:
        seen.update(entry)
    missing = [key for key in entries if key not in seen]
    if not missing:
        return ''
    logged = sorted(seen)
    names = []
    for key in missing:
        close = difflib.get_close_matches(key, logged, n=1)
        names.append(f'{key!r} (did you mean {close[0]!r}?)' if close else repr(key))
    columns = 'its column stays' if len(missing) == 1 else 'their columns stay'
    return (f'PrintReport: {", ".join(names)} never appeared in the {len(log)} log entries, '
            f'so {columns} blank; the logged keys are {", ".join(map(repr, logged))}. '
            'Check the spelling and that something reports the value (the LogReport\'s '
            'keys=, an Evaluator for validation/...)')


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

    When training ends, a key of ``entries`` that no log entry has (a typo such as
    ``'validation/main/acc'``) is named in one warning, with the keys that were logged
    (read from the log, so a resumed run counts the entries of the run before too).

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
        # the usual row, every cell a number: one str.format call
        self._number_row = ''.join(f'{{:<{w}g}}  ' for w in self._widths) + '\n'
        self._out = out
        # a progress bar is cleared and redrawn around the rows only on a terminal
        self._tty = bool(getattr(out, 'isatty', lambda: False)())
        self._printed = 0           # log entries already printed (saved)
        self._header_done = False   # per process: not saved
        self._warned = False        # per process: keys never logged were checked

    @property
    def header(self) -> str:
        """The header line (with its newline)."""
        return '  '.join(f'{key:{w}}' for key, w in zip(self._entries, self._widths)) + '\n'

    def format_row(self, entry: Dict[str, Any]) -> str:
        """One table row (with its newline) for a log entry."""
        try:
            return self._number_row.format(*[entry[key] for key in self._entries])
        except (KeyError, TypeError, ValueError):   # a cell left blank, or text
            pass
        return ''.join(_cell(entry[key], w) if key in entry else ' ' * (w + 2)
                       for key, w in zip(self._entries, self._widths)) + '\n'

    def __call__(self, trainer) -> None:
        resolved = self._resolved   # the common case, a registered LogReport, without a call
        log = resolved.log if resolved is not None and not self._owns else self.read_log(trainer)
        if self._header_done and len(log) == self._printed:
            return
        self._print_new(log)

    def finalize(self, trainer=None) -> None:
        """Print the entries emitted after this extension's last call, if any, then warn
        about requested keys that no entry had."""
        super().finalize(trainer)
        if trainer is not None and self._header_done:
            log = self.log_report(trainer).log
            if len(log) > self._printed:
                self._print_new(log)
        log = None if trainer is None or self._resolved is None else self._resolved.log
        if log and not self._warned:   # only once an entry was emitted
            self._warned = True
            message = _never_logged(self._entries, log)
            if message:
                warnings.warn(message, UserWarning, stacklevel=2)

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
