"""Snapshot writers' base (Chainer's ``snapshot_writers.Writer``) and ``SimpleWriter``.

A writer decides *when and in which thread* a snapshot file is written, never what
it holds: :class:`~extensions.snapshot_writers.Snapshot` serializes the state first
(plain data that loads with ``torch.load(weights_only=True)``) and calls
``writer(filename, outdir, target)`` with ``target`` the file's complete bytes (a
read-only ``memoryview``). :meth:`Writer.save` writes them atomically (temporary
file, fsync, rename, directory fsync) and then runs the snapshot's retention.

``savefun`` is accepted for Chainer's signatures, but the file format is
trainerlib's: only ``None``, ``torch.save`` and
``trainerlib.serialization.save_state`` (which name that format) are accepted.
"""
from __future__ import annotations

import os
from typing import Any, Callable, List, Optional

import torch

from trainerlib.errors import ConfigError, OutputDirError
# every built-in writer writes a snapshot file through this name (the fault-injection
# tests patch ``extensions._writer.write_file``)
from trainerlib.serialization import save_state, write_file

_SAVEFUNS = (None, torch.save, save_state)


def check_savefun(savefun: Optional[Callable], kwds: Optional[dict] = None) -> None:
    """Raise :class:`ConfigError` unless ``savefun`` names trainerlib's file format.

    A saving function of its own could write pickled objects (a file that
    ``weights_only`` loading refuses) or a partial one, so trainerlib writes every
    snapshot itself.
    """
    if any(savefun is f for f in _SAVEFUNS) and not kwds:
        return
    what = f'savefun={getattr(savefun, "__qualname__", savefun)!r}' if not kwds else \
        f'savefun keyword arguments {sorted(kwds)}'
    raise ConfigError(
        f'{what} is not supported: trainerlib writes every snapshot itself (a temporary '
        'file, fsynced, then renamed; plain data that loads with torch.load(weights_only='
        'True)), so the saving function cannot change the format; drop it (savefun=torch.'
        'save or trainerlib.serialization.save_state name this format and are accepted) '
        'and choose how files are written with writer=extensions.snapshot_writers.'
        'SimpleWriter(), ThreadWriter() or ThreadQueueWriter()')


class Writer:
    """Base class of snapshot writers (Chainer's ``snapshot_writers.Writer``).

    Subclasses implement ``__call__(filename, outdir, target)`` and write with
    :meth:`save`, from whatever thread they choose. A user-written writer works
    the same way: one that writes the bytes some other way takes over their
    atomicity (autoload still never loads a partial file: it is skipped as damaged).
    """

    def __init__(self) -> None:
        self._post_save_hooks: List[Callable[[str, Any], None]] = []

    def __call__(self, filename: str, outdir: str, target: memoryview) -> None:
        """Write ``target`` (the file's bytes) to ``outdir/filename`` (now or later)."""
        raise NotImplementedError

    def save(self, filename: str, outdir: str, target: memoryview,
             savefun: Optional[Callable] = None, **kwds: Any) -> None:
        """Write ``target`` to ``outdir/filename`` atomically and durably, then run the
        post-save hooks (the snapshot's retention).

        Raises:
            OutputDirError: the file could not be written; the previous snapshots are
                intact (no hook ran).
        """
        check_savefun(savefun, kwds)
        path = os.path.join(outdir, filename)
        try:
            write_file(target, path)
        except OSError as e:
            error = OutputDirError(f'could not write snapshot {path!r} ({e.strerror or e}); '
                                   'the previous snapshots are intact')
            error.errno = e.errno
            raise error from None
        self._post_save(path, target)

    def wait(self) -> None:
        """Wait until every snapshot handed over so far is written; raise the first
        error of a background write (trainerlib addition; Chainer has none)."""

    def finalize(self) -> None:
        """Wait for the pending writes and stop the writer's threads (at the end of
        training, as extensions are finalized); raise a background write's error."""
        self.wait()

    def _add_cleanup_hook(self, hook_fun: Callable[[str, Any], None]) -> None:
        """Add ``hook_fun(path, target)``, called after each file is written."""
        self._post_save_hooks.append(hook_fun)

    def _post_save(self, path: str, target: Any) -> None:
        for hook in self._post_save_hooks:
            hook(path, target)


class SimpleWriter(Writer):
    """Writes each snapshot in the training thread, before training goes on.

    Args:
        savefun: ``None``, ``torch.save`` or ``trainerlib.serialization.save_state``
            (see :func:`check_savefun`).
        kwds: not supported (Chainer passes them to ``savefun``).
    """

    def __init__(self, savefun: Optional[Callable] = None, **kwds: Any) -> None:
        super().__init__()
        check_savefun(savefun, kwds)
        self._savefun = savefun

    def __call__(self, filename: str, outdir: str, target: memoryview) -> None:
        self.save(filename, outdir, target, self._savefun)
