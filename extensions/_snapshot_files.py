"""The snapshot files of one template in a directory: which, in what order, autoload of the
newest, retention."""
from __future__ import annotations

import os
import re
import warnings
from typing import Any, Dict, List, Optional, Tuple

from trainerlib.distributed import commit
from trainerlib.errors import SnapshotError, SnapshotMismatchError
from trainerlib.serialization import load_snapshot, read_header


class SnapshotFiles:
    """Mixin of :class:`~extensions.snapshot_writers.Snapshot`: lists, orders and prunes
    the files its filename template produces.

    Needs ``_pattern`` (the template's regex), ``n_retains``, ``_target`` (None for a
    trainer snapshot, whose sets have rank files) and ``_target_of(trainer)``.
    """

    _pattern: 're.Pattern[str]'
    n_retains: int
    _target: Any

    def __init__(self) -> None:
        # path -> ((inode, size, mtime), iteration, error): headers already read
        self._headers: Dict[str, Tuple[tuple, Optional[int], Optional[SnapshotError]]] = {}

    @staticmethod
    def _stat_key(path: str) -> tuple:
        st = os.stat(path)
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _remember(self, path: str, iteration: Optional[int],
                  error: Optional[SnapshotError]) -> None:
        try:
            self._headers[path] = (self._stat_key(path), iteration, error)
        except OSError:
            self._headers.pop(path, None)

    def _iteration_of(self, path: str) -> Optional[int]:
        """The iteration recorded in the file's header (read once per file version).

        Raises:
            SnapshotError: the header cannot be read (a damaged file).
        """
        cached = self._headers.get(path)
        if cached is None or cached[0] != self._stat_key(path):
            try:
                iteration = read_header(path)['iteration']
                error = None
            except SnapshotError as e:
                iteration, error = None, e
            self._remember(path, iteration if isinstance(iteration, int) else None, error)
            cached = self._headers.get(path, (None, iteration, error))
        if cached[2] is not None:
            raise cached[2]
        return cached[1]

    def _existing(self, out: str) -> Tuple[List[str], List[Tuple[str, SnapshotError]]]:
        """Snapshot files in ``out`` that the filename template produces exactly.

        Returns:
            The readable ones, oldest first by the iteration in their header (then by
            the integers in their name), and ``(path, error)`` for the damaged ones.
            Other files (``snapshot_iter_4.bak``, ``snapshot_iter_8 (copy)``) are
            never listed: never loaded, never deleted.
        """
        if not os.path.isdir(out):
            return [], []
        found, damaged = [], []
        for name in os.listdir(out):
            match = self._pattern.fullmatch(name)
            path = os.path.join(out, name)
            if match is None or not os.path.isfile(path):
                continue
            try:
                iteration = self._iteration_of(path)
            except SnapshotError as e:
                damaged.append((path, e))
                continue
            except OSError:  # removed meanwhile
                continue
            numbers_in_name = tuple(int(g) for g in match.groups())
            found.append(((-1 if iteration is None else iteration, numbers_in_name, name), path))
        found.sort()
        return [path for _, path in found], sorted(damaged)

    def _remove_old(self, out: str, keep: str) -> None:
        """Keep ``keep`` and the newest ``n_retains - 1`` other snapshots, by iteration.

        Damaged files under a snapshot name are left alone (autoload warns about them).
        """
        paths = [p for p in self._existing(out)[0] if os.path.basename(p) != keep]
        for path in paths[:max(0, len(paths) - (self.n_retains - 1))]:
            try:
                os.remove(path)   # a set's main file first: the set is then uncommitted
            except OSError:
                pass
            self._headers.pop(path, None)
            if self._target is None and os.path.isdir(commit.ranks_dir(path)):
                commit.remove_rank_files(path)

    def _autoload(self, trainer) -> None:
        """Load the newest snapshot; skip damaged ones; refuse an incompatible one."""
        target = self._target_of(trainer)
        paths, damaged = self._existing(trainer.out)
        skipped = []
        for path, error in damaged:
            skipped.append(f'{os.path.basename(path)}: {error}')
            warnings.warn(f'autoload skipped {path}: {error}')
        for path in reversed(paths):
            try:
                load_snapshot(path, target)  # checks compatibility before loading
            except SnapshotMismatchError as e:  # made by another setup: never fall back
                raise SnapshotMismatchError(e.reason, f'{e.fix}, or choose another output '
                                            'directory', where=f'autoload: {path}') from None
            except SnapshotError as e:  # damaged: the next older one may load
                skipped.append(f'{os.path.basename(path)}: {e}')
                warnings.warn(f'autoload skipped {path}: {e}')
                continue
            return
        if skipped:  # starting over would soon delete them (n_retains): refuse instead
            raise SnapshotError(f'autoload: none of the snapshots in {trainer.out!r} could be '
                                f'loaded ({"; ".join(skipped)}); remove them or choose '
                                'another output directory')
