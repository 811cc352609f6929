"""snapshot / snapshot_object: save state files atomically, keep the newest, autoload."""
from __future__ import annotations

import os
import re
import threading
import warnings
from typing import Any, Callable, List, Optional

from trainerlib.errors import NonFiniteError, OutputDirError, SnapshotError
from trainerlib.extension import PRIORITY_SNAPSHOT, Extension
from trainerlib.serialization import dump_state, load_state, remove_partial_files, write_file


def _pattern(template: str) -> 're.Pattern[str]':
    """A regex matching the file names the ``str.format`` template can produce."""
    parts = re.split(r'\{[^{}]*\}', template)
    return re.compile('^' + '.+'.join(re.escape(p) for p in parts) + '$')


class Snapshot(Extension):
    """Writes ``target.state_dict()`` to ``out/<filename>`` (see :func:`snapshot`)."""

    trigger = (1, 'epoch')
    priority = PRIORITY_SNAPSHOT
    rank0_only = True

    def __init__(self, target: Any = None, filename: str = 'snapshot_iter_{.updater.iteration}',
                 n_retains: int = -1, autoload: bool = False, snapshot_on_error: bool = False,
                 condition: Optional[Callable[[], bool]] = None, background: bool = True) -> None:
        if n_retains == 0:
            raise ValueError('n_retains=0 would delete every snapshot; use -1 to keep all')
        self._target = target
        self.filename = filename
        self.n_retains = n_retains
        self.autoload = autoload
        self.restores_trainer = autoload
        self.snapshot_on_error = snapshot_on_error
        self._condition = condition
        self._pattern = _pattern(filename)
        self.background = background
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._last_path: Optional[str] = None

    def _target_of(self, trainer) -> Any:
        return trainer if self._target is None else self._target

    def __call__(self, trainer) -> None:
        if self._condition is None or self._condition():
            self.write(trainer, background=self.background)

    def write(self, trainer, background: bool = False) -> str:
        """Write the snapshot; returns its path.

        The state is serialized at once, in this thread. With ``background`` the
        bytes are written (and fsynced) by a thread while training goes on; the
        previous write is waited for first, and :meth:`wait` (called by
        ``finalize``) waits for this one.
        """
        self.wait()
        path = os.path.join(trainer.out, self.filename.format(trainer))
        data = dump_state(self._target_of(trainer).state_dict())
        self._last_path = path
        if not background:
            self._save(data, path)
            return path
        self._thread = threading.Thread(target=self._save_in_thread, args=(data, path),
                                        name='trainerlib-snapshot', daemon=True)
        self._thread.start()
        return path

    def wait(self) -> None:
        """Wait for a background write; raise its error (the older snapshots are intact)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _save_in_thread(self, data: memoryview, path: str) -> None:
        try:
            self._save(data, path)
        except BaseException as e:  # re-raised in the training thread by wait()
            self._error = e

    def _save(self, data: memoryview, path: str) -> None:
        try:
            write_file(data, path)
        except OSError as e:
            error = OutputDirError(f'could not write snapshot {path!r} ({e.strerror or e}); '
                                   'the previous snapshots are intact')
            error.errno = e.errno
            raise error from None
        if self.n_retains > 0:
            self._remove_old(os.path.dirname(path), keep=os.path.basename(path))

    def _existing(self, out: str) -> List[str]:
        """Matching snapshot files in ``out``, oldest first."""
        if not os.path.isdir(out):
            return []
        names = [n for n in os.listdir(out) if self._pattern.match(n)]
        paths = [os.path.join(out, n) for n in names]
        return sorted(paths, key=lambda p: (os.stat(p).st_mtime_ns, p))

    def _remove_old(self, out: str, keep: str) -> None:
        paths = [p for p in self._existing(out) if os.path.basename(p) != keep]
        for path in paths[:max(0, len(paths) - (self.n_retains - 1))]:
            try:
                os.remove(path)
            except OSError:
                pass

    def initialize(self, trainer) -> None:
        remove_partial_files(trainer.out, self._pattern.match)
        if not self.autoload:
            return
        target = self._target_of(trainer)
        skipped = []
        for path in reversed(self._existing(trainer.out)):
            try:
                target.load_state_dict(load_state(path))
            except (SnapshotError, KeyError, ValueError, RuntimeError) as e:
                skipped.append(f'{os.path.basename(path)}: {e}')
                warnings.warn(f'autoload skipped {path}: {e}')
                continue
            return
        if skipped:  # starting over would soon delete them (n_retains): refuse instead
            raise SnapshotError(f'autoload: none of the snapshots in {trainer.out!r} could be '
                                f'loaded ({"; ".join(skipped)}); remove them or choose '
                                'another output directory')

    def on_error(self, trainer, exc, tb) -> None:
        try:
            self.wait()
        except Exception as e:  # the training error matters more; say it and go on
            warnings.warn(f'a background snapshot write failed: {e}')
        # a diverged state (NaN/Inf) must never replace a good snapshot
        if self.snapshot_on_error and not isinstance(exc, NonFiniteError):
            self.write(trainer)

    def on_preemption(self, trainer) -> None:
        """A signal stops training: save the trainer now, unless this iteration just did."""
        if self._target is not None:
            return
        if self._last_path != os.path.join(trainer.out, self.filename.format(trainer)):
            self.write(trainer)

    def finalize(self, trainer=None) -> None:
        self.wait()

    @property
    def default_name(self) -> str:
        return 'snapshot' if self._target is None else 'snapshot_object'


def snapshot(filename: str = 'snapshot_iter_{.updater.iteration}', *, target: Any = None,
             n_retains: int = -1, autoload: bool = False, snapshot_on_error: bool = False,
             condition: Optional[Callable[[], bool]] = None,
             background: bool = True) -> Snapshot:
    """Snapshot of the whole trainer (or ``target``), as Chainer's ``extensions.snapshot``.

    The file holds every model, optimizer, iterator position, trigger and
    extension state, the RNG states and the elapsed time, so that training
    resumes exactly. It is written atomically and loads with
    ``weights_only=True``. Default trigger ``(1, 'epoch')``.

    Args:
        filename: ``str.format`` template applied to the trainer.
        target: object with ``state_dict`` (default: the trainer).
        n_retains: keep only the newest N matching files (-1: keep all).
        autoload: at start, load the newest matching snapshot in ``out``
            that loads and matches (before any other extension initializes);
            if there are snapshots but none loads, raise :class:`SnapshotError`.
        snapshot_on_error: also write a snapshot when training raises (except for a
            :class:`~trainerlib.errors.NonFiniteError`: a diverged state is never saved).
        condition: optional ``fn() -> bool``; skip writing when it returns False.
        background: write the file from a thread while training goes on (the
            state is serialized first, in the training thread; one write at a
            time; ``finalize`` waits for it).

    When a signal preempts training (see :mod:`trainerlib.preemption`) a trainer
    snapshot is written after the last complete iteration. Files left half-written
    by a killed process (hidden ``.tmp`` files) are deleted at start.
    """
    return Snapshot(target, filename, n_retains, autoload, snapshot_on_error, condition,
                    background)


def snapshot_object(target: Any, filename: str, *, n_retains: int = -1,
                    autoload: bool = False, snapshot_on_error: bool = False,
                    condition: Optional[Callable[[], bool]] = None,
                    background: bool = True) -> Snapshot:
    """Snapshot of one object (a model, an optimizer …): ``target.state_dict()``.

    Load it back with ``trainerlib.serialization.load_snapshot(path, target)``.
    Arguments as :func:`snapshot`.
    """
    return Snapshot(target, filename, n_retains, autoload, snapshot_on_error, condition,
                    background)
