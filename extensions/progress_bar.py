"""ProgressBar: a tqdm bar of the training progress."""
from __future__ import annotations

import math
import sys
from typing import Any, Optional, TextIO, Tuple, Union

from tqdm import tqdm
from trainerlib.extension import PRIORITY_READER, Extension


def batches_per_epoch(iterator: Any) -> Optional[float]:
    """Batches in one epoch of ``iterator`` (possibly fractional), or None if unknown.

    Known for iterators with ``dataset`` and ``batch_size`` (``SerialIterator``; a
    sharded one advances by its ``global_batch_size``) or a sized ``loader``
    (``DataLoaderIterator``).
    """
    loader = getattr(iterator, 'loader', None)
    try:
        if loader is not None:
            return float(len(loader))
        batch_size = getattr(iterator, 'global_batch_size', None) or getattr(
            iterator, 'batch_size', None)
        return len(iterator.dataset) / batch_size if batch_size else None
    except (AttributeError, TypeError):
        return None


class _LineWriter:
    """File adapter for non-terminals: each tqdm redraw becomes one plain line."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> None:
        text = text.strip('\r').rstrip()  # tqdm redraws are '\r' + line + padding
        if text:
            self._out.write(text + '\n')

    def flush(self) -> None:
        getattr(self._out, 'flush', lambda: None)()


class ProgressBar(Extension):
    """Shows a tqdm progress bar: iteration, epoch, iterations per second and ETA.

    The bar is redrawn every ``update_interval`` iterations, and at most every
    ``mininterval`` seconds. Its trigger is ``(update_interval, 'iteration')``, so
    the Trainer does not call it in between; with a finer trigger, a call between
    redraws costs one integer comparison.
    On a stream that is not a terminal (a log file, ``io.StringIO``), each
    redraw is written as a plain line instead of being overwritten with ``\\r``.
    The bar starts at the current iteration, so a resumed run continues it,
    and it is closed in :meth:`finalize`.

    Args:
        training_length: ``(length, unit)`` of the whole training; None (default)
            asks the stop trigger's ``get_training_length()``. An ``'epoch'``
            length is converted to iterations with the main iterator's epoch
            size when known, else the bar counts epochs.
        update_interval: iterations between redraws (default 100).
        bar_length: width of the bar in characters (default 50).
        out: text stream to write to (default ``sys.stdout``).
        mininterval: minimum seconds between redraws; None (default) means
            0.1 on a terminal and 10 otherwise.
    """

    priority = PRIORITY_READER
    rank0_only = True

    def __init__(self, training_length: Optional[Tuple[Union[int, float], str]] = None,
                 update_interval: int = 100, bar_length: int = 50, out: TextIO = sys.stdout,
                 *, mininterval: Optional[float] = None) -> None:
        if update_interval < 1:
            raise ValueError(f'update_interval must be >= 1 iteration, got {update_interval!r}')
        self._training_length = training_length
        self._update_interval = int(update_interval)
        self.trigger = (self._update_interval, 'iteration')
        self._bar_length = bar_length
        self._out = out
        self._tty = bool(getattr(out, 'isatty', lambda: False)())
        if mininterval is None:
            mininterval = 0.1 if self._tty else 10.0
        self._mininterval = mininterval
        self._bar: Optional[tqdm] = None
        self._count_epochs = False
        self._next = 0  # iteration of the next redraw

    def initialize(self, trainer) -> None:
        self._open(trainer)

    def __call__(self, trainer) -> None:
        if trainer.updater.iteration >= self._next:
            self._show(trainer)

    def _open(self, trainer) -> tqdm:
        updater = trainer.updater
        length = self._training_length
        if length is None:
            length = getattr(trainer.stop_trigger, 'get_training_length', lambda: None)()
        total: Optional[float] = None
        if length is not None:
            total, length_unit = length
            if length_unit == 'epoch':
                per_epoch = batches_per_epoch(updater.get_iterator('main'))
                self._count_epochs = per_epoch is None
                if per_epoch is not None:
                    total = math.ceil(round(total * per_epoch, 6))
        if self._count_epochs:
            counter, unit = '{n:.2f}/{total_fmt} epochs', 'epoch'
        else:
            counter, unit = '{n_fmt}/{total_fmt} iter', 'it'
        bar_format = None if total is None else (
            f'{{l_bar}}{{bar:{self._bar_length}}}| {counter} '
            '[{elapsed}<{remaining}, {rate_fmt}{postfix}]')
        self._bar = tqdm(total=total, initial=self._position(updater), unit=unit,
                         file=self._out if self._tty else _LineWriter(self._out),
                         bar_format=bar_format, mininterval=self._mininterval, miniters=0,
                         dynamic_ncols=False, postfix=self._postfix(updater))
        self._schedule(updater.iteration)
        return self._bar

    def _schedule(self, iteration: int) -> None:
        self._next = (iteration // self._update_interval + 1) * self._update_interval

    def _position(self, updater) -> Union[int, float]:
        return updater.epoch_detail if self._count_epochs else updater.iteration

    def _postfix(self, updater) -> str:
        if self._count_epochs:
            return f'iteration={updater.iteration}'
        return f'epoch={updater.epoch_detail:.2f}'

    def _show(self, trainer) -> None:
        updater = trainer.updater
        bar = self._bar if self._bar is not None else self._open(trainer)
        self._schedule(updater.iteration)
        bar.set_postfix_str(self._postfix(updater), refresh=False)
        bar.update(self._position(updater) - bar.n)  # redraws unless within mininterval

    def finalize(self, trainer=None) -> None:
        """Draw the final state once and close the bar."""
        bar = self._bar
        if bar is None:
            return
        if trainer is not None:
            bar.set_postfix_str(self._postfix(trainer.updater), refresh=False)
            bar.n = self._position(trainer.updater)
        if not self._tty and bar.last_print_n == bar.n:
            bar.leave = False  # the final line is already written: do not repeat it
        bar.close()
        self._bar = None
