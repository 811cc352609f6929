"""Which communicator a trainer (or an extension called without one) works with.

The Trainer exposes its communicator as ``trainer.comm``; a trainer without one (an
older Trainer, a test's stand-in object, an extension called with ``trainer=None``)
works with one shared :class:`SingleProcessCommunicator`. Extensions call
:func:`comm_of` only at their own checks (when they emit or decide), never on the hot
path, and :func:`distributed_comm` tells them whether there is anything to reduce.
"""
from __future__ import annotations

from typing import Any, Optional

from trainerlib.distributed.communicator import SingleProcessCommunicator

_SINGLE = SingleProcessCommunicator()


def comm_of(trainer: Any) -> SingleProcessCommunicator:
    """``trainer.comm``, or a shared single-process communicator when there is none."""
    comm = getattr(trainer, 'comm', None) if trainer is not None else None
    return _SINGLE if comm is None else comm


def distributed_comm(trainer_or_comm: Any) -> Optional[SingleProcessCommunicator]:
    """The communicator when it spans more than one process, else None (nothing to reduce).

    Accepts a trainer (reads :func:`comm_of`), a communicator, or None.
    """
    if trainer_or_comm is None:
        return None
    comm = trainer_or_comm if hasattr(trainer_or_comm, 'allreduce') else comm_of(trainer_or_comm)
    return comm if getattr(comm, 'size', 1) > 1 else None


def is_main_process(trainer: Any) -> bool:
    """Whether this process writes files and prints (rank 0, or a single process)."""
    return getattr(comm_of(trainer), 'rank', 0) == 0
