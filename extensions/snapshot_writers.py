"""snapshot / snapshot_object: save state files atomically, keep the newest, autoload."""
from __future__ import annotations

import os
import re
import warnings
from typing import Any, Callable, List, Optional

from trainerlib.errors import NonFiniteError, SnapshotError
from trainerlib.extension import PRIORITY_SNAPSHOT, Extension
from trainerlib.serialization import load_state, save_state


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
                 condition: Optional[Callable[[], bool]] = None) -> None:
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

    def _target_of(self, trainer) -> Any:
        return trainer if self._target is None else self._target

    def __call__(self, trainer) -> None:
        if self._condition is None or self._condition():
            self.write(trainer)

    def write(self, trainer) -> str:
        """Write the snapshot now; returns its path."""
        name = self.filename.format(trainer)
        path = os.path.join(trainer.out, name)
        state = self._target_of(trainer).state_dict()
        try:
            save_state(state, path)
        except OSError as e:
            raise OSError(e.errno, f'could not write snapshot {path!r} ({e.strerror or e}); '
                          'the previous snapshots are intact') from None
        if self.n_retains > 0:
            self._remove_old(trainer.out, keep=name)
        return path

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
        # a diverged state (NaN/Inf) must never replace a good snapshot
        if self.snapshot_on_error and not isinstance(exc, NonFiniteError):
            self.write(trainer)

    @property
    def default_name(self) -> str:
        return 'snapshot' if self._target is None else 'snapshot_object'


def snapshot(filename: str = 'snapshot_iter_{.updater.iteration}', *, target: Any = None,
             n_retains: int = -1, autoload: bool = False, snapshot_on_error: bool = False,
             condition: Optional[Callable[[], bool]] = None) -> Snapshot:
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
    """
    return Snapshot(target, filename, n_retains, autoload, snapshot_on_error, condition)


def snapshot_object(target: Any, filename: str, *, n_retains: int = -1,
                    autoload: bool = False, snapshot_on_error: bool = False,
                    condition: Optional[Callable[[], bool]] = None) -> Snapshot:
    """Snapshot of one object (a model, an optimizer …): ``target.state_dict()``.

    Load it back with ``trainerlib.serialization.load_snapshot(path, target)``.
    """
    return Snapshot(target, filename, n_retains, autoload, snapshot_on_error, condition)
