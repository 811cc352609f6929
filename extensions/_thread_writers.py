"""Writers that hand each snapshot to a new worker: ``StandardWriter``, ``ThreadWriter``.

``ThreadWriter`` is the default writer of ``extensions.snapshot`` (Chainer's default is
``SimpleWriter``: a deliberate difference, since trainerlib serializes the state in the
training thread and leaves only file I/O, which releases the GIL, to the thread).
``ProcessWriter`` exists so that Chainer code imports, and refuses with the fix.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from trainerlib.extensions._writer import Writer, check_savefun
from trainerlib.errors import ConfigError

PROCESS_FIX = ('a process gains nothing in trainerlib: the snapshot is serialized in the '
               'training thread before any writer runs, leaving only file I/O, which '
               'releases the GIL, and forking a process that holds CUDA and thread pools is '
               'unsafe')


class StandardWriter(Writer):
    """Base of writers that start one worker (``start()``, ``join()``) per snapshot.

    Each call first waits for the previous worker and raises its error, if any
    (the file it failed to write is absent; the older snapshots are intact), so at
    most one snapshot is in memory waiting to be written.

    Args:
        savefun: as :class:`~extensions.snapshot_writers.SimpleWriter`.
        kwds: not supported.
    """

    def __init__(self, savefun: Optional[Callable] = None, **kwds: Any) -> None:
        super().__init__()
        check_savefun(savefun, kwds)
        self._savefun = savefun
        self._kwds = kwds
        self._worker: Any = None
        self._error: Optional[BaseException] = None

    def __call__(self, filename: str, outdir: str, target: memoryview) -> None:
        self.wait()
        self._worker = self.create_worker(filename, outdir, target, **self._kwds)
        self._worker.start()

    def create_worker(self, filename: str, outdir: str, target: memoryview,
                      **kwds: Any) -> Any:
        """A not yet started worker that writes ``target`` (with :meth:`save_reporting`)."""
        raise NotImplementedError

    def save_reporting(self, filename: str, outdir: str, target: memoryview) -> None:
        """:meth:`save`, keeping its error for the training thread (:meth:`wait`)."""
        try:
            self.save(filename, outdir, target, self._savefun)
        except BaseException as e:
            self._error = e

    def wait(self) -> None:
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        error, self._error = self._error, None
        if error is not None:
            raise error


class ThreadWriter(StandardWriter):
    """Writes each snapshot from a new thread while training goes on (the default)."""

    def create_worker(self, filename: str, outdir: str, target: memoryview,
                      **kwds: Any) -> threading.Thread:
        return threading.Thread(target=self.save_reporting, args=(filename, outdir, target),
                                name='trainerlib-snapshot', daemon=True)


class ProcessWriter(StandardWriter):
    """Chainer's process writer: not available (raises :class:`ConfigError` naming the fix)."""

    def __init__(self, savefun: Optional[Callable] = None, **kwds: Any) -> None:
        raise ConfigError(f'ProcessWriter is not available: {PROCESS_FIX}; use '
                          'extensions.snapshot_writers.ThreadWriter() (the default: the same '
                          'asynchronous write, from a thread)')
