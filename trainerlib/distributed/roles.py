"""Which process does what: the trainer's communicator and the extensions' rank roles.

Three roles: an extension that only writes files or prints (``rank0_only`` and not
``collective``: PrintReport, ProgressBar, TensorBoardReport …) runs on rank 0 only; one
that calls collectives at its own checks (``collective = True``: LogReport, PlotReport,
snapshot …) runs on every rank and does its I/O on rank 0; every other extension runs
on every rank without communicating (shifts, observe_value …).
"""
from __future__ import annotations

import os
from typing import Any

from trainerlib.distributed.communicator import SingleProcessCommunicator, launched_by_torchrun
from trainerlib.errors import TrainerlibError


def runs_on_every_rank(extension: Any) -> bool:
    """Whether ``extension`` runs on ranks other than 0."""
    return not getattr(extension, 'rank0_only', False) or getattr(extension, 'collective', False)


class SkippedOnThisRank:
    """Stands for a rank-0-only extension on another rank: calls and lifecycle hooks do
    nothing, but its trigger is still asked there (a trigger such as MaxValueTrigger
    reduces across ranks at its checks, so every rank must ask it), and its state is
    the extension's own."""

    def __init__(self, extension: Any) -> None:
        self.extension = extension

    def __call__(self, trainer: Any) -> None:
        pass

    def initialize(self, trainer: Any) -> None:
        pass

    def finalize(self, trainer: Any = None) -> None:
        pass

    def on_error(self, trainer: Any, exc: BaseException, tb: Any) -> None:
        pass

    def on_preemption(self, trainer: Any) -> None:
        pass

    def state_dict(self) -> dict:
        return self.extension.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.extension.load_state_dict(state)

    @property
    def name(self) -> Any:
        return self.extension.name


def for_this_rank(extension: Any, rank: int) -> Any:
    """``extension`` itself, or a :class:`SkippedOnThisRank` where it must not run."""
    return extension if rank == 0 or runs_on_every_rank(extension) \
        else SkippedOnThisRank(extension)


def checked_comm(comm: Any) -> SingleProcessCommunicator:
    """``comm``, or a single-process communicator when None — unless torchrun started
    several processes, which without a communicator would train independent copies
    writing one output directory."""
    if comm is not None:
        return comm
    world = int(os.environ.get('WORLD_SIZE', '1') or 1)
    if world > 1 and launched_by_torchrun():
        raise TrainerlibError(
            f"this process is rank {os.environ.get('RANK', '?')} of {world} started by torchrun, "
            'but the Trainer has no communicator, so the ranks would train independent copies '
            'writing one out/; pass comm=trainerlib.distributed.create_communicator() to '
            'Trainer(...), or launch one process')
    return SingleProcessCommunicator()
