"""LogReport: average the observations and write Chainer's JSON ``log``."""
from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from json.encoder import encode_basestring_ascii
from typing import Any, Callable, Dict, Iterable, List, Optional

from trainerlib import triggers
from trainerlib._state import guess_previous, load_into, state_of
from trainerlib.distributed.context import comm_of
from trainerlib.extension import PRIORITY_READER, Extension
from trainerlib.serialization import remove_partial_files
from trainerlib.strict_json import strict_record
from trainerlib.summary import DictSummary
from trainerlib.summary_reduce import allreduce_dict_summary, reshard_summary_state
from trainerlib.text_writer import BackgroundTextWriter
from trainerlib.triggers.schedule import TriggerSchedule, next_fire


_JSON_SCALARS = {float: float.__repr__, int: int.__repr__, str: encode_basestring_ascii,
                 bool: lambda v: 'true' if v else 'false', type(None): lambda v: 'null'}


def _encode_flat(entry: Dict[str, Any]) -> Optional[str]:
    """:func:`_encode` of the usual entry (string keys; finite floats, ints, strings,
    booleans and None), as the json module writes each item, without its pure-Python
    indenting encoder; None for any other entry."""
    items = []
    for key, value in entry.items():
        write = _JSON_SCALARS.get(type(value))
        if write is None or type(key) is not str or (type(value) is float
                                                      and not math.isfinite(value)):
            return None
        items.append(f'        {encode_basestring_ascii(key)}: {write(value)}')
    return '    {\n' + ',\n'.join(items) + '\n    }' if items else None


def _encode(entry: Dict[str, Any]) -> str:
    """The entry as ``json.dumps(log, indent=4)`` writes it inside the list (indented
    by four more spaces; such JSON has no blank line), as strict JSON: a NaN or
    infinite value is written ``null`` and named in the entry's ``non_finite`` field
    (``{"main/loss": "nan"}``)."""
    flat = _encode_flat(entry)
    if flat is not None:
        return flat
    return '    ' + json.dumps(strict_record(entry, sep='/'), indent=4,
                               allow_nan=False).replace('\n', '\n    ')


def _log_reports(trainer) -> List[Any]:
    """``(description, LogReport)`` for every LogReport of the trainer, in registration
    order: the registered ones and those owned by a reader (e.g. a PrintReport)."""
    extensions = getattr(trainer, 'extensions', None)
    found = []
    for name, ext in (extensions.items() if isinstance(extensions, dict) else ()):
        if isinstance(ext, LogReport):
            found.append((f'LogReport {name!r}', ext))
        else:
            owned = getattr(ext, 'owned_log_report', None)
            if isinstance(owned, LogReport):
                found.append((f'the LogReport owned by {name!r}', owned))
    return found


