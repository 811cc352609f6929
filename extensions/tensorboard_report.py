"""TensorBoardReport: write the LogReport entries (and histograms) as TensorBoard events."""
from __future__ import annotations

import numbers
import os
import time
from typing import Any, Optional, Union

import numpy as np
from trainerlib import triggers
from trainerlib._state import guess_previous, load_into, state_of
from trainerlib.extension import PRIORITY_READER, TriggerLike

from trainerlib.extensions.log_reader import LogReader
from trainerlib.extensions.log_report import LogReport
from trainerlib.extensions.parameter_statistics import Modules, named_parameters


def summary_writer_class() -> type:
    """tensorboardX's ``SummaryWriter``, or a clear ImportError naming the extra to install."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ImportError('TensorBoardReport needs tensorboardX: '
                          'pip install trainerlib[tensorboard]') from None
    return SummaryWriter


class TensorBoardReport(LogReader):
    """Writes each new :class:`LogReport` entry as TensorBoard scalars.

    Every numeric value of an entry is written with ``global_step =
    entry['iteration']`` under its key as tag (``main/loss``,
    ``validation/main/accuracy``, ``epoch``, ``elapsed_time`` …): the same numbers
    as the ``log`` file. ``iteration`` itself is the step, not a tag. The writer
    is flushed after each entry. The per-iteration cost is one ``len(log)``
    comparison (and the histogram trigger, if any). It runs just after the
    ``PRIORITY_READER`` extensions, so it sees the entry of the same iteration
    whatever the registration order.

    The number of entries written is saved, so a resumed run writes only new
    entries, into a new event file of the same directory (TensorBoard reads
    them as one run). Entries written after the last snapshot of a killed run
    are written again on resume (TensorBoard then shows both points).

    Args:
        log_report: name of the registered LogReport (default ``'LogReport'``),
            or a LogReport object that this extension owns (calls every
            iteration and saves).
        logdir: event directory, default ``<trainer.out>/tb``.
        writer: a ``SummaryWriter`` (tensorboardX's, or torch's) to use instead of
            creating one, e.g. shared with an ImageGrid; flushed, never closed.
        histograms: modules (one, a list, or a dict ``name -> module``) whose
            parameters are written as histograms, tagged like ParameterStatistics
            keys (``main/predictor/0/weight/data``; ``…/grad`` for gradients that
            are present: ``StandardUpdater`` clears them after each step).
        histogram_trigger: when to write histograms (each tensor is copied to
            the host then), default ``(1, 'epoch')``.
    """

    trigger = (1, 'iteration')
    priority = PRIORITY_READER - 1
    rank0_only = True

    def __init__(self, log_report: Union[str, LogReport] = 'LogReport',
                 logdir: Optional[str] = None, writer: Any = None,
                 histograms: Optional[Modules] = None,
                 histogram_trigger: TriggerLike = (1, 'epoch')) -> None:
        super().__init__(log_report)
        self._writer_class = summary_writer_class() if writer is None else None
        self._logdir = logdir
        self.writer = writer
        self._owns_writer = writer is None
        self._histograms = histograms
        self._histogram_trigger = triggers.get_trigger(histogram_trigger)
        self._written = 0   # log entries already written (saved)

    def initialize(self, trainer) -> None:
        super().initialize(trainer)
        if self.writer is None:
            logdir = self._logdir or os.path.join(trainer.out, 'tb')
            # tensorboardX names event files by the second and opens them with 'wb':
            # a unique suffix keeps a quick resume from overwriting the previous file
            suffix = f'.{time.time_ns() % 10**9:09d}'
            # after a resume, TensorBoard drops the steps the killed run wrote after
            # its snapshot (they are written again, from the restored state)
            start = trainer.updater.iteration
            purge = {'purge_step': start + 1} if start else {}
            self.writer = self._writer_class(logdir, filename_suffix=suffix, **purge)

    def __call__(self, trainer) -> None:
        if self.writer is None:
            self.initialize(trainer)
        log = self.read_log(trainer)
        if len(log) > self._written:
            self._write_entries(log)
        if self._histograms is not None and self._histogram_trigger(trainer):
            self._write_histograms(trainer)

    def _write_entries(self, log: list) -> None:
        writer = self.writer
        for entry in log[self._written:]:
            step = entry['iteration']
            for key, value in entry.items():
                if key != 'iteration' and isinstance(value, numbers.Real) \
                        and not isinstance(value, bool):
                    writer.add_scalar(key, value, step)
        self._written = len(log)
        writer.flush()

    def _write_histograms(self, trainer) -> None:
        step = trainer.updater.iteration
        for path, param in named_parameters(self._histograms, trainer):
            for attr, t in (('data', param), ('grad', param.grad)):
                if t is None or not t.numel():
                    continue
                values = t.detach().float().cpu().numpy()
                if np.isfinite(values).all():   # NaN: FailOnNonNumber's job, not a crash here
                    self.writer.add_histogram(f'{path}/{attr}', values, step)
        self.writer.flush()

    def finalize(self, trainer=None) -> None:
        """Write the entries emitted after the last call; close the writer if created here."""
        super().finalize(trainer)
        if self.writer is None:
            return
        if self._resolved is not None and len(self._resolved.log) > self._written:
            self._write_entries(self._resolved.log)
        if self._owns_writer:
            self.writer.close()
            self.writer = None
        else:
            self.writer.flush()

    def guess_previous(self) -> None:
        """Its trigger guesses its previous position (the snapshot being resumed has
        no state for this extension: see IntervalTrigger.guess_previous)."""
        guess_previous(self._histogram_trigger)

    def state_dict(self) -> dict:
        return {**super().state_dict(), 'written': self._written,
                'histogram_trigger': state_of(self._histogram_trigger)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._written = state['written']
        load_into(self._histogram_trigger, state['histogram_trigger'])
