"""Writers with one consumer thread and a queue: ``QueueWriter``, ``ThreadQueueWriter``.

Training never waits for a previous write: snapshots wait in the queue, in memory,
and are written in order (use ``ThreadWriter`` to hold at most one). A write's error
is raised in the training thread at the next snapshot, ``wait`` or ``finalize``.
``ProcessQueueWriter`` exists so that Chainer code imports, and refuses with the fix.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Optional

from trainerlib.extensions._thread_writers import PROCESS_FIX
from trainerlib.extensions._writer import SimpleWriter, Writer, check_savefun
from trainerlib.errors import ConfigError


class QueueWriter(Writer):
    """Base of queue writers (Chainer's ``QueueWriter``).

    Each call puts ``[task, filename, outdir, target]`` in the queue; the consumer
    (started at the first call, stopped by :meth:`finalize`) calls
    ``task(filename, outdir, target)``.

    Args:
        savefun: as :class:`SimpleWriter`; makes the default task.
        task: a writer called by the consumer (default: a :class:`SimpleWriter`).
    """

    def __init__(self, savefun: Optional[Callable] = None, task: Any = None) -> None:
        super().__init__()
        check_savefun(savefun)
        self._task = self.create_task(savefun) if task is None else task
        self._queue: Any = None
        self._consumer: Any = None
        self._error: Optional[BaseException] = None

    def __call__(self, filename: str, outdir: str, target: memoryview) -> None:
        self._raise_error()
        if self._consumer is None:
            self._queue = self.create_queue()
            self._consumer = self.create_consumer(self._queue)
            self._consumer.start()
        self._queue.put([self._task, filename, outdir, target])

    def create_task(self, savefun: Optional[Callable]) -> SimpleWriter:
        task = SimpleWriter(savefun)
        task._post_save_hooks = self._post_save_hooks   # its files are this writer's
        return task

    def create_queue(self) -> Any:
        raise NotImplementedError

    def create_consumer(self, q: Any) -> Any:
        raise NotImplementedError

    def consume(self, q: Any) -> None:
        """Run the tasks put in ``q`` until ``None``; keep the first error."""
        while True:
            task = q.get()
            try:
                if task is None:
                    return
                task[0](task[1], task[2], task[3])
            except BaseException as e:
                if self._error is None:
                    self._error = e
            finally:
                q.task_done()

    def _add_cleanup_hook(self, hook_fun: Callable[[str, Any], None]) -> None:
        super()._add_cleanup_hook(hook_fun)
        shares = getattr(self._task, '_post_save_hooks', None) is self._post_save_hooks
        if not shares and hasattr(self._task, '_add_cleanup_hook'):
            self._task._add_cleanup_hook(hook_fun)

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def wait(self) -> None:
        if self._queue is not None:
            self._queue.join()
        self._raise_error()

    def finalize(self) -> None:
        if self._consumer is not None:
            self._queue.put(None)
            self._queue.join()
            self._consumer.join()
            self._queue = self._consumer = None
        self._raise_error()


class ThreadQueueWriter(QueueWriter):
    """A :class:`QueueWriter` whose consumer is a thread."""

    def create_queue(self) -> 'queue.Queue':
        return queue.Queue()

    def create_consumer(self, q: Any) -> threading.Thread:
        return threading.Thread(target=self.consume, args=(q,),
                                name='trainerlib-snapshot-queue', daemon=True)


class ProcessQueueWriter(QueueWriter):
    """Chainer's process queue writer: not available (raises :class:`ConfigError`)."""

    def __init__(self, savefun: Optional[Callable] = None, task: Any = None) -> None:
        raise ConfigError(f'ProcessQueueWriter is not available: {PROCESS_FIX}; use '
                          'extensions.snapshot_writers.ThreadQueueWriter() (the same queue, '
                          'consumed by a thread)')
