"""snapshot / snapshot_object: save state files atomically, keep the newest, autoload."""
from __future__ import annotations

import numbers
import os
import re
import string
import threading
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

from trainerlib.distributed import commit, commit_load
from trainerlib.errors import (ConfigError, NonFiniteError, OutputDirError, SnapshotError,
                               SnapshotMismatchError)
from trainerlib.extension import PRIORITY_SNAPSHOT, Extension
from trainerlib.serialization import (dump_state, load_snapshot, read_header,
                                      remove_partial_files, write_file)
from trainerlib.snapshot_compat import target_record

_FIELDS_FIX = ('fields are formatted with the trainer and must give non-negative integers, '
               'e.g. {.updater.iteration} or {.updater.epoch}; write a literal brace as {{ or }}')


def _parse(template: Any) -> Tuple['re.Pattern[str]', List[str]]:
    """The regex of exactly the file names ``template`` can produce, and its fields.

    A field without a format spec gives an integer as ``str`` writes it
    (``(0|[1-9]\\d*)``: ``08`` is not one); with a spec (``:06d``), digits.

    Raises:
        ConfigError: not a valid ``str.format`` template, or a field that is not an
            attribute or item of the trainer.
    """
    if not isinstance(template, str) or not template:
        raise ConfigError(f'the snapshot filename must be a non-empty str.format template, '
                          f'got {template!r}; ' + _FIELDS_FIX)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f'snapshot filename {template!r} is not a valid str.format template '
                          f'({e}); ' + _FIELDS_FIX) from None
    regex, fields, roots = [], [], []
    for literal, field, spec, _ in parsed:
        regex.append(re.escape(literal))
        if field is None:
            continue
        root = re.split(r'[.\[]', field, maxsplit=1)[0]
        if root not in ('', '0') or field == root:
            what = 'is the trainer itself' if field == root and root in ('', '0') else \
                'is not an attribute of the trainer'
            raise ConfigError(f'snapshot filename {template!r}: field {{{field}}} {what}; '
                              + _FIELDS_FIX)
        if '{' in (spec or ''):
            raise ConfigError(f'snapshot filename {template!r}: nested fields in a format spec '
                              'are not supported; ' + _FIELDS_FIX)
        regex.append(r'(\d+)' if spec else r'(0|[1-9]\d*)')
        fields.append('0' + field if root == '' else field)
        roots.append(root)
    if len(roots) > 1 and '' in roots:  # '{.a}_{.b}' formats its 2nd field from a 2nd argument
        raise ConfigError(f'snapshot filename {template!r} has several fields: number each '
                          f'(e.g. {{0.updater.epoch}}_{{0.updater.iteration}}), since '
                          'str.format reads an unnumbered field after the first from a '
                          'missing second argument; ' + _FIELDS_FIX)
    return re.compile(''.join(regex)), fields


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
        self._pattern, self._fields = _parse(filename)
        self._target = target
        # a trainer snapshot runs on every rank of a W-rank run: it writes a set
        # (trainerlib.distributed.commit); one of an object is written by rank 0 only
        self.collective = target is None
        self.filename = filename
        self.n_retains = n_retains
        self.autoload = autoload
        self.restores_trainer = autoload
        self.snapshot_on_error = snapshot_on_error
        self._condition = condition
        self.background = background
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._last_path: Optional[str] = None
        self._ready = False  # initialize() completed: on_error may write
        # path -> ((inode, size, mtime), iteration, error): headers already read
        self._headers: Dict[str, Tuple[tuple, Optional[int], Optional[SnapshotError]]] = {}

    def _target_of(self, trainer) -> Any:
        return trainer if self._target is None else self._target

    def _set_comm(self, trainer) -> Any:
        """The communicator when this writes snapshot sets (a trainer on W > 1 ranks)."""
        comm = getattr(trainer, 'comm', None) if self._target is None else None
        return comm if comm is not None and comm.size > 1 else None

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
        target = self._target_of(trainer)
        iteration = trainer.updater.iteration
        comm = self._set_comm(trainer)
        header = None
        if comm is not None:   # ranks >= 1 write their files now; rank 0 commits below
            header = commit.write_set(comm, trainer, path, iteration)
            if comm.rank:
                self._last_path = path
                return path
        data = dump_state(target.state_dict(), iteration=iteration, target=target_record(target),
                          snapshot_set=header)
        self._last_path = path
        if not background:
            self._save(data, path, iteration, header)
            return path
        self._thread = threading.Thread(target=self._save_in_thread,
                                        args=(data, path, iteration, header),
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

    def _save_in_thread(self, data: memoryview, path: str, iteration: int,
                        header: Optional[dict] = None) -> None:
        try:
            self._save(data, path, iteration, header)
        except BaseException as e:  # re-raised in the training thread by wait()
            self._error = e

    def _save(self, data: memoryview, path: str, iteration: int,
              header: Optional[dict] = None) -> None:
        try:
            write_file(data, path)   # the commit of a set
        except OSError as e:
            error = OutputDirError(f'could not write snapshot {path!r} ({e.strerror or e}); '
                                   'the previous snapshots are intact')
            error.errno = e.errno
            raise error from None
        self._remember(path, iteration, None)
        if header is not None:
            commit.prune_stale(path, header)
        if self.n_retains > 0:
            self._remove_old(os.path.dirname(path), keep=os.path.basename(path))

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

    def _check_fields(self, trainer) -> None:
        """Raise ConfigError unless every field formats to a non-negative integer."""
        formatter = string.Formatter()
        for field in self._fields:
            try:
                value = formatter.get_field(field, (trainer,), {})[0]
            except Exception as e:  # AttributeError, KeyError, IndexError, TypeError …
                raise ConfigError(f'snapshot filename {self.filename!r}: field '
                                  f'{{{field.lstrip("0")}}} cannot be read from the trainer '
                                  f'({type(e).__name__}: {e}); ' + _FIELDS_FIX) from None
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ConfigError(f'snapshot filename {self.filename!r}: field '
                                  f'{{{field.lstrip("0")}}} is {value!r}, not a non-negative '
                                  'integer (autoload and n_retains recognise snapshots by '
                                  'it); ' + _FIELDS_FIX)
        try:
            name = self.filename.format(trainer)
        except Exception as e:  # a bad conversion (!x), mixed {} and {0} …
            raise ConfigError(f'snapshot filename {self.filename!r} cannot be formatted ({e}); '
                              + _FIELDS_FIX) from None
        if not self._pattern.fullmatch(name):
            raise ConfigError(f'snapshot filename {self.filename!r} gives {name!r}, which is '
                              'not digits where the fields are (a format spec that pads with '
                              'spaces or writes hex?); ' + _FIELDS_FIX)

    def initialize(self, trainer) -> None:
        self._ready = False
        self._check_fields(trainer)
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

    def on_error(self, trainer, exc, tb) -> None:
        try:
            self.wait()
        except Exception as e:  # the training error matters more; say it and go on
            warnings.warn(f'a background snapshot write failed: {e}')
        # a diverged state (NaN/Inf) must never replace a good snapshot, nor may a run
        # that failed before training (e.g. autoload refused a snapshot) write one
        if self.snapshot_on_error and self._ready and not isinstance(exc, NonFiniteError):
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
        filename: ``str.format`` template applied to the trainer. Its fields must
            give non-negative integers (``{.updater.iteration}``,
            ``{.updater.epoch}``); a template without fields (``'snapshot'``) names
            one file, rewritten each time. A template that cannot be formatted
            raises :class:`~trainerlib.errors.ConfigError`: its syntax here, its
            fields when training starts (before anything is written).
        target: object with ``state_dict`` (default: the trainer).
        n_retains: keep only the newest N snapshots by iteration (-1: keep all),
            counting the one just written.
        autoload: at start, load the newest snapshot in ``out`` (before any
            other extension initializes). Damaged ones are skipped with a warning;
            if there are snapshots but none loads, raise :class:`SnapshotError`.
            One made with another optimizer class, param-group layout or model
            structure is refused at once
            (:class:`~trainerlib.errors.SnapshotMismatchError`, nothing loaded).
        snapshot_on_error: also write a snapshot when training raises (except for a
            :class:`~trainerlib.errors.NonFiniteError`: a diverged state is never
            saved, nor when the run failed before training, e.g. autoload refused).
        condition: optional ``fn() -> bool``; skip writing when it returns False.
        background: write the file from a thread while training goes on (the
            state is serialized first, in the training thread; one write at a
            time; ``finalize`` waits for it).

    Snapshots are the files the template produces exactly (``snapshot_iter_8``,
    not ``snapshot_iter_08``, ``snapshot_iter_8.bak`` or ``snapshot_iter_8 (copy)``:
    those are never loaded nor deleted), ordered by the iteration recorded in their
    header (read without loading the tensors), not by modification time, so copies
    made by ``cp -r`` or ``rsync`` keep their order. When a signal preempts training
    (see :mod:`trainerlib.preemption`) a trainer snapshot is written after the last
    complete iteration. Files left half-written by a killed process (hidden ``.tmp``
    files) are deleted at start. Files get the permissions ``open`` would give
    (``0o666`` less the umask).

    Under a communicator of W > 1 ranks a trainer snapshot is a collective that
    writes a *set* (see :mod:`trainerlib.distributed.commit`): each rank r >= 1 writes
    ``<name>.ranks/rank{r}_iter{i}`` (its RNG streams, iterators, extension and
    trigger states, observation), then rank 0 writes ``<name>`` (its full state and a
    header with W, the global batch and each rank file's size and sha256): its
    atomic rename commits the set. Autoload agrees across ranks on the newest set
    every rank can load and skips damaged ones with a warning on every rank; the
    main file alone loads in a single process (``load_snapshot``). A single process
    writes exactly one file, as before.
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
