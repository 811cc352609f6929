"""Snapshot writers (Chainer's ``chainer.training.extensions.snapshot_writers``) and the
snapshot extension.

A writer decides when, and from which thread, a snapshot file is written; never what
it holds. ``Snapshot`` serializes the state in the training thread (plain data that
loads with ``torch.load(weights_only=True)``) and calls ``writer(filename, outdir,
target)``, ``target`` being the complete file as a read-only ``memoryview``. The
built-in writers write it with :meth:`Writer.save`: a temporary file, fsynced, renamed,
the directory fsynced; then retention (``n_retains``) runs.

=====================  =============================================================
``SimpleWriter``       in the training thread, before training goes on
``ThreadWriter``       from a new thread; the next snapshot waits for it (the default)
``ThreadQueueWriter``  from one consumer thread; snapshots queue up in memory
``ProcessWriter``,     not available (:class:`~trainerlib.errors.ConfigError` naming
``ProcessQueueWriter`` the thread writer to use instead)
=====================  =============================================================

A user-written writer is a :class:`Writer` subclass whose ``__call__`` calls
``self.save(filename, outdir, target)`` when and where it likes; a plain callable
works too (then ``n_retains`` is refused: nothing says when its file is written).
"""
from trainerlib.extensions._queue_writers import ProcessQueueWriter, QueueWriter, ThreadQueueWriter
from trainerlib.extensions._snapshot import Snapshot
from trainerlib.extensions._snapshot_functions import snapshot, snapshot_object
from trainerlib.extensions._thread_writers import ProcessWriter, StandardWriter, ThreadWriter
from trainerlib.extensions._writer import SimpleWriter, Writer, check_savefun

__all__ = ['ProcessQueueWriter', 'ProcessWriter', 'QueueWriter', 'SimpleWriter', 'Snapshot',
           'StandardWriter', 'ThreadQueueWriter', 'ThreadWriter', 'Writer', 'check_savefun',
           'snapshot', 'snapshot_object']
