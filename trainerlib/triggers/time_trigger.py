"""Fire every ``period`` seconds of training time."""
from __future__ import annotations

import torch

from trainerlib.distributed.context import comm_of

CHECK_EVERY = 50
"""Default iterations between two agreed checks of a data-parallel TimeTrigger."""


class TimeTrigger:
    """Fires when ``trainer.elapsed_time`` passes the next multiple of ``period``.

    Data-parallel (``trainer.comm`` of several ranks): the ranks' clocks differ, so the
    decision is rank 0's, agreed at the iterations that are multiples of
    ``check_every`` (one tiny all-reduce on the CPU control group there, nothing at
    the other calls, which return False): it then fires at the first such iteration
    where rank 0's clock has passed the next multiple of ``period``, on every rank at
    once, and the trigger's state stays the same on every rank. Ask it on every rank
    at the same iterations (as the Trainer does). With one process it is asked, and
    fires, exactly as before: ``check_every`` is not used.

    Args:
        period: interval in seconds (> 0).
        check_every: iterations between two agreed checks under data parallelism
            (default 50, as often as the trainer's stop agreement).
    """

    def __init__(self, period: float, *, check_every: int = CHECK_EVERY) -> None:
        if not period > 0:
            raise ValueError(f'TimeTrigger period must be positive seconds, got {period!r}')
        if int(check_every) != check_every or check_every < 1:
            raise ValueError(f'check_every must be a positive integer, got {check_every!r}')
        self.period = period
        self.check_every = int(check_every)
        self._next_time = period

    def __call__(self, trainer) -> bool:
        comm = getattr(trainer, 'comm', None)
        if comm is not None and comm.size > 1:
            return self._agreed(trainer, comm_of(trainer))
        if self._next_time <= trainer.elapsed_time:
            self._next_time += self.period
            return True
        return False

    def _agreed(self, trainer, comm) -> bool:
        if trainer.updater.iteration % self.check_every:
            return False
        mine = comm.rank == 0 and self._next_time <= trainer.elapsed_time
        flag = torch.tensor([1 if mine else 0], dtype=torch.int64)
        comm.control_allreduce(flag, op='max')   # rank 0's decision (the others add 0)
        if flag.item():
            self._next_time += self.period
            return True
        return False

    def state_dict(self) -> dict:
        return {'next_time': self._next_time}

    def load_state_dict(self, state: dict) -> None:
        self._next_time = state['next_time']