class LogReport(Extension):
    """Accumulates every observation and emits a log entry on its own trigger.

    Each entry holds the (weighted) means of the reported values since the last
    entry, plus ``epoch``, ``iteration`` and ``elapsed_time``. The whole list is
    rewritten atomically to ``out/<filename>`` as JSON (the format Chainer and
    ChainerUI read) by a background thread, at most every ``write_interval``
    seconds (an entry due sooner is written with the next one, or when training
    ends); the file is complete after training. Reported tensors are converted
    to floats only here, once per entry. The log and the partial summary are
    saved in snapshots.

    Data-parallel (``trainer.comm`` of several ranks): it runs on every rank
    (``collective = True``) and each rank accumulates its own observations (no
    collective per iteration); at an entry the additive sums of all keys travel in one
    packed float64 all-reduce (after a small header agreeing on the key set, unless
    ``keys`` are given), so each entry holds the exact weighted means over every
    rank's values, ``elapsed_time`` is rank 0's, and every rank keeps the identical
    ``log``. Only rank 0 writes the file.

    Args:
        keys: keys to log (None: every scalar reported).
        trigger: when to emit an entry, default ``(1, 'epoch')``.
        postprocess: ``fn(entry_dict)`` called before an entry is stored.
        filename: file name in ``trainer.out`` (None: keep in memory only).
        write_interval: minimum seconds between two rewrites of the file
            (default 1.0; 0 writes it at every entry).
        log_name: Chainer's alias of ``filename``.

    Attributes:
        log: the entries emitted so far (a list of dicts; the same list object for the
            life of the LogReport, restored in place by :meth:`load_state_dict`).
    """

    trigger = (1, 'iteration')
    priority = PRIORITY_READER
    rank0_only = True   # its file is written by rank 0 only ...
    collective = True   # ... but it runs on every rank: its emits are collectives

    def __init__(self, keys: Optional[Iterable[str]] = None, trigger=(1, 'epoch'),
                 postprocess: Optional[Callable[[Dict[str, Any]], None]] = None,
                 filename: Optional[str] = 'log', *, write_interval: float = 1.0,
                 log_name: Optional[str] = None) -> None:
        if log_name is not None:   # Chainer's older spelling of filename
            if filename != 'log':
                raise ValueError('LogReport: give filename= or its alias log_name=, not both')
            filename = log_name
        if not write_interval >= 0:
            raise ValueError(f'write_interval must be >= 0 seconds, got {write_interval!r}')
        self._keys = None if keys is None else list(keys)
        self._trigger = triggers.get_trigger(trigger)
        self._schedule = TriggerSchedule(self._trigger)   # asks it only when it can fire
        self._postprocess = postprocess
        self._filename = filename
        self.log: List[Dict[str, Any]] = []
        self._encoded: List[str] = []   # JSON text of each entry, encoded once
        self._summary = DictSummary()
        self._writer = BackgroundTextWriter()
        self._write_interval = write_interval
        self._written_at = -math.inf   # time.monotonic() of the last rewrite

    def __call__(self, trainer) -> None:
        observation, keys = trainer.observation, self._keys
        self._summary.add(observation if keys is None else
                          {k: observation[k] for k in keys if k in observation})
        iteration = trainer.updater.iteration
        if iteration >= self._schedule.due and self._schedule(trainer, iteration):
            self._emit(trainer)

    def next_entry(self, iteration: int) -> Optional[float]:
        """The first iteration after ``iteration`` at which an entry can be emitted
        (``math.inf``: never), or None when its trigger cannot tell (``'epoch'`` units)."""
        return next_fire(self._trigger, iteration)

    def initialize(self, trainer) -> None:
        self._schedule.start(trainer.updater.iteration)
        # a process killed while writing the log left these (rank 0 writes it: it cleans)
        if self._filename is not None and comm_of(trainer).rank == 0:
            remove_partial_files(trainer.out, self._filename.__eq__)
            self._warn_if_file_is_shared(trainer)

    def _warn_if_file_is_shared(self, trainer) -> None:
        """Warn when another LogReport of the trainer, registered before this one, writes
        the same file (the later one warns, so each clash warns once)."""
        reports = _log_reports(trainer)
        mine = next((i for i, (_, r) in enumerate(reports) if r is self), None)
        first = next((name for name, r in reports[:mine or 0]
                      if r is not self and r._filename == self._filename), None)
        if first is None:
            return
        path = os.path.join(trainer.out, self._filename)
        warnings.warn(f'{reports[mine][0]} and {first} both write '
                      f'{path!r}: each rewrite replaces the other\'s entries, so one log is '
                      'lost; give one of them another filename= (or filename=None to keep its '
                      'log in memory only)', UserWarning, stacklevel=2)

    def _emit(self, trainer) -> None:
        comm = comm_of(trainer)
        summary, elapsed_time = self._summary, None
        if comm.size > 1:   # every rank: the global sums, and rank 0's clock
            summary, (elapsed_time,) = allreduce_dict_summary(   # keys given: no header
                summary, comm, keys=self._keys,
                extras=(trainer.elapsed_time if comm.rank == 0 else 0.0,))
        entry: Dict[str, Any] = {k: float(v) for k, v in summary.compute_mean().items()}
        updater = trainer.updater
        entry['epoch'] = updater.epoch
        entry['iteration'] = updater.iteration
        entry['elapsed_time'] = trainer.elapsed_time if elapsed_time is None else elapsed_time
        if self._postprocess is not None:
            self._postprocess(entry)
        self.log.append(entry)
        self._summary = DictSummary()
        if self._filename is not None and comm.rank == 0 and \
                time.monotonic() - self._written_at >= self._write_interval:
            self._write(trainer.out)

    def _write(self, out: str) -> None:
        """Queue the whole log for the writer thread (finalize waits for it)."""
        self._written_at = time.monotonic()
        encoded = self._encoded   # each entry is encoded once
        encoded.extend(_encode(entry) for entry in self.log[len(encoded):])
        # the same text as json.dump(log, f, indent=4)
        self._writer.write(os.path.join(out, self._filename), '[\n' + ',\n'.join(encoded) + '\n]')

    def finalize(self, trainer=None) -> None:
        if trainer is not None and self._filename is not None and \
                len(self._encoded) < len(self.log) and comm_of(trainer).rank == 0:
            self._write(trainer.out)
        self._writer.flush()

    def guess_previous(self) -> None:
        """Its trigger guesses its previous position (the snapshot being resumed has
        no state for this extension: see IntervalTrigger.guess_previous)."""
        guess_previous(self._trigger)

    def state_dict(self) -> dict:
        return {'log': copy.deepcopy(self.log), 'summary': self._summary.state_dict(),
                'trigger': state_of(self._trigger)}

    def reshard_state(self, states: List[dict], rank: int) -> dict:
        """The state to resume from on another world size: the saved ranks' partial
        sums merged on rank 0, none on the others (see :func:`reshard_summary_state`)."""
        return reshard_summary_state(states, rank)

    def load_state_dict(self, state: dict) -> None:
        self.log[:] = copy.deepcopy(state['log'])   # the same list: readers may hold it
        self._encoded = []
        self._summary.load_state_dict(state['summary'])
        load_into(self._trigger, state['trigger'])
