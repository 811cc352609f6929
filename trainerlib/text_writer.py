"""Write small text files (logs) atomically from a background thread.

Renaming a file over another costs hundreds of microseconds on some file systems;
a log rewritten every few iterations should not make training wait for it. Only
the newest content of each path is written: older pending versions are dropped.
"""
from __future__ import annotations

import threading
from typing import Dict, Optional

from trainerlib.serialization import atomic_open


class BackgroundTextWriter:
    """``write(path, text)`` returns at once; a daemon thread writes the file.

    An error of the thread (e.g. a full disk) is raised by the next ``write`` or
    by :meth:`flush`. Call :meth:`flush` to wait until every file is on disk.
    """

    def __init__(self) -> None:
        self._pending: Dict[str, str] = {}
        self._busy = False
        self._error: Optional[BaseException] = None
        self._changed = threading.Condition()
        self._thread: Optional[threading.Thread] = None

    def write(self, path: str, text: str) -> None:
        """Queue ``text`` to be written to ``path`` (replacing a queued version)."""
        with self._changed:
            self._raise_error()
            self._pending[path] = text
            self._changed.notify_all()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name='trainerlib-text-writer',
                                            daemon=True)
            self._thread.start()

    def flush(self) -> None:
        """Wait until every queued file is written; raise the thread's error if any."""
        with self._changed:
            while (self._pending or self._busy) and self._thread is not None \
                    and self._thread.is_alive():
                self._changed.wait(0.1)
            self._raise_error()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _work(self) -> None:
        while True:
            with self._changed:
                if not self._changed.wait_for(lambda: self._pending, timeout=1.0):
                    return  # idle: the next write starts a new thread
                path, text = self._pending.popitem()
                self._busy = True
            try:
                with atomic_open(path, 'w', durable=False) as f:
                    f.write(text)
            except BaseException as e:  # raised in the training thread later
                with self._changed:
                    self._error = e
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
