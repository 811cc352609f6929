"""The ``Snapshot`` extension: hand the serialized state to a writer; autoload at start."""
from __future__ import annotations

import os
import threading
import warnings
import weakref
from typing import Any, Callable, Dict, Optional, Tuple

from trainerlib.extensions._snapshot_files import SnapshotFiles
from trainerlib.extensions._snapshot_template import check_fields, parse
from trainerlib.extensions._thread_writers import ThreadWriter
from trainerlib.extensions._writer import SimpleWriter
from trainerlib.distributed import commit, commit_load
from trainerlib.errors import ConfigError, NonFiniteError
from trainerlib.extension import PRIORITY_SNAPSHOT, Extension
from trainerlib.serialization import dump_state, remove_partial_files
from trainerlib.snapshot_compat import target_record
from trainerlib.updaters.data_parallel import uncompiled


def _always_true() -> bool:
    return True


def _writer_of(writer: Any, savefun: Optional[Callable], background: Optional[bool]) -> Any:
    """The writer the arguments of :func:`~extensions.snapshot` choose."""
    if writer is not None and savefun is not None:
        raise TypeError('savefun and writer arguments cannot be specified together '
                        '(give the writer its savefun)')
    if writer is not None and background is not None:
        raise TypeError('writer and background arguments cannot be specified together '
                        '(background=False is writer=SimpleWriter())')
    if writer is not None:
        if not callable(writer):
            raise TypeError(f'writer must be callable as writer(filename, outdir, target), '
                            f'got {writer!r}')
        return writer
    return SimpleWriter(savefun) if background is False else ThreadWriter(savefun)


class Snapshot(SnapshotFiles, Extension):
    """Hands ``target.state_dict()``, serialized, to a writer (see :func:`snapshot`)."""

    trigger = (1, 'epoch')
    priority = PRIORITY_SNAPSHOT
    rank0_only = True

    def __init__(self, target: Any = None, filename: str = 'snapshot_iter_{.updater.iteration}',
                 n_retains: int = -1, autoload: bool = False, snapshot_on_error: bool = False,
                 condition: Optional[Callable[[], bool]] = None,
                 background: Optional[bool] = None, *, writer: Any = None,
                 savefun: Optional[Callable] = None) -> None:
        super().__init__()
        if n_retains == 0:
            raise ValueError('n_retains=0 would delete every snapshot; use -1 to keep all')
        self._pattern, self._fields = parse(filename)
        self.writer = _writer_of(writer, savefun, background)
        if hasattr(self.writer, '_add_cleanup_hook'):
            self.writer._add_cleanup_hook(self._written)
        elif n_retains > 0:
            raise ConfigError(f'n_retains={n_retains} needs a writer that says when a file is '
                              f'written, and {self.writer!r} does not: subclass extensions.'
                              'snapshot_writers.Writer and write with self.save(filename, '
                              'outdir, target), or use n_retains=-1')
        self._target = target
        # a trainer snapshot runs on every rank of a W-rank run: it writes a set
        # (trainerlib.distributed.commit); one of an object is written by rank 0 only
        self.collective = target is None
        self.filename = filename
        self.n_retains = n_retains
        self.autoload = autoload
        self.restores_trainer = autoload
        self.snapshot_on_error = snapshot_on_error
        self.condition = _always_true if condition is None else condition
        self._last_path: Optional[str] = None
        self._ready = False  # initialize() completed: on_error may write
        # id(bytes handed to the writer) -> (a weak reference to them, iteration, set header)
        self._pending: Dict[int, Tuple[Any, int, Optional[dict]]] = {}
        self._lock = threading.Lock()

    def _target_of(self, trainer) -> Any:
        return trainer if self._target is None else self._target

    def _set_comm(self, trainer) -> Any:
        """The communicator when this writes snapshot sets (a trainer on W > 1 ranks)."""
        comm = getattr(trainer, 'comm', None) if self._target is None else None
        return comm if comm is not None and comm.size > 1 else None

    def __call__(self, trainer) -> None:
        if self.condition():
            self.write(trainer)

    def write(self, trainer) -> str:
        """Serialize the state now, in this thread, and hand it to the writer; returns
        the file's path. A set (W > 1 ranks) waits for the previous write first."""
        filename = self.filename.format(trainer)
        path = os.path.join(trainer.out, filename)
        target = uncompiled(self._target_of(trainer))   # plain keys, compiled or not
        iteration = trainer.updater.iteration
        comm = self._set_comm(trainer)
        header = None
        if comm is not None:   # ranks >= 1 write their files now; rank 0 commits below
            self.wait()        # one set at a time: a commit prunes the rank files it does not name
            header = commit.write_set(comm, trainer, path, iteration)
            if comm.rank:
                self._last_path = path
                return path
        data = dump_state(target.state_dict(), iteration=iteration, target=target_record(target),
                          snapshot_set=header).toreadonly()
        with self._lock:   # drop the records of failed writes, add this one
            self._pending = {k: v for k, v in self._pending.items() if v[0]() is not None}
            self._pending[id(data)] = (weakref.ref(data), iteration, header)
        self.writer(filename, trainer.out, data)
        self._last_path = path
        return path

    def _written(self, path: str, data: Any) -> None:
        """Post-save hook (any thread): remember the header; retention."""
        with self._lock:
            record = self._pending.get(id(data))
            if record is not None and record[0]() is data:
                del self._pending[id(data)]
            else:
                record = None   # bytes the writer copied, or another extension's file
        if record is None and not self._pattern.fullmatch(os.path.basename(path)):
            return     # a file of another extension sharing the writer
        if record is not None:
            self._remember(path, record[1], None)
            if record[2] is not None:
                commit.prune_stale(path, record[2])
        if self.n_retains > 0:
            self._remove_old(os.path.dirname(path), keep=os.path.basename(path))

    def wait(self) -> None:
        """Wait for the writer's pending writes; raise a failed one's error (the older
        snapshots are intact)."""
        if hasattr(self.writer, 'wait'):
            self.writer.wait()

    def initialize(self, trainer) -> None:
        self._ready = False
        check_fields(self.filename, self._pattern, self._fields, trainer)
        comm = self._set_comm(trainer)
        if comm is not None:
            if comm.rank == 0:
                remove_partial_files(trainer.out, self._pattern.fullmatch)
            commit_load.initialize(self, trainer, comm)
            self._ready = True
            return
        remove_partial_files(trainer.out, self._pattern.fullmatch)
        if self.autoload:
            self._autoload(trainer)
        self._ready = True

    def on_error(self, trainer, exc, tb) -> None:
        try:
            self.wait()
        except Exception as e:  # the training error matters more; say it and go on
            warnings.warn(f'a background snapshot write failed: {e}')
        # a diverged state (NaN/Inf) must never replace a good snapshot, nor may a run
        # that failed before training (e.g. autoload refused a snapshot) write one
        if self.snapshot_on_error and self._ready and not isinstance(exc, NonFiniteError):
            self.write(trainer)
            self.wait()

    def on_preemption(self, trainer) -> None:
        """A signal stops training: save the trainer now, unless this iteration just did."""
        if self._target is not None:
            return
        if self._last_path != os.path.join(trainer.out, self.filename.format(trainer)):
            self.write(trainer)
            self.wait()

    def finalize(self, trainer=None) -> None:
        if hasattr(self.writer, 'finalize'):
            self.writer.finalize()

    @property
    def default_name(self) -> str:
        return 'snapshot' if self._target is None else 'snapshot_object'
