"""LogReader: the base of extensions that consume a LogReport's entries."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from trainerlib.extension import Extension

from trainerlib.extensions.log_report import LogReport


class LogEntryTrigger:
    """Fires where a reader's LogReport can have a new entry: at the iterations where
    the LogReport can emit one, and at the iteration after each (a reader registered
    before its LogReport sees the entry then, as when it is asked every iteration).

    The Trainer asks it only at those iterations (``next_fire``), so a reader such as
    :class:`~extensions.PrintReport` is not called in between. When the LogReport's
    trigger cannot tell its iterations (``'epoch'`` units) or the reader owns its
    LogReport (which it must feed every iteration), it fires at every iteration.
    """

    def __init__(self, reader: 'LogReader') -> None:
        self._reader = reader

    def __call__(self, trainer) -> bool:
        return True

    def next_fire(self, iteration: int) -> Optional[float]:
        """The next iteration to ask after ``iteration``; None: ask at every iteration."""
        reader = self._reader
        log_report = reader._resolved
        if log_report is None or reader._owns:
            return None
        due = log_report.next_entry(iteration - 1)   # the first emission at or after iteration
        if due is None:
            return None
        return iteration + 1 if due == iteration else due


class LogReader(Extension):
    """Finds (or owns) a :class:`LogReport` and hands its entries to a subclass.

    Args:
        log_report: the registered name of a LogReport (default ``'LogReport'``),
            or a LogReport object that this extension then owns: it feeds it the
            observation every iteration and saves its state.
    """

    def __init__(self, log_report: Union[str, LogReport] = 'LogReport') -> None:
        if not isinstance(log_report, (str, LogReport)):
            raise TypeError('log_report must be the name of a registered LogReport or a '
                            f'LogReport, got {type(log_report).__name__}')
        self._log_report = log_report
        self._owns = not isinstance(log_report, str)
        self._resolved: Optional[LogReport] = None if isinstance(log_report, str) else log_report

    @property
    def owned_log_report(self) -> Optional[LogReport]:
        """The LogReport this extension owns (given as an object), else None."""
        return self._log_report if self._owns else None

    def log_report(self, trainer) -> LogReport:
        """The LogReport read by this extension."""
        if self._resolved is None:
            found = trainer.get_extension(self._log_report)
            if not isinstance(found, LogReport):
                raise TypeError(f'{type(self).__name__}: the extension {self._log_report!r} is '
                                f'a {type(found).__name__}, not a LogReport')
            self._resolved = found
        return self._resolved

    def read_log(self, trainer) -> List[Dict[str, Any]]:
        """The log so far (feeding an owned LogReport this iteration's observation first)."""
        log_report = self._resolved or self.log_report(trainer)   # runs every iteration
        if self._owns:
            log_report(trainer)
        return log_report.log

    def initialize(self, trainer) -> None:
        if self._owns:
            self._log_report.initialize(trainer)
        else:
            self.log_report(trainer)   # (its LogEntryTrigger needs it from the start)

    def finalize(self, trainer=None) -> None:
        """Finalize an owned LogReport (its file is complete afterwards)."""
        if self._owns:
            self._log_report.finalize(trainer)

    def state_dict(self) -> dict:
        return {'log_report': self._log_report.state_dict()} if self._owns else {}

    def load_state_dict(self, state: dict) -> None:
        if 'log_report' in state and self._owns:
            self._log_report.load_state_dict(state['log_report'])
