"""The Trainer: runs the updater until the stop trigger fires, calling extensions."""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Dict, Iterable, List, Optional

import torch

from trainerlib import reporter as reporter_module
from trainerlib._state import guess_previous, load_into, state_of
from trainerlib.distributed import control as control_module
from trainerlib.distributed.roles import checked_comm, for_this_rank
from trainerlib.distributed.seeding import derive_rank_streams
from trainerlib.errors import OutputDirError, SnapshotMismatchError
from trainerlib.extension import PRIORITY_SNAPSHOT, as_extension, check_removed_arguments
from trainerlib.extension_entry import Entry, earliest
from trainerlib.preemption import Preempted, Preemption
from trainerlib.rng import get_rng_state, set_rng_state
from trainerlib.teardown import call_on_error, finalize_all, show_loop_exception
from trainerlib.triggers.get_trigger import TriggerLike, get_trigger
from trainerlib.triggers.schedule import TriggerSchedule


_TRAINER_KEYS = ('updater', 'stop_trigger', 'extensions', 'triggers', 'elapsed_time', 'rng')


class Trainer:
    """Runs ``updater.update()`` until ``stop_trigger`` fires, calling extensions.

    Each iteration: the stop trigger is checked, the updater runs inside a fresh
    reporter scope (``trainer.observation``), then every extension's trigger is
    evaluated in descending priority (ties keep registration order) and the
    extension runs if it fired. Extensions at snapshot priority run last, after
    all their triggers were evaluated, so that they save the final state of the
    iteration.

    Triggers that cannot fire are not asked: one whose ``fires_every_iteration``
    is true (``(1, 'iteration')``) is not called, its extension simply runs every
    iteration; one with a ``next_fire(iteration)`` method (``(period,
    'iteration')``, ``ManualScheduleTrigger`` in iterations, the stop trigger
    ``(n, 'iteration')``) is asked only at the iteration it names, so an
    iteration where none is due costs one integer comparison for all of them.
    Other triggers (``'epoch'`` units, custom callables) are asked every iteration.

    Args:
        updater: the :class:`~trainerlib.updaters.Updater`.
        stop_trigger: a trigger or ``(period, unit)``, e.g. ``(20, 'epoch')``;
            None never stops.
        out: output directory (created when training starts).
        extensions: extensions to register with their defaults.
        comm: the communicator of a data-parallel run
            (:func:`trainerlib.distributed.create_communicator`); None: one process.
            Under W ranks every rank runs the same loop; extensions that only write
            files or print (``rank0_only`` and not ``collective``) run on rank 0 only,
            and at the start of a fresh run each rank's random streams are derived
            from the shared seed and its rank (the data order stays shared).

    Attributes:
        preemption: how SIGTERM/SIGINT stop the run (see
            :class:`~trainerlib.preemption.Preemption`; default: both signals, 60 s
            grace period); set to None to leave signal handling alone.
    """

    def __init__(self, updater, stop_trigger: TriggerLike = None, out: str = 'result',
                 extensions: Optional[Iterable[Any]] = None, *, comm: Any = None) -> None:
        self.comm = checked_comm(comm)
        self.updater = updater
        self.stop_trigger = get_trigger(stop_trigger)
        self.out = out
        self.observation: Dict[str, Any] = {}
        self.reporter = reporter_module.Reporter()
        for name, model in updater.get_all_models().items():
            self.reporter.add_module(name, model)
        self._extensions: Dict[str, Entry] = {}
        self._start_at: Optional[float] = None
        self._elapsed_before = 0.0
        self._final_elapsed: Optional[float] = None
        self._running = False
        self._done = False
        self.preemption: Optional[Preemption] = Preemption()
        updater.connect_trainer(self)
        for ext in extensions or ():
            self.extend(ext)

    @property
    def is_before_training(self) -> bool:
        """True until the first update (Chainer's flag; False in a resumed run)."""
        return self.updater.iteration == 0

    @property
    def elapsed_time(self) -> float:
        """Seconds of training so far, including the runs before a resume."""
        if self._final_elapsed is not None:
            return self._final_elapsed
        if self._start_at is None:
            return self._elapsed_before
        return time.perf_counter() - self._start_at + self._elapsed_before

    def extend(self, extension: Any, name: Optional[str] = None, trigger: TriggerLike = None,
               priority: Optional[int] = None, *, call_before_training: bool = False,
               **kwargs: Any) -> None:
        """Register an extension.

        Args:
            extension: an :class:`Extension` or a callable ``fn(trainer)`` (a function,
                a ``make_extension`` function, a Chainer-style callable object: see
                :class:`~trainerlib.extension.FunctionExtension`).
            name: unique name (used by ``get_extension`` and in snapshots); by
                default ``extension.default_name``, suffixed ``_1``, ``_2`` … on clashes.
                An explicit name that is already taken is an error.
            trigger: overrides ``extension.trigger``.
            priority: overrides ``extension.priority``.
            call_before_training: also call it once before the first iteration (not
                again when a run resumes from a snapshot: the run it continues did,
                and what that call changed, e.g. a LogReport's means, is in the
                snapshot; Chainer calls it at every ``run()``).

        Raises:
            ValueError: ``invoke_before_training=`` (removed in Chainer v2).
            TypeError: any other unknown keyword argument.
        """
        if kwargs:
            check_removed_arguments(kwargs, 'extend')
        if self._running:
            raise RuntimeError('extensions cannot be added while the trainer runs')
        ext = as_extension(extension)
        if name is not None:
            if name in self._extensions:
                raise ValueError(f'an extension named {name!r} is already registered; '
                                 'choose another name=')
        else:
            base = ext.default_name
            name, ordinal = base, 0
            while name in self._extensions:
                ordinal += 1
                name = f'{base}_{ordinal}'
        ext.name = name
        trigger = get_trigger(ext.trigger if trigger is None else trigger)
        priority = ext.priority if priority is None else priority
        self._extensions[name] = Entry(ext, trigger, priority, call_before_training, extension)

    def get_extension(self, name: str) -> Any:
        """The extension registered under ``name`` (the object given to ``extend``)."""
        try:
            return self._extensions[name].registered
        except KeyError:
            raise ValueError(f'no extension named {name!r}; registered: '
                             f'{list(self._extensions)}') from None

    @property
    def extensions(self) -> Dict[str, Any]:
        """Registered extensions by name, in registration order (as given to ``extend``)."""
        return {name: e.registered for name, e in self._extensions.items()}

    def _prepare_out(self) -> None:
        try:
            os.makedirs(self.out, exist_ok=True)
        except OSError as e:
            raise OutputDirError(f'cannot create the output directory {self.out!r}: '
                                 f'{e.strerror or e}; choose a writable out=') from None
        if not os.access(self.out, os.W_OK | os.X_OK):
            raise OutputDirError(f'the output directory {self.out!r} is not writable; '
                                 'choose a writable out=')

    def run(self, show_loop_exception_msg: bool = True) -> None:
        """Run the training loop until the stop trigger fires (once per Trainer).

        Args:
            show_loop_exception_msg: when the loop raises, print the exception and its
                traceback to stderr before finalizing (as Chainer does); user errors
                (:class:`~trainerlib.errors.TrainerlibError`) are left to the entry
                point's one-line message. False prints nothing.
        """
        if self._done or self._running:
            raise RuntimeError('a Trainer can run only once; build a new one to train again')
        self._prepare_out()
        entries = sorted(self._extensions.values(), key=lambda e: -e.priority)  # stable
        if self.comm.rank != 0:   # rank-0-only extensions do nothing here; triggers still run
            entries = [e.replaced(for_this_rank(e.extension, self.comm.rank)) for e in entries]
        regular = [e for e in entries if e.priority > PRIORITY_SNAPSHOT]
        last = [e for e in entries if e.priority <= PRIORITY_SNAPSHOT]
        # W ranks: the agreed stop check is one more scheduled entry, after the
        # regular extensions and before the snapshot-priority ones (not registered:
        # it has no state and no name in snapshots)
        self._control = (control_module.StopCheck(self.comm, self.preemption)
                         if self.comm.size > 1 and self.preemption is not None else None)
        if self._control is not None:
            regular = regular + [Entry(control_module.Nothing(), self._control,
                                       PRIORITY_SNAPSHOT + 1, False)]
            control_module.clear_record(self)
        self._running = True
        self._start_at = time.perf_counter()
        failed, signum, looping = False, None, False
        guard = self.preemption if self.preemption is not None else contextlib.nullcontext()
        with guard:
            try:
                self._initialize(entries)
                if self.comm.size > 1 and self.updater.iteration == 0:
                    derive_rank_streams(self.comm.rank)   # a fresh run: replicas built equal
                looping = True
                self._loop(regular, last, self._control)
                signum = self._signal_received()
                if signum is not None:
                    self._preempt(entries)
            except BaseException as exc:
                failed = True
                if looping and show_loop_exception_msg:
                    show_loop_exception(exc)
                call_on_error(self, entries, exc)
                raise
            finally:
                self._final_elapsed = self.elapsed_time
                self._running, self._done = False, True
                finalize_all(self, entries, failed)
        if signum is not None:
            if self._control is not None:
                control_module.report_preempted(self, signum)
            raise Preempted(signum, self.updater.iteration)
        if self._control is not None and self.preemption.received is not None:
            sys.stderr.write(f'trainerlib: rank {self.comm.rank} received signal '
                             f'{self.preemption.received} after the last stop check; the '
                             'run had reached its stop trigger and completed\n')

    def _signal_received(self) -> Optional[int]:
        """The signal that stops this run: this process's (one process) or the one the
        ranks agreed on (W ranks; a signal after the last check is not agreed)."""
        if self.preemption is None:
            return None
        control = getattr(self, '_control', None)
        return self.preemption.received if control is None else control.received

    def _preempt(self, entries: List[Entry]) -> None:
        for entry in entries:
            entry.extension.on_preemption(self)

    def _initialize(self, entries: List[Entry]) -> None:
        # Extensions that restore the trainer (snapshot autoload) go first, so the
        # others initialize from the restored state.
        ordered = sorted(entries, key=lambda e: not getattr(e.extension, 'restores_trainer', False))
        for entry in ordered:
            entry.initialize(self)
        before = [entry for entry in entries if entry.call_before_training]
        if before and self.is_before_training:   # not again on resume
            self.reporter.observation = self.observation  # restored on resume, else {}
            with self.reporter:  # what they report (e.g. an Evaluator) is observed
                for entry in before:
                    entry.extension(self)

    def _loop(self, regular: List[Entry], last: List[Entry], control: Any = None) -> None:
        updater = self.updater
        update = updater.update
        reporter = self.reporter
        # what ends the loop after an iteration: this process's signal flag, or under W
        # ranks the agreed one (set only by the stop check, an entry of ``regular``)
        preemption = control if control is not None else (
            self.preemption or Preemption(signals=()))  # never receives
        start = updater.iteration
        if control is not None:
            control.start(start)
        # the stop trigger is asked before the update (first at ``start`` itself), the
        # extensions' triggers after it; a resumed run asks them at the same iterations
        stop = TriggerSchedule(self.stop_trigger, after_update=False)
        stop.start(start - 1)
        entries = regular + last
        for entry in entries:
            entry.schedule.start(start)
        due = earliest(entries)
        # what runs on an iteration where no scheduled trigger is due
        polled = [(e.schedule.always, e.trigger, e.extension) for e in regular
                  if not e.schedule.scheduled]
        polled_last = [e for e in last if not e.schedule.scheduled]
        with reporter:  # current for the whole loop; each iteration gets a fresh observation
            while preemption.received is None:
                iteration = updater.iteration
                if iteration >= stop.due and stop(self, iteration):
                    break
                self.observation = reporter.observation = {}
                update()
                iteration = updater.iteration
                if iteration < due:
                    for always, trigger, extension in polled:
                        if always or trigger(self):
                            extension(self)
                    if polled_last:
                        self._run_last(polled_last, iteration)
                else:
                    for entry in regular:
                        if entry.schedule(self, iteration):
                            entry.extension(self)
                    self._run_last(last, iteration)
                    due = earliest(entries)

    def _run_last(self, last: List[Entry], iteration: int) -> None:
        """Snapshot-priority extensions: all triggers first, then the ones that fired."""
        fired = [entry for entry in last if entry.schedule(self, iteration)]
        for entry in fired:
            entry.extension(self)

    def state_dict(self) -> dict:
        """Progress of the whole run (see DESIGN §6): updater, triggers, extensions, RNG, time."""
        return {
            'updater': self.updater.state_dict(),
            'stop_trigger': state_of(self.stop_trigger),
            'extensions': {n: e.extension.state_dict() for n, e in self._extensions.items()},
            'triggers': {n: state_of(e.trigger) for n, e in self._extensions.items()},
            'elapsed_time': self.elapsed_time,
            'rng': get_rng_state(),
            # the stop trigger reads this observation at the next loop check
            'observation': {k: v for k, v in self.observation.items()
                            if isinstance(v, (torch.Tensor, int, float))},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore progress; configuration (periods, keys) stays as built by the code.

        Raises:
            SnapshotMismatchError: ``state`` is not a trainer state, or was made with
                other models or optimizers (checked before anything is restored).
        """
        missing = [k for k in _TRAINER_KEYS if not isinstance(state, dict) or k not in state]
        if missing:
            raise SnapshotMismatchError(
                f'is not a trainer snapshot (it has no {", ".join(missing)})',
                'load it into what it was saved from (a model: '
                'trainerlib.serialization.load_snapshot(path, model))')
        self.updater.load_state_dict(state['updater'])  # checks everything before loading
        load_into(self.stop_trigger, state['stop_trigger'])
        for name, entry in self._extensions.items():
            if name in state['extensions']:
                entry.extension.load_state_dict(state['extensions'][name])
            else:   # added since the snapshot: its own triggers must not count from 0
                guess_previous(entry.extension)
            if name in state['triggers']:
                load_into(entry.trigger, state['triggers'][name])
            else:   # added since the snapshot: it must not count from iteration 0
                guess_previous(entry.trigger)
        self._elapsed_before = state['elapsed_time']
        self.observation = dict(state.get('observation', {}))
        if self._start_at is not None:
            self._start_at = time.perf_counter()
        set_rng_state(state['rng'])
